"""Few-shot latency tables: a new device from K whole subnets measured end to end.

    report = profile_few_shot("pi4.yaml", None, 20, reference="latency_tables/local-cpu-...-mbv3-w1.0.yaml")
    report.table.predict(arch)      # a normal LatencyTable: search, export --measure, --validate take it

A full table measures every distinct layer of the space on the device (450 layers for
mbv3-w1.0); on a phone or a Pi, or with TFLite's per-layer conversion, that takes long. A
few-shot table measures only K whole subnets on the new device and transfers what another
device's table knows about the relative cost of the layers (as HELP and LitePred do):

    target(arch) ~ sum over op types t of s_t * R_t(arch) + offset_ms

R_t(arch) is the arch's summed layers of op type t in the *reference* table (each less the
reference's per-call overhead; the op types of `edgenas.latency.calibration.op_type`), s_t one
scale per op type and offset_ms the target's fixed cost of one network call. That is exactly a
per-type calibration of a table whose entries are the reference's, so the few-shot table is
written that way: its `ops` are the reference table's entries for the space at the resolutions
(*transferred*, not measured here; its `header.few_shot.ops` says so), `calibration.overhead_ms`
is the reference's overhead (what each transferred entry holds), and `calibration.per_type`
the fitted scales. Predictions go through `LatencyTable.predict` and `LatencyPredictor` like
those of any table.

The fit (`fit_transfer`) is the calibration's own: the robust line (one common scale and an
offset, `fit_calibration`) and the per-type scales shrunk toward it (`fit_per_type`: a ridge on
s_t / s - 1, in units of each type's share of the latency, within the line's bounds and above
the floor at the smallest subnets, floored at the target's measured call overhead). With K = 5
and about 15 op types the shrinkage decides: it is chosen by leave-one-out over the K subnets
from SHRINKS (with at least PER_TYPE_MIN_K subnets; fewer fit the line: in an offline check on
mbv3-w1.0 subnets measured here, 5 subnets' leave-one-out choice took per-type scales that
predicted held-out subnets worse than the line) by the one-standard-error rule: the line alone first, and a less shrunk model only
where its leave-one-out error is lower by more than one standard error of the best's (and by
CHOICE_MARGIN at least).

With a reference the baseline below is fitted too, and used instead where its leave-one-out
error is lower by more than one standard error (the reference then does not describe the device; the header's
`few_shot.fit.compared` has both errors and `few_shot.ops` says which entries the table holds).
Without a reference (`reference=None`) the baseline is a linear model of the network's MACs,
parameters and activation memory traffic plus the call overhead (`fit_baseline`). It is a table
too: each layer's entry is a * MACs + b * params + c * activation bytes of that layer (the
entries are *modelled*, `header.few_shot.ops` says so), overhead 0, scale 1 and the fitted
offset, so the summed entries plus the offset are the linear model exactly, through the same
predictor path.

The K subnets (`design_subnets`) are a greedy sequential D-optimal design over a seeded pool of
POOL distinct random subnets (all of them in a small space), spread evenly over the resolutions:
each next subnet is the one the current design predicts worst (largest x' M^-1 x, M = EPS I +
sum of x x' over the design) among those at the least-covered resolution, where x are the
regression's rows of relative error: the subnet's per-type sums (baseline: MACs, params,
activation bytes) and a constant, divided by its predicted latency, with its log predicted
latency and that squared (a quadratic in size, whose D-optimal design takes small, middle and
large subnets), columns scaled over the pool. So subnets of different make-up (kernels, depths, expand ratios, SE and hard-swish units,
small and large) are picked, not K alike ones. The design is deterministic per seed and nested:
the first K of a 2K design are the K design, and a rerun with a larger K continues the design
from the subnets already measured (`header.few_shot.subnets`, in design order), so it measures
only the new ones. A full `edgenas profile` of a few-shot table file measures the layers and
keeps the measured subnets as calibration subnets (`edgenas.latency.profiler`).

The fit report (`header.few_shot.fit`) holds the leave-one-out predictions' RMSE, Spearman and
share within +-10% (each subnet predicted by the model fitted without it), the in-sample ones
beside them, and a predicted-against-measured plot; the calibration check
(`assess_calibration`, which marks a table unreliable) judges the leave-one-out predictions.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgenas.device import DeviceProfile, load_profile
from edgenas.device.runner import MeasureResult
from edgenas.device.transport import Transport
from edgenas.errors import DeviceError, EdgeNASError
from edgenas.latency.calibration import (Calibration, assess_calibration, fit_calibration,
                                         fit_per_type, op_type)
from edgenas.latency.formats import model_format
from edgenas.latency.ops import enumerate_ops, resolutions_of
from edgenas.latency.profiler import (OVERHEAD_MODEL, ProfileReport, _check_device, _opened, _result_entry, _Saver,
                                      check_same_device, default_table_path, header_load, held_offset, measure_networks,
                                      measure_overhead, new_table, recording_load)
from edgenas.latency.table import LatencyTable, entry, now
from edgenas.space import Arch, SearchSpace, load_space, sample
from edgenas.space.arch import smallest as smallest_arch
from edgenas.space.ops import OpSpec, arch_ops

log = logging.getLogger(__name__)

MIN_K = 3  # a line (scale and offset) and one subnet to check it on
POOL = 2000  # distinct candidate subnets the design picks from
EPS = 1e-2  # the design's prior information (columns are scaled to unit RMS over the pool)
SHRINKS = (math.inf, 64.0, 16.0, 4.0, 1.0, 0.25)  # per-type shrinkage tried, simplest first (inf: the line)
LAMBDAS = (1e4, 100.0, 10.0, 1.0, 0.1, 0.01)  # baseline ridge toward MACs + offset, simplest first
PER_TYPE_MIN_K = 8  # fewer subnets fit the line: their leave-one-out choice among shrinkages is noise
CHOICE_MARGIN = 0.002  # a less regularised model must lower the leave-one-out error by at least this much


# ---- the candidate pool and the design ------------------------------------------------------

def distinct_subnets(space: SearchSpace, resolutions: Sequence[int]) -> int:
    """How many distinct subnets `space` has at `resolutions`."""
    per_unit = sum((len(space.kernel_sizes) * len(space.expand_ratios)) ** d for d in space.depths)
    return len(resolutions) * per_unit ** len(space.units)


def candidate_pool(space: SearchSpace, resolutions: Sequence[int], seed: int, size: int = POOL) -> list[Arch]:
    """Up to `size` distinct subnets, the same number at each resolution: all of them where the
    space is that small, else seeded random ones (the same list for the same seed)."""
    per_res = max(size // len(resolutions), 1)
    blocks = list(itertools.product(space.kernel_sizes, space.expand_ratios))
    pool: list[Arch] = []
    for i, r in enumerate(resolutions):
        if distinct_subnets(space, [r]) <= per_res:
            units = [[c for d in space.depths for c in itertools.product(blocks, repeat=d)] for _ in space.units]
            pool += [Arch(r, tuple(u)) for u in itertools.product(*units)]
            continue
        sub = space.replace(resolutions=(r,))
        rng = np.random.default_rng([seed, 13, i])
        seen: dict[Arch, None] = {}
        for _ in range(50):  # bounded: a space this large has far more than per_res subnets
            for a in sample(sub, rng, per_res):
                seen.setdefault(a)
            if len(seen) >= per_res:
                break
        pool += list(seen)[:per_res]
    return pool


def check_k(space: SearchSpace, resolutions: Sequence[int], k: int) -> None:
    """Refuse a K the design cannot serve, in one line."""
    if k < MIN_K:
        raise EdgeNASError(f"--few-shot {k}: at least {MIN_K} subnets are needed (a scale, an offset and one to check)")
    n = distinct_subnets(space, resolutions)
    if k > n:
        raise EdgeNASError(f"--few-shot {k} is more than the {n} distinct subnets of {space.name} at "
                           f"{','.join(map(str, resolutions))} px; measure at most {n}, or build the full table")


def activation_bytes(op: OpSpec) -> int:
    """fp32 bytes of activations a layer reads and writes: each step's input and output (expand,
    depthwise, squeeze-excite, project; the shortcut reads the block input once more)."""
    i, o = op.in_size, op.out_size
    if op.kind in ("feature_mix", "classifier"):
        return 4 * (op.in_ch + op.out_ch)
    if op.kind != "mbconv":
        return 4 * (op.in_ch * i * i + op.out_ch * o * o)
    m, x, y = op.mid_ch, op.in_ch * i * i, op.out_ch * o * o
    total = (x + m * i * i) if op.expand_conv else 0
    total += m * i * i + m * o * o  # depthwise
    total += 2 * m * o * o if op.se_ch else 0  # pool over it, scale it
    total += m * o * o + y  # project
    total += x + y if op.residual else 0
    return 4 * total


BASELINE_FEATURES = ("macs", "params", "activation_bytes")


def layer_features(op: OpSpec) -> tuple[int, int, int]:
    return op.macs, op.params, activation_bytes(op)


def baseline_features(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """[subnet, (MACs, params, activation bytes)] summed over each subnet's layers."""
    return np.array([np.sum([layer_features(op) for op in arch_ops(space, a)], axis=0) for a in archs], float)


