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

ADVICE = ("measure with fewer threads, more runs or rounds (profile keys runs, rounds), on a quieter "
          "device, or with the runtime's thread spinning off (runtime_options: {spinning: false})")


@dataclass(frozen=True)
class Calibration:
    """The line from summed layers to whole-network latency (see the module docstring).

    - overhead_ms: the per-call cost every isolated measurement contains (feeding the input,
      fetching the output, the runtime's dispatch), measured on a one-ReLU model; a whole
      network pays it once, not once per layer, so it is subtracted from each layer.
    - scale, offset_ms: fitted on whole calibration subnets; they absorb what isolated layers do
      not show (cache reuse between layers, memory planning, the fixed cost of one network call).
    With no calibration subnets scale = 1 and offset_ms = 0; OFA's tables carry no calibration.
    """

    overhead_ms: float = 0.0
    scale: float = 1.0
    offset_ms: float = 0.0

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "Calibration":
        c = header.get("calibration") or {}
        return cls(float(c.get("overhead_ms", 0.0)), float(c.get("scale", 1.0)), float(c.get("offset_ms", 0.0)))

    def apply(self, raw_ms):
        return self.scale * raw_ms + self.offset_ms


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

    def warning(self, name: str) -> str:
        """One line for the terminal."""
        return (f"latency table {name} is unreliable: {'; '.join(self.reasons)}; {ADVICE}, then profile again "
                "(edgenas search refuses it without --force)")


def assess_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], calibration: Calibration,
                       repeat_ms: Sequence[float | None] | None = None) -> CalibrationCheck:
    """Check that the calibration subnets' measurements support the fitted line.

    `measured_ms[i]` is subnet i's latency as the table keeps it; `repeat_ms[i]` a second,
    independent measurement of it (None where there is none)."""
    from edgenas.search.predictor import spearman

    raw, meas = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
    n = int(raw.size)
    check = CalibrationCheck(n, None, None, None, None)
    if n < MIN_CHECKED:
        return check  # too few to judge; the header says on how many it was checked
    pred = calibration.apply(raw)
    check.within = float(np.mean(np.abs(pred / meas - 1.0) <= MARGIN))
    check.spearman = float(spearman(raw, meas)) if np.ptp(raw) > 0 and np.ptp(meas) > 0 else 0.0
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
