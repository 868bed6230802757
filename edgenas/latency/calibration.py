"""From summed layers to whole-network latency: the calibration line, and whether to trust it.

    predict(arch) = scale * sum over the arch's layers of max(entry - overhead_ms, 0) + offset_ms

The line is fitted to a few whole subnets measured on the device (`fit_calibration`). It is
constrained so that it cannot lie about the order of subnets or their sign: the scale is
positive (a subnet with more or slower layers is predicted slower), and the offset may not take
the space's smallest subnet below half of its summed layers, nor below the per-call overhead
(so no subnet is predicted at zero or below, whatever the fitted points were).

A line is only as good as the measurements it was fitted to. `assess_calibration` checks them
before a table is trusted, and says in words what is wrong when they do not support a fit:

- the calibration subnets, measured twice, must repeat: when a quarter of them or more move by
  more than the table's error margin between the two passes, the device is too noisy for a table
  (threads spinning against other processes, thermal throttling, a shared host);
- their measured order must follow the table's (Spearman rank correlation >= 0.9 between the
  summed layers and the measurements): when it does not, the layers measured alone do not
  describe whole networks on this device;
- the fitted line must hold them: at least 80% within the error margin of their prediction.

A table whose calibration fails a check is marked `reliable: false` in its header with the
reasons, `edgenas profile` warns in one line what to do, and `edgenas search` refuses it unless
`--force`.

A correction per op type (`fit_per_type`, `choose_calibration`)
---------------------------------------------------------------
One line assumes every layer is off from its isolated measurement by the same factor. Where
layers of different kinds change differently inside a whole network (with several threads, a
depthwise 7x7 parallelises otherwise than a 3x3, a squeeze-excite's pooling and tiny FCs are a
sync point; in int8, some kernels fuse with their requantisation and others do not), one scale
per op type fits better, as nn-Meter's kernel-level predictors do:

    predict(arch) = sum over op types t of  s_t * sum over the arch's layers of type t of
                    max(entry - overhead_ms, 0)  +  offset_ms

The op types (`op_type`) are what differs in how a runtime fuses or parallelises a layer:
`stem` (a full 3x3 conv on the image), `first_block` (the depthwise-separable block without an
expand conv), `mbconv-k{3,5,7}-{relu,hswish}[-se]` (kernel size: another depthwise kernel path;
activation: ReLU fuses into the conv, hard-swish mostly does not; SE: a global pool, two tiny
FCs and a multiply), `final_expand` (a 1x1 conv) and `head` (the global pool and the 1x1 layers
after it). Expand ratio and stride are not types: they change a layer's size, which its entry
already measures, and every subnet has one strided block per unit, so they would add scales
that the calibration subnets cannot tell apart.

The fit keeps the line's guarantees: every s_t lies within [MIN_SLOPE_SHARE, 1 / MIN_SLOPE_SHARE]
x the line's scale (positive, so a prediction grows with each layer), and the smallest subnet of
each resolution is predicted at no less than SMALLEST_FLOOR of its scaled layers, nor than the
overhead (the profiler then raises the offset if the lowest subnet under the fitted scales, found
exactly over the space, would lie below it). It minimises the squared relative error plus a
shrinkage of each s_t toward the line's scale (SHRINK pseudo-subnets' worth, in units of the
type's share of the predictions), so a type the calibration subnets hardly vary keeps the
line's scale and a few subnets cannot overfit.

The per-type model is used only when it is clearly better where it matters, on subnets it was
not fitted to: with at least PER_TYPE_MIN_NETS calibration subnets, its leave-one-out error
(each subnet predicted by both models refitted without it; mean |predicted / measured - 1|) must
be at most PER_TYPE_GAIN of the line's and PER_TYPE_MIN_DROP lower. Otherwise the line is used.
The header's `calibration.per_type` records the decision, both leave-one-out errors and the
scales; `assess_calibration` judges the model that is used. Tables without `per_type` (older
ones, OFA's) predict with the line exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MARGIN = 0.10  # the table's promise: whole-network predictions within +-10%
MIN_SPEARMAN = 0.9  # measured order of the calibration subnets against the summed layers
MIN_WITHIN = 0.8  # share of calibration subnets the fitted line holds within MARGIN
MAX_UNSTABLE = 0.25  # share of calibration subnets allowed to move by more than MARGIN between passes
MIN_CHECKED = 5  # fewer calibration subnets than this cannot tell noise from signal
SMALLEST_FLOOR = 0.5  # the smallest subnet is predicted at >= this share of its summed layers (x scale)
MIN_SLOPE_SHARE = 0.1  # the scale is at least this share of the slope through the origin: no flat lines
PER_TYPE_MIN_NETS = 12  # fewer calibration subnets than this always get the line
PER_TYPE_GAIN = 0.8  # per-type is used when its leave-one-out error is at most this share of the line's
PER_TYPE_MIN_DROP = 0.005  # ... and at least this much lower (half a percentage point)
SHRINK = 2.0  # weight of the pull of each per-type scale toward the line's, in pseudo-subnets

ADVICE = ("measure with fewer threads, more runs or rounds (profile keys runs, rounds), on a quieter "
          "device, or with the runtime's thread spinning off (runtime_options: {spinning: false})")


def op_type(op) -> str:
    """The op type of a layer (an `edgenas.space.ops.OpSpec`) for the per-type correction
    (see the module docstring)."""
    if op.kind == "mbconv":
        if not op.expand_conv:
            return "first_block"
        return f"mbconv-k{op.kernel}-{op.act}" + ("-se" if op.se_ch else "")
    if op.kind in ("pool", "feature_mix", "classifier"):
        return "head"
    return op.kind  # stem, final_expand


@dataclass(frozen=True)
class Calibration:
    """The line from summed layers to whole-network latency (see the module docstring).

    - overhead_ms: the per-call cost every isolated measurement contains (feeding the input,
      fetching the output, the runtime's dispatch), measured on a one-ReLU model; a whole
      network pays it once, not once per layer, so it is subtracted from each layer.
    - scale, offset_ms: fitted on whole calibration subnets; they absorb what isolated layers do
      not show (cache reuse between layers, memory planning, the fixed cost of one network call).
    - type_scales: when set, the per-type correction is used: each layer is scaled by its op
      type's scale (`scale` for a type not in it) and offset_ms is the per-type fit's offset.
    With no calibration subnets scale = 1 and offset_ms = 0; OFA's tables carry no calibration.
    """

    overhead_ms: float = 0.0
    scale: float = 1.0
    offset_ms: float = 0.0
    type_scales: Mapping[str, float] | None = None

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "Calibration":
        c = header.get("calibration") or {}
        line = cls(float(c.get("overhead_ms", 0.0)), float(c.get("scale", 1.0)), float(c.get("offset_ms", 0.0)))
        per_type = c.get("per_type") or {}
        if per_type.get("used") and per_type.get("scales"):
            return line.with_types({str(t): float(v) for t, v in per_type["scales"].items()},
                                   float(per_type.get("offset_ms", line.offset_ms)))
        return line

    def with_types(self, type_scales: Mapping[str, float], offset_ms: float) -> "Calibration":
        return Calibration(self.overhead_ms, self.scale, float(offset_ms), dict(type_scales))

    @property
    def per_type(self) -> bool:
        return self.type_scales is not None

    def layer_scale(self, kind: str) -> float:
        """The scale of a layer of op type `kind`."""
        return self.scale if self.type_scales is None else float(self.type_scales.get(kind, self.scale))

    def apply(self, raw_ms):
        if self.type_scales is not None:
            raise ValueError("a per-type calibration scales each layer: use predict_sums(per-type sums)")
        return self.scale * raw_ms + self.offset_ms

    def predict_sums(self, sums: Mapping[str, float]) -> float:
        """The prediction from {op type: summed layers of that type}."""
        if self.type_scales is None:
            return float(self.apply(sum(sums.values())))
        return float(sum(self.layer_scale(t) * v for t, v in sums.items()) + self.offset_ms)


def fit_calibration(raw_ms: Iterable[float], measured_ms: Iterable[float], overhead_ms: float,
                    smallest_raw_ms: float | None = None, huber_k: float = 1.345,
                    iterations: int = 30) -> Calibration:
    """Fit measured ~ scale * raw + offset, minimising the squared *relative* error (the goal is
    a small percentage error on small and large subnets alike). One subnet fits a scale only.

    The fit is robust (Huber weights on the relative residuals, by iteratively reweighted least
    squares): a subnet measured during a slow spell of the device pulls the line less than a
    plain least-squares fit lets it. It is constrained: the scale is at least MIN_SLOPE_SHARE of
    the slope of the best line through the origin (so it is positive and the line is not flat:
    an offset cannot stand for most of the latency), and the space's smallest subnet (summed
    layers `smallest_raw_ms`; the smallest fitted point when not given) is predicted at no less
    than SMALLEST_FLOOR of its summed layers x scale, nor than `overhead_ms` (a whole network
    pays one runtime call). Where the unconstrained line breaks a rule, the best line through
    that floor at the smallest subnet is taken.
    """
    raw, meas = np.asarray(list(raw_ms), float), np.asarray(list(measured_ms), float)
    overhead_ms = max(float(overhead_ms), 0.0)
    if raw.size == 0:
        return Calibration(overhead_ms)
    if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(meas)) and np.all(meas > 0) and np.all(raw >= 0)):
        raise ValueError("calibration needs finite, positive measurements and non-negative layer sums")
    w = 1.0 / meas
    smallest = float(raw.min() if smallest_raw_ms is None else min(smallest_raw_ms, raw.min()))

    def floor(scale: float) -> float:
        return max(SMALLEST_FLOOR * scale * smallest, overhead_ms)

    def feasible(scale: float, offset: float, sw2) -> bool:
        return scale >= MIN_SLOPE_SHARE * _proportional(raw, meas, sw2) and scale * smallest + offset >= floor(scale)

    def on_floor(sw2) -> tuple[float, float]:
        """The best line through the floor at the smallest subnet."""
        shift = (1.0 - SMALLEST_FLOOR) * smallest
        scale = _proportional(raw - shift, meas, sw2)
        if SMALLEST_FLOOR * scale * smallest >= overhead_ms:
            return scale, -scale * shift
        scale = _proportional(raw - smallest, meas - overhead_ms, sw2)  # through (smallest, overhead)
        if not scale >= MIN_SLOPE_SHARE * _proportional(raw, meas, sw2):
            scale = MIN_SLOPE_SHARE * _proportional(raw, meas, sw2)
        return scale, overhead_ms - scale * smallest

    if raw.size == 1 or np.ptp(raw) <= 1e-9 * max(raw.max(), 1e-12):
        scale = _proportional(raw, meas, w * w)
        scale, offset = (scale, 0.0) if feasible(scale, 0.0, w * w) else on_floor(w * w)
        return Calibration(overhead_ms, float(scale), float(offset))
    a = np.stack([raw, np.ones_like(raw)], axis=1)
    robust = np.ones_like(raw)
    scale = offset = 0.0
    for _ in range(iterations if raw.size > 3 else 1):
        sw2 = w * w * robust
        (scale, offset), *_ = np.linalg.lstsq(a * np.sqrt(sw2)[:, None], meas * np.sqrt(sw2), rcond=None)
        if not feasible(scale, offset, sw2):
            scale, offset = on_floor(sw2)
        rel = (scale * raw + offset) / meas - 1.0
        spread = 1.4826 * np.median(np.abs(rel - np.median(rel)))  # the residuals' robust standard deviation
        if spread <= 1e-12:
            break
        u = np.abs(rel) / (huber_k * spread)
        robust = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
    return Calibration(overhead_ms, float(scale), float(offset))


def _proportional(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """The weighted least-squares slope of y = s * x through the origin (positive for x, y > 0)."""
    den = float(np.sum(weights * x * x))
    return float(np.sum(weights * x * y) / den) if den > 0 else 1.0


@dataclass
class CalibrationCheck:
    """What the calibration subnets say about the table (see the module docstring)."""

    n: int
    spearman: float | None  # summed layers against measured latency
    within: float | None  # share of calibration subnets within MARGIN of the fitted line
    unstable: float | None  # share that moved by more than MARGIN between the two passes
    repeat_spread: float | None  # median relative difference between the two passes
    reasons: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return not self.reasons

    def to_header(self) -> dict[str, Any]:
        def r(x):
            return None if x is None else round(float(x), 4)

        out: dict[str, Any] = {"reliable": self.reliable, "checked_on": self.n, "spearman": r(self.spearman),
                               "within_10pct": r(self.within), "unstable_share": r(self.unstable),
                               "repeat_spread": r(self.repeat_spread)}
        if self.reasons:
            out["reasons"] = list(self.reasons)
            out["advice"] = ADVICE
        return out

    def warning(self, name: str, load=None) -> str:
        """One line for the terminal; `load` (edgenas.device.CpuLoad) says what else the device's
        CPUs did meanwhile, where that was notable."""
        busy = f"; while it was measured, {load.describe()}" if load is not None and load.notable else ""
        return (f"latency table {name} is unreliable: {'; '.join(self.reasons)}{busy}; {ADVICE}, then profile again "
                "(edgenas search refuses it without --force)")


def assess_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], calibration: Calibration,
                       repeat_ms: Sequence[float | None] | None = None,
                       predicted_ms: Sequence[float] | None = None) -> CalibrationCheck:
    """Check that the calibration subnets' measurements support the fitted model.

    `measured_ms[i]` is subnet i's latency as the table keeps it; `repeat_ms[i]` a second,
    independent measurement of it (None where there is none); `predicted_ms[i]` the table's
    prediction of it (needed for a per-type calibration; the line's `apply(raw_ms)` otherwise).
    The order and the share within the margin are judged on the predictions of the model used."""
    from edgenas.search.predictor import spearman

    raw, meas = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
    n = int(raw.size)
    check = CalibrationCheck(n, None, None, None, None)
    if n < MIN_CHECKED:
        return check  # too few to judge; the header says on how many it was checked
    pred = calibration.apply(raw) if predicted_ms is None else np.asarray(predicted_ms, float)
    check.within = float(np.mean(np.abs(pred / meas - 1.0) <= MARGIN))
    order = raw if predicted_ms is None else pred  # the same order for the line (scale > 0)
    check.spearman = float(spearman(order, meas)) if np.ptp(order) > 0 and np.ptp(meas) > 0 else 0.0
    pairs = [(m, r) for m, r in zip(meas, [] if repeat_ms is None else repeat_ms) if r is not None]
    if len(pairs) >= MIN_CHECKED:
        a, b = np.asarray(pairs, float).T
        moved = np.abs(a - b) / np.minimum(a, b)
        check.unstable = float(np.mean(moved > MARGIN))
        check.repeat_spread = float(np.median(moved))
        if check.unstable >= MAX_UNSTABLE:
            check.reasons.append(f"{check.unstable:.0%} of its {len(pairs)} calibration subnets moved by more than "
                                 f"{MARGIN:.0%} when measured again (median {check.repeat_spread:.1%})")
    if check.spearman < MIN_SPEARMAN:
        check.reasons.append(f"the calibration subnets' measured order does not follow the table "
                             f"(Spearman {check.spearman:.2f} < {MIN_SPEARMAN})")
    if check.within < MIN_WITHIN:
        check.reasons.append(f"only {check.within:.0%} of the calibration subnets lie within {MARGIN:.0%} of the "
                             f"fitted line (at least {MIN_WITHIN:.0%} needed)")
    return check


# ---- the per-type correction (see the module docstring) ------------------------------------

def _matrix(sums: Sequence[Mapping[str, float]], types: Sequence[str]) -> np.ndarray:
    return np.array([[float(s.get(t, 0.0)) for t in types] for s in sums], float).reshape(len(sums), len(types))


def fit_per_type(sums: np.ndarray, measured_ms: Sequence[float], line: Calibration,
                 floor_sums: np.ndarray | None = None, shrink: float = SHRINK) -> tuple[np.ndarray, float]:
    """(per-type scales, offset_ms) for `sums` [subnet, type] (summed layers of each type, less
    the overhead) against `measured_ms`, shrunk toward `line`'s scale.

    Minimises sum_i (pred_i / measured_i - 1)^2 + shrink * sum_t share_t^2 (s_t / s - 1)^2, where
    share_t is the root-mean-square share of type t in the line's predictions relative to the
    measurements (so `shrink` counts pseudo-subnets), subject to the line's bounds on the scales
    and the floor at each row of `floor_sums` (the smallest subnets). A bounded linear least
    squares (scipy's `lsq_linear`); where its offset would break the floor, the best fit with the
    offset on the floor of one smallest subnet is taken (the offset then follows from the scales,
    so that again is a bounded least squares), the best over the smallest subnets and the two
    floors. A type no subnet has keeps the line's scale."""
    from scipy.optimize import lsq_linear

    x = np.asarray(sums, float)
    y = np.asarray(measured_ms, float)
    n, t_all = x.shape
    s0, ov = float(line.scale), float(line.overhead_ms)
    scales = np.full(t_all, s0)
    seen = np.flatnonzero(np.any(x > 0, axis=0))
    if n == 0 or seen.size == 0:
        return scales, float(line.offset_ms)
    floor = np.zeros((0, t_all)) if floor_sums is None else np.asarray(floor_sums, float).reshape(-1, t_all)
    x, fl = x[:, seen], floor[:, seen]
    t = seen.size
    rel = x / y[:, None]
    share = np.sqrt(np.mean((s0 * rel) ** 2, axis=0))
    m_s = np.vstack([rel, np.diag(np.sqrt(shrink) * share / s0)])  # data rows, then the pull toward s0
    m_b = np.concatenate([1.0 / y, np.zeros(t)])  # the offset's column
    rhs = np.concatenate([np.ones(n), np.sqrt(shrink) * share])
    lo, hi = np.full(t, MIN_SLOPE_SHARE * s0), np.full(t, s0 / MIN_SLOPE_SHARE)
    rest = floor @ scales - fl @ scales[seen]  # the smallest subnets' unseen types, at the line's scale

    def lowest_offset(sc: np.ndarray) -> float:
        """The least offset that holds every smallest subnet on or above its floor."""
        scaled = fl @ sc + rest
        return float(np.max(np.maximum(ov - scaled, -(1 - SMALLEST_FLOOR) * scaled))) if len(fl) else -np.inf

    def cost(sc: np.ndarray, b: float) -> float:
        r = m_s @ sc + m_b * b - rhs
        return float(r @ r)

    free = lsq_linear(np.hstack([m_s, m_b[:, None]]), rhs, bounds=(np.append(lo, -np.inf), np.append(hi, np.inf)),
                      method="bvls")
    best_s, best_b = free.x[:-1], float(free.x[-1])
    if best_b < lowest_offset(best_s):
        candidates = []
        for row, c_row in zip(fl, rest):  # offset = c - g * scaled: on the overhead floor (g 1) or the share floor
            for g, c in ((1.0, ov), (1.0 - SMALLEST_FLOOR, 0.0)):
                c = c - g * c_row
                fit = lsq_linear(m_s - g * np.outer(m_b, row), rhs - m_b * c, bounds=(lo, hi), method="bvls")
                b = max(c - g * float(row @ fit.x), lowest_offset(fit.x))
                candidates.append((cost(fit.x, b), fit.x, b))
        _, best_s, best_b = min(candidates, key=lambda cand: cand[0])
    scales[seen] = np.clip(best_s, lo, hi)
    offset = max(float(best_b), lowest_offset(scales[seen]))
    return scales, offset


@dataclass
class PerTypeChoice:
    """Per-type scales or the line, decided by leave-one-out error (see the module docstring)."""

    used: bool
    n: int
    decision: str
    scales: dict[str, float] = field(default_factory=dict)
    offset_ms: float = 0.0
    cv_line: float | None = None  # leave-one-out mean |predicted / measured - 1| of the line
    cv_per_type: float | None = None  # ... of the per-type correction
    shrink: float = SHRINK

    def calibration(self, line: Calibration) -> Calibration:
        """The calibration to predict with: the per-type one when used, else `line`."""
        return line.with_types(self.scales, self.offset_ms) if self.used else line

    def to_header(self) -> dict[str, Any]:
        def r(x):
            return None if x is None else round(float(x), 6)

        out: dict[str, Any] = {"used": self.used, "decision": self.decision, "fitted_on": self.n,
                               "cv": "leave-one-out mean |predicted / measured - 1| over the calibration subnets",
                               "cv_line": r(self.cv_line), "cv_per_type": r(self.cv_per_type)}
        if self.scales:
            # Not rounded: the header's model is exactly the one checked (and held above the floor).
            out.update(shrink=self.shrink, offset_ms=float(self.offset_ms),
                       scales={t: float(v) for t, v in sorted(self.scales.items())})
        return out


def choose_calibration(type_sums: Sequence[Mapping[str, float]], measured_ms: Sequence[float], line: Calibration,
                       floor_sums: Sequence[Mapping[str, float]] = (), smallest_raw_ms: float | None = None,
                       shrink: float = SHRINK, min_nets: int = PER_TYPE_MIN_NETS) -> PerTypeChoice:
    """Fit the per-type correction to the calibration subnets and decide whether to use it.

    `type_sums[i]`: {op type: summed layers (less the overhead)} of calibration subnet i;
    `line`: the line fitted to them (`fit_calibration` with `smallest_raw_ms`); `floor_sums`:
    the same sums for the space's smallest subnets, which must stay above the floor. Both models
    are refitted without each subnet in turn to predict it (leave-one-out)."""
    meas = np.asarray(measured_ms, float)
    n = int(meas.size)
    if n < min_nets:
        return PerTypeChoice(False, n, f"the line: {n} calibration subnets, the per-type correction needs at least "
                                       f"{min_nets}")
    types = sorted({t for s in list(type_sums) + list(floor_sums) for t in s})
    x, floor = _matrix(type_sums, types), _matrix(floor_sums, types)
    raw = x.sum(1)
    scales, offset = fit_per_type(x, meas, line, floor, shrink)
    err_line, err_types = np.empty(n), np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        li = fit_calibration(raw[keep], meas[keep], line.overhead_ms, smallest_raw_ms=smallest_raw_ms)
        si, bi = fit_per_type(x[keep], meas[keep], li, floor, shrink)
        err_line[i] = abs(li.apply(raw[i]) / meas[i] - 1.0)
        err_types[i] = abs((x[i] @ si + bi) / meas[i] - 1.0)
    cv_line, cv_types = float(err_line.mean()), float(err_types.mean())
    used = cv_types <= PER_TYPE_GAIN * cv_line and cv_line - cv_types >= PER_TYPE_MIN_DROP
    verdict = (f"leave-one-out error {cv_types:.1%} per type against {cv_line:.1%} for the line on {n} subnets")
    decision = (f"per type: {verdict}" if used else
                f"the line: {verdict} (per type needs at most {PER_TYPE_GAIN:.0%} of the line's and "
                f"{PER_TYPE_MIN_DROP:.1%} less)")
    return PerTypeChoice(used, n, decision, dict(zip(types, map(float, scales))), offset, cv_line, cv_types, shrink)