def type_sums(table: LatencyTable, space: SearchSpace, archs: Sequence[Arch], types: Sequence[str]) -> np.ndarray:
    """[subnet, type] summed layers (less the overhead) of `table`, fast for many subnets."""
    ov = table.calibration.overhead_ms
    cache: dict[OpSpec, tuple[int, float]] = {}
    col = {t: j for j, t in enumerate(types)}
    out = np.zeros((len(archs), len(types)))
    for i, a in enumerate(archs):
        for op in arch_ops(space, a):
            hit = cache.get(op)
            if hit is None:
                hit = cache[op] = (col[op_type(op)], max(table.value(op.key) - ov, 0.0))
            out[i, hit[0]] += hit[1]
    return out


def space_types(space: SearchSpace, resolutions: Sequence[int]) -> list[str]:
    return sorted({op_type(op) for op in enumerate_ops(space, resolutions)})


def design_rows(features: np.ndarray, proxy_ms: np.ndarray) -> np.ndarray:
    """The regression's relative-error rows [features, 1] / predicted latency, and the centred
    log latency and its square (so the design also spans small and large subnets), each column
    scaled to unit RMS over the candidates (a column that is zero everywhere is dropped)."""
    proxy = np.maximum(proxy_ms, 1e-12)
    size = np.log(proxy) - np.log(proxy).mean()
    x = np.hstack([np.hstack([features, np.ones((len(features), 1))]) / proxy[:, None],
                   size[:, None], (size ** 2 - np.mean(size ** 2))[:, None]])
    rms = np.sqrt(np.mean(x * x, axis=0))
    keep = rms > 0
    return x[:, keep] / rms[keep]


def greedy_design(rows: np.ndarray, groups: Sequence[int], k: int, start: Sequence[int] = ()) -> list[int]:
    """Indices of `k` rows: `start`, then one at a time the row of largest x' M^-1 x among those
    of the group (resolution) with the fewest picks so far (ties: the first group, the first row)."""
    groups = np.asarray(groups)
    picked = list(dict.fromkeys(int(i) for i in start))
    free = np.ones(len(rows), bool)
    minv = np.eye(rows.shape[1]) / EPS

    def add(i: int) -> None:
        nonlocal minv
        v = minv @ rows[i]
        minv = minv - np.outer(v, v) / (1.0 + rows[i] @ v)  # Sherman-Morrison
        free[i] = False

    for i in picked:
        add(i)
    labels = list(dict.fromkeys(groups.tolist()))
    while len(picked) < k and free.any():
        counts = {g: sum(groups[i] == g for i in picked) for g in labels}
        g = min((g for g in labels if (free & (groups == g)).any()), key=lambda g: counts[g])
        cand = np.flatnonzero(free & (groups == g))
        score = np.einsum("ij,jk,ik->i", rows[cand], minv, rows[cand])
        i = int(cand[int(np.argmax(score))])
        picked.append(i)
        add(i)
    return picked


def design_subnets(space: SearchSpace, resolutions: Sequence[int], k: int, seed: int = 0,
                   reference: LatencyTable | None = None, measured: Sequence[Arch] = ()) -> list[Arch]:
    """The K subnets to measure (see the module docstring): `measured` (already measured, in
    design order) first, then the design's picks up to `k` in all."""
    check_k(space, resolutions, k)
    res = list(resolutions)
    pool = candidate_pool(space, res, seed)
    if k > len(pool):
        raise EdgeNASError(f"--few-shot {k}: the design picks from {len(pool)} subnets; build the full table "
                           "(edgenas profile without --few-shot) for more")
    known = set(pool)
    cands = pool + [a for a in measured if a not in known and a.resolution in res]
    if reference is not None:
        feats = type_sums(reference, space, cands, space_types(space, res))
        proxy = float(reference.calibration.overhead_ms) + feats.sum(1)
    else:
        feats = baseline_features(space, cands)
        proxy = (feats / feats.mean(0)).sum(1)
    index = {a: i for i, a in enumerate(cands)}
    start = [index[a] for a in measured if a in index]
    order = greedy_design(design_rows(feats, proxy), [a.resolution for a in cands], k, start)
    return [cands[i] for i in order]


# ---- the fits -------------------------------------------------------------------------------

@dataclass
class FewShotFit:
    """A fitted few-shot model: what goes into the table, and how well it predicts."""

    calibration: dict  # header.calibration fields (without networks)
    ops: dict[str, dict]  # the table's entries
    statistic: str
    loo_ms: np.ndarray  # leave-one-out predictions of the fitted subnets
    fitted_ms: np.ndarray  # in-sample predictions
    report: dict = field(default_factory=dict)  # header.few_shot.fit


def _choose(candidates: Sequence, loo_err: Callable[[object], np.ndarray]) -> tuple[object, dict]:
    """The simplest candidate whose leave-one-out mean |error| is within `_tolerance` of the best's."""
    abs_errs = {c: np.abs(loo_err(c)) for c in candidates}
    errs = {c: float(e.mean()) for c, e in abs_errs.items()}
    best = min(errs, key=errs.get)
    chosen = next(c for c in candidates if errs[c] <= errs[best] + _tolerance(abs_errs[best]))
    return chosen, errs


def _tolerance(abs_errors: np.ndarray) -> float:
    """One standard error of a mean leave-one-out |error| (the one-standard-error rule: with few
    subnets a less regularised model's lower error is mostly luck), at least CHOICE_MARGIN."""
    e = np.asarray(abs_errors, float)
    se = float(e.std(ddof=1) / math.sqrt(len(e))) if len(e) > 1 else 0.0
    return max(se, CHOICE_MARGIN)


def fit_transfer(table: LatencyTable, space: SearchSpace, res: Sequence[int], archs: Sequence[Arch],
                 measured_ms: Sequence[float], target_overhead_ms: float) -> FewShotFit:
    """Per-type scales and offset of `table` (holding the reference's entries and overhead)
    fitted to `measured_ms` of `archs` on the target, the shrinkage chosen by leave-one-out."""
    types = space_types(space, res)
    x = type_sums(table, space, archs, types)
    y = np.asarray(measured_ms, float)
    raw = x.sum(1)
    small = [smallest_arch(space, r) for r in res]
    floor = type_sums(table, space, small, types)
    smallest_raw = float(floor.sum(1).min())
    ref_ov = float(table.calibration.overhead_ms)
    n = len(y)

    def fit(idx, shrink):
        line = fit_calibration(raw[idx], y[idx], target_overhead_ms, smallest_raw_ms=smallest_raw)
        if math.isinf(shrink):
            return line, None
        return line, fit_per_type(x[idx], y[idx], line, floor, shrink)

    def predict(model, rows, raws):
        line, pt = model
        return line.apply(raws) if pt is None else rows @ pt[0] + pt[1]

    loo: dict[float, np.ndarray] = {}

    def loo_err(shrink):
        pred = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            pred[i] = predict(fit(keep, shrink), x[i:i + 1], raw[i:i + 1])[0]
        loo[shrink] = pred
        return pred / y - 1.0

    shrink, errs = _choose(SHRINKS if n >= PER_TYPE_MIN_K else SHRINKS[:1], loo_err)
    line, pt = fit(np.arange(n), shrink)
    cal = Calibration(ref_ov, line.scale, line.offset_ms)
    per_type: dict = {"used": pt is not None, "fitted_on": n, "shrink": None if pt is None else shrink,
                      "decision": _decision("line" if pt is None else f"per-type scales shrunk by {shrink:g}", errs,
                                            lambda s: "line" if math.isinf(s) else f"shrink {s:g}")
                      + ("" if n >= PER_TYPE_MIN_K else f"; per-type scales need {PER_TYPE_MIN_K} subnets"),
                      "cv": "leave-one-out mean |predicted / measured - 1| over the few-shot subnets",
                      "cv_line": None if math.inf not in errs else round(errs[math.inf], 6),
                      "cv_per_type": None if pt is None else round(errs[shrink], 6)}
    if pt is not None:
        scales = dict(zip(types, map(float, pt[0])))
        model = cal.with_types(scales, float(pt[1]))
        offset = held_offset(table, space, res, model, floor_ms=target_overhead_ms)
        model = cal.with_types(scales, offset)
        per_type.update(offset_ms=float(offset), scales=scales)
    else:
        model = cal
    fitted = np.array([table.predict(a, space, calibration=model) for a in archs])
    calibration = {
        "method": "few-shot transfer: predict = sum over op types t of s_t * sum(max(entry - overhead_ms, 0)) + "
                  "offset_ms; the entries and overhead_ms are the reference table's, s_t and offset_ms fitted to "
                  "the few-shot subnets measured on this device (the line: one common s), the per-type scales "
                  "shrunk toward the line by the leave-one-out choice (edgenas.latency.fewshot)",
        "overhead_ms": ref_ov, "scale": round(line.scale, 6), "offset_ms": round(line.offset_ms, 6),
        "fitted_on": n, "per_type": per_type,
    }
    return FewShotFit(calibration, dict(table.ops), str(table.header.get("statistic", "median")), loo[shrink],
                      fitted, {"model": "per-type scales of the reference" if pt is not None else
                               "one scale of the reference (the line)", "shrink": per_type["shrink"]})


def fit_baseline(space: SearchSpace, res: Sequence[int], archs: Sequence[Arch], measured_ms: Sequence[float],
                 target_overhead_ms: float) -> FewShotFit:
    """latency ~ a * MACs + b * params + c * activation bytes + offset (all >= 0, the offset at
    least the call overhead), a relative least squares with a ridge toward the MACs-and-offset
    fit, its weight chosen by leave-one-out; written as modelled layer entries (module docstring)."""
    from scipy.optimize import lsq_linear

    f = baseline_features(space, archs)
    y = np.asarray(measured_ms, float)
    n = len(y)
    ov = max(float(target_overhead_ms), 0.0)

    def fit(idx, lam):
        a = np.hstack([f[idx], np.ones((len(idx), 1))]) / y[idx, None]
        rms = np.sqrt(np.mean(a * a, axis=0))
        rms[rms == 0] = 1.0
        an = a / rms
        lo = np.array([0.0, 0.0, 0.0, ov * rms[3]])
        prior = np.zeros(4)
        two = lsq_linear(an[:, [0, 3]], np.ones(len(idx)), bounds=(lo[[0, 3]], np.inf), method="bvls")
        prior[[0, 3]] = two.x
        if math.isinf(lam):
            return prior / rms
        m = np.vstack([an, math.sqrt(lam) * np.eye(4)])
        rhs = np.concatenate([np.ones(len(idx)), math.sqrt(lam) * prior])
        return lsq_linear(m, rhs, bounds=(lo, np.inf), method="bvls").x / rms

    def predict(w, rows):
        return rows @ w[:3] + w[3]

    loo: dict[float, np.ndarray] = {}

    def loo_err(lam):
        pred = np.array([predict(fit(np.flatnonzero(np.arange(n) != i), lam), f[i:i + 1])[0] for i in range(n)])
        loo[lam] = pred
        return pred / y - 1.0

    candidates = (math.inf,) + LAMBDAS
    lam, errs = _choose(candidates, loo_err)
    w = fit(np.arange(n), lam)
    ops = {}
    for op in enumerate_ops(space, res):
        ms = float(np.dot(w[:3], layer_features(op)))
        ops[op.key] = entry(ms, ms, 0.0, 0)
    fitted = predict(w, f)
    calibration = {
        "method": "few-shot baseline: each entry is a * MACs + b * params + c * activation bytes of the layer "
                  "(modelled, none measured), offset_ms the per-call cost; a, b, c, offset_ms fitted to the "
                  "few-shot subnets (relative least squares, ridge toward MACs and offset alone, chosen by "
                  "leave-one-out; edgenas.latency.fewshot)",
        "overhead_ms": 0.0, "scale": 1.0, "offset_ms": float(w[3]), "fitted_on": n,
    }
    name = lambda lam_: "MACs and offset" if math.isinf(lam_) else f"ridge {lam_:g}"  # noqa: E731
    report = {"model": "linear in MACs, params and activation bytes, plus the call overhead",
              "coefficients": {"ms_per_mac": float(w[0]), "ms_per_param": float(w[1]),
                               "ms_per_activation_byte": float(w[2]), "offset_ms": float(w[3])},
              "ridge": None if math.isinf(lam) else lam, "decision": _decision(name(lam), errs, name)}
    return FewShotFit(calibration, ops, "median", loo[lam], fitted, report)


def _decision(chosen: str, errs: Mapping, name: Callable) -> str:
    tried = ", ".join(f"{name(c)} {e:.1%}" for c, e in errs.items())
    return f"{chosen}: leave-one-out mean |error| {tried} (the simplest within one standard error of the best)"


# ---- profiling ------------------------------------------------------------------------------

def profile_few_shot(profile: DeviceProfile | str | Path, space: SearchSpace | str | None, k: int,
                     reference: LatencyTable | str | Path | None = None, *,
                     resolutions: Sequence[int] | None = None, out: str | Path | None = None, seed: int = 0,
                     warmup: int | None = None, runs: int | None = None, plot: str | Path | None = None,
                     progress: bool = True, transport: Transport | None = None, activations=None,
                     on_result: Callable[[str, MeasureResult], None] | None = None, flush_s: float = 1.0):
    """Build or refine the few-shot table `out` for `space` on `profile` from `k` subnets
    (module docstring): measure those of the design not measured yet, fit, write the table and
    the fit plot (`plot`, default beside the table). `space` None: the reference's space."""
    t0 = time.monotonic()
    profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    if warmup is not None or runs is not None:
        profile = dataclasses.replace(profile, warmup=profile.warmup if warmup is None else warmup,
                                      runs=profile.runs if runs is None else runs)
    ref = reference if reference is None or isinstance(reference, LatencyTable) else LatencyTable.load(reference)
    if space is None:
        if ref is None:
            raise EdgeNASError("a few-shot table without --from-table needs --space")
        space = ref.space()
    space = load_space(space)
    if ref is not None:
        ref.space(space)  # raises if the reference belongs to another space
    res = resolutions_of(space, resolutions if resolutions is not None or ref is None else ref.resolutions)
    check_k(space, res, k)
    ops = enumerate_ops(space, res)
    if ref is not None:
        missing = ref.missing(op.key for op in ops)
        if missing:
            raise EdgeNASError(f"reference table {ref.name} lacks {len(missing)} of the {len(ops)} layers of "
                               f"{space.name} at {','.join(map(str, res))} px (first: {missing[0]}); pass a complete "
                               "table of this space, or --resolutions it covers")
    out = Path(out) if out is not None else default_table_path(profile, space)
    plot = Path(plot) if plot is not None else out.with_suffix(".few-shot.png")
    fmt = model_format(profile.runtime, profile.precision, activations)

    with _opened(profile, transport) as t:
        fp = _check_device(profile, t)
        if out.exists():
            table = LatencyTable.load(out)
            check_same_device(table, out, profile, space, fp)
            if "few_shot" not in table.header:
                raise EdgeNASError(f"{out} is a full table with layers measured on this device; a few-shot fit would "
                                   "replace them: pass another --out")
        else:
            table = new_table(profile, space, fp, fmt, res)
        h = table.header
        fs = h.setdefault("few_shot", {})
        nets = h.setdefault("calibration", {}).setdefault("networks", {})
        report = ProfileReport(table, out, profile.key(), len(ops))
        saver = _Saver(table, out, flush_s)
        saver.dirty = True
        try:
            if "target_overhead" not in fs:
                r = measure_overhead(profile, t, fmt)
                fs["target_overhead"] = {**_result_entry(r), "model": OVERHEAD_MODEL}
                saver.touch()
            report.phases["setup"] = time.monotonic() - t0
            before = [Arch.parse(a, space) for a in fs.get("subnets") or [] if a in nets]
            design = design_subnets(space, res, k, seed, ref, before)
            fs.update(k=k, seed=seed, subnets=[str(a) for a in design])
            todo = [a for a in design if str(a) not in nets]
            log.info("%s: few-shot table of %s at %s px from %d subnets: %d to measure, %d already in %s",
                     profile.name, space.name, ",".join(map(str, res)), k, len(todo), k - len(todo), out)

            def stored(a: Arch, r: MeasureResult) -> None:
                if not r.ok:
                    raise DeviceError(f"device '{profile.name}': few-shot subnet {a} failed: {r.error}")
                measured.append(r)
                nets[str(a)] = _result_entry(r)
                report.networks_measured.append(str(a))
                saver.touch()
                if on_result is not None:
                    on_result(f"net:{a}", r)

            if todo:
                with recording_load(table, "few_shot") as measured:
                    measure_networks(profile, fmt, space, todo, t, progress=progress,
                                     desc=f"{profile.name} few-shot", on_result=stored)
            report.phases["networks"] = time.monotonic() - t0 - report.phases["setup"]
        except DeviceError as exc:
            saver.flush()
            raise DeviceError(f"{exc}; the {len(nets)} subnets measured are saved in {out}: rerun the same command "
                              "to measure only the rest") from exc
        finally:
            saver.flush()
        t1 = time.monotonic()
        _fit_into(table, space, res, design[:k], _median(fs["target_overhead"]), ref, plot)
        h["resolutions"] = list(res)
        report.phases["fit"] = time.monotonic() - t1
        report.seconds = time.monotonic() - t0
        fs["seconds"] = round(report.seconds, 1)
        table.save(out)
    return report


def _median(e: Mapping) -> float:
    return float(e.get("median", e["mean"]))


def _fit_into(table: LatencyTable, space: SearchSpace, res: Sequence[int], archs: Sequence[Arch],
              target_ov: float, ref: LatencyTable | None, plot: Path) -> None:
    """Fit the model to `archs` (measured in the header) and write it into `table`."""
    from edgenas.latency.validate import ValidationReport, plot_validation

    h = table.header
    h.pop("validation", None)  # it validated the previous fit
    nets = h["calibration"]["networks"]
    measured = [_median(nets[str(a)]) for a in archs]
    if ref is not None:
        table.ops = {op.key: dict(ref.ops[op.key]) for op in enumerate_ops(space, res)}
        h["statistic"] = ref.header.get("statistic", "median")
        h["calibration"] = {"overhead_ms": float(ref.calibration.overhead_ms), "networks": nets}
        table.update_calibration()
        fit = fit_transfer(table, space, res, archs, measured, target_ov)
        source = {"name": ref.name, "path": str(ref.path) if ref.path else None,
                  "device": (ref.header.get("device") or {}).get("profile_key") or (ref.header.get("device") or {}).get("profile"),
                  "runtime": ref.header.get("runtime"), "precision": ref.precision,
                  "overhead_ms": float(ref.calibration.overhead_ms), "space_hash": (ref.header.get("space") or {}).get("hash")}
        what = (f"transferred: the {len(fit.ops)} entries are reference table {ref.name}'s measurements on its own "
                "device, scaled per op type by calibration.per_type; none was measured on this device")
        base = fit_baseline(space, res, archs, measured, target_ov)
        abs_err = {name: np.abs(f.loo_ms / np.asarray(measured) - 1.0) for name, f in (("transfer", fit), ("baseline", base))}
        cv = {name: round(float(e.mean()), 6) for name, e in abs_err.items()}
        if cv["baseline"] < cv["transfer"] - _tolerance(abs_err["baseline"]):  # the reference does not describe this device
            fit = base
            what = (f"modelled: the {len(fit.ops)} entries are a * MACs + b * params + c * activation bytes per layer "
                    f"(fit.coefficients); none was measured; the transfer from {ref.name} predicted the left-out "
                    f"subnets worse ({cv['transfer']:.1%} against {cv['baseline']:.1%} mean |error|)")
        fit.report["compared"] = {"cv": "leave-one-out mean |predicted / measured - 1|", **cv,
                                  "used": "baseline" if fit is base else "transfer"}
    else:
        fit = fit_baseline(space, res, archs, measured, target_ov)
        source = None
        what = (f"modelled: the {len(fit.ops)} entries are a * MACs + b * params + c * activation bytes per layer "
                "(fit.coefficients); none was measured")
    table.ops = fit.ops
    h["statistic"] = fit.statistic
    h["calibration"] = {**fit.calibration, "networks": nets}
    table.update_calibration()
    loo = ValidationReport(list(archs), fit.loo_ms, np.asarray(measured))
    inside = ValidationReport(list(archs), fit.fitted_ms, np.asarray(measured))
    check = assess_calibration(fit.loo_ms, measured, table.calibration, None, predicted_ms=fit.loo_ms)
    table.update_calibration(check=check.to_header())
    h["calibration"]["networks"] = h["calibration"].pop("networks")  # keep it last: it is long
    keep = ("n", "rmse_ms", "spearman", "within_10pct", "mean_abs_pct_error", "max_abs_pct_error", "measured_ms")
    fit.report.update(leave_one_out={k: v for k, v in loo.to_dict().items() if k in keep},
                      in_sample={k: v for k, v in inside.to_dict().items() if k in keep})
    try:
        fit.report["plot"] = str(plot_validation(loo, plot, title=f"{table.name}: few-shot fit, leave-one-out on "
                                                                   f"{len(archs)} subnets"))
    except OSError as exc:  # the table is the result; a plot that cannot be written is said, not fatal
        log.warning("few-shot fit plot %s not written: %s", plot, exc)
    fs = h["few_shot"]
    fs.update(reference=source, ops=what, fit=fit.report, fitted=now(),
              design={"method": "greedy sequential D-optimal over the relative-error rows (per-type sums or MACs, "
                                "params, activation bytes, and a constant), resolutions in turn, from a seeded pool "
                                f"of {POOL} distinct subnets (edgenas.latency.fewshot)", "pool": POOL})
    for key in ("k", "seed", "subnets", "target_overhead", "reference", "ops", "design", "fit", "fitted"):
        if key in fs:
            fs[key] = fs.pop(key)  # a stable, readable order
    if not check.reliable:
        log.warning("%s", check.warning(table.name, header_load(table)))
