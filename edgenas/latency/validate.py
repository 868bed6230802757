"""Check a latency table against the truth: whole subnets measured end to end on the device.

    report = validate_table(table, "device_profiles/local-cpu.yaml", n=100, plot="val.png")
    print(report.summary())

Random subnets (seeded, at the table's resolutions) are materialized, exported in the device's
format and measured with the runner; each prediction `table.predict(arch)` is compared with the
measured median.

A device's speed drifts: a phone throttles when warm, and a shared VM has slow minutes. So that
the validation measures the table and not the drift, the table's calibration subnets (whose
latency at build time the header keeps) are measured again among the validation subnets, in the
same agent runs. The median of their now / then ratios is the device's speed relative to the
table (`drift`: 1.2 means 20% slower now). The runner measures a chunk of models per agent run,
in interleaved rounds, so the models of one run see the same device speed, and the next run may
see another (a VM whose host is busy loses a share of its CPU for minutes at a time). Each subnet
is therefore compared at the drift of its own agent run, the median over that run's calibration
subnets (`MIN_RUN_REFS` of them at least; otherwise the whole validation's median); the figures
at one drift for all and without any adjustment are reported beside. A drift far from 1 is warned
about (it is more likely another device or another runtime setting than a slow spell), and so
are runs whose drifts differ by more than the ±10% a table is judged by. The agent's CPU counters
say what else the device did meanwhile (`load`: the share of CPU time a VM's host took away, and
the share other processes used), overall and per agent run; a notable load is warned about.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgenas.device import CpuLoad, DeviceProfile, load_profile
from edgenas.device.transport import Transport
from edgenas.errors import DeviceError, EdgeNASError
from edgenas.latency.formats import model_format
from edgenas.latency.table import LatencyTable, now
from edgenas.space import Arch, SearchSpace, sample

log = logging.getLogger(__name__)

CHUNK = 25  # models per agent run in a validation
MIN_RUN_REFS = 3  # calibration subnets an agent run needs to have a drift of its own


@dataclass
class ValidationReport:
    archs: list[Arch]
    predicted: np.ndarray  # ms
    measured: np.ndarray  # ms, median of the device's timed runs
    plot: Path | None = None
    drift: float = 1.0  # the device's latency now / at the table's build (1.0: not checked)
    drift_subnets: int = 0  # calibration subnets measured again to estimate it
    run_drift: np.ndarray | None = None  # per subnet: the drift of its own agent run (None: `drift` for all)
    load: CpuLoad | None = None  # what else the device's CPUs did meanwhile (None: no counters)
    run_loads: list[CpuLoad] | None = None  # the same per agent run

    @property
    def drifts(self) -> np.ndarray:
        return np.full(len(self.measured), self.drift) if self.run_drift is None else np.asarray(self.run_drift, float)

    @property
    def compared(self) -> np.ndarray:
        """The measured latencies at the table's device speed (measured / the drift of their run)."""
        return self.measured / self.drifts

    @property
    def rel_error(self) -> np.ndarray:
        return self.predicted / self.compared - 1.0

    @property
    def rmse_ms(self) -> float:
        return float(np.sqrt(np.mean((self.predicted - self.compared) ** 2)))

    @property
    def spearman(self) -> float:
        return spearman(self.predicted, self.compared)  # at each run's speed (one drift alone changes no rank)

    def within(self, tolerance: float = 0.10, adjusted: bool | str = True) -> float:
        """Share of subnets predicted within ±tolerance of the measured latency: by default at
        the table's device speed in each agent run; adjusted="global": at the validation's one
        drift; adjusted=False: as measured now."""
        truth = {True: self.compared, "global": self.measured / self.drift, False: self.measured}[adjusted]
        return float(np.mean(np.abs(self.predicted / truth - 1.0) <= tolerance))

    def to_dict(self) -> dict:
        d = {
            "n": len(self.archs), "rmse_ms": round(self.rmse_ms, 4), "spearman": round(self.spearman, 4),
            "within_10pct": round(self.within(0.10), 4), "mean_abs_pct_error": round(float(np.mean(np.abs(self.rel_error))) * 100, 2),
            "max_abs_pct_error": round(float(np.max(np.abs(self.rel_error))) * 100, 2),
            "measured_ms": [round(float(self.measured.min()), 3), round(float(self.measured.max()), 3)],
            "drift": round(self.drift, 4), "drift_subnets": self.drift_subnets,
            "plot": str(self.plot) if self.plot else None,
        }
        if self.drift_subnets:
            raw = self.predicted / self.measured - 1.0
            d["unadjusted"] = {"within_10pct": round(self.within(0.10, adjusted=False), 4),
                               "mean_abs_pct_error": round(float(np.mean(np.abs(raw))) * 100, 2),
                               "spearman": round(spearman(self.predicted, self.measured), 4)}
            one = self.predicted / (self.measured / self.drift) - 1.0
            d["one_drift"] = {"within_10pct": round(self.within(0.10, adjusted="global"), 4),
                              "mean_abs_pct_error": round(float(np.mean(np.abs(one))) * 100, 2)}
            runs = np.unique(self.drifts)
            d["run_drift"] = [round(float(runs.min()), 4), round(float(runs.max()), 4)]
        if self.load is not None:
            d["device_load"] = self.load.to_dict()
            if self.run_loads:
                steal = [x.steal for x in self.run_loads]
                d["device_load"]["run_steal"] = [round(min(steal), 4), round(max(steal), 4)]
        return d

    def summary(self) -> str:
        d = self.to_dict()
        line = (f"{d['n']} subnets ({d['measured_ms'][0]}-{d['measured_ms'][1]} ms): RMSE {d['rmse_ms']} ms, "
                f"Spearman {d['spearman']}, within ±10%: {d['within_10pct'] * 100:.0f}%, "
                f"mean |error| {d['mean_abs_pct_error']}%, max {d['max_abs_pct_error']}%")
        if self.drift_subnets:
            lo, hi = d["run_drift"]
            runs = f" (agent runs {lo:.3f}-{hi:.3f}x)" if hi > lo else ""
            line += (f"; device {self.drift:.3f}x the table's build latency{runs} ({self.drift_subnets} calibration "
                     f"subnets re-measured), at one drift within ±10%: {d['one_drift']['within_10pct'] * 100:.0f}%, "
                     f"unadjusted within ±10%: {d['unadjusted']['within_10pct'] * 100:.0f}%")
        if self.load is not None and self.load.notable:
            line += f"; meanwhile {self.load.describe()}"
        return line


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def validation_archs(space: SearchSpace, resolutions: Sequence[int], n: int, seed: int) -> list[Arch]:
    """`n` random subnets at `resolutions`, from a seed stream apart from the calibration subnets'."""
    return sample(space.replace(resolutions=tuple(resolutions)), np.random.default_rng([seed, 11]), n)


def validate_table(table: LatencyTable | str | Path, profile: DeviceProfile | str | Path, n: int, *,
                   seed: int = 0, plot: str | Path | None = None, save: bool = True, progress: bool = True,
                   transport: Transport | None = None, drift_check: bool = True,
                   activations=None) -> ValidationReport:
    """Measure `n` random subnets on the device and compare them with the table's predictions,
    at the table's device speed when `drift_check` (see the module docstring). The summary goes
    into the table header (`validation:`) and the file is saved when `save`. An int8 table needs
    `activations` (`edgenas.latency.int8.ActivationSource`), as when it was built."""
    from edgenas.latency.profiler import measure_networks

    table = table if isinstance(table, LatencyTable) else LatencyTable.load(table)
    profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    if table.precision != profile.precision:
        raise EdgeNASError(f"latency table {table.name} is {table.precision} but profile {profile.name} measures "
                           f"{profile.precision} models; validate a table with the profile that built it")
    space = table.space()
    archs = validation_archs(space, table.resolutions, n, seed)
    predicted = table.predict(archs, space)  # fails on a missing key before measuring anything
    then = calibration_latencies(table, space) if drift_check else {}
    refs = [a for a in then if a not in archs]
    order = spread(archs, refs)
    results = measure_networks(profile, model_format(profile.runtime, profile.precision, activations), space, order,
                               transport, chunk_size=CHUNK,
                               progress=progress,
                               desc=f"{profile.name} validation" + (f" + {len(refs)} calibration subnets" if refs else ""))
    bad = [(a, r.error) for a, r in zip(order, results) if not r.ok]
    if bad:
        raise DeviceError(f"device '{profile.name}': subnet {bad[0][0]} failed to run: {bad[0][1]}")
    measured = [r.median_ms for r in results]
    drift, by_run = run_drifts(order, measured, {a: then[a] for a in refs}, CHUNK)
    loads = [CpuLoad.of(results[k:k + CHUNK]) for k in range(0, len(results), CHUNK)]
    run_loads = [x for x in loads if x is not None]
    load = CpuLoad.of(results)
    if load is not None and load.notable:
        log.warning("while %s was validated on %s, %s (agent runs: steal %.0f-%.0f%%): the figures measure a busy "
                    "device; validate on a quiet one for figures a user can rely on", table.name, profile.name,
                    load.describe(), 100 * min(x.steal for x in run_loads), 100 * max(x.steal for x in run_loads))
    if refs and not 2 / 3 <= drift <= 1.5:
        log.warning("%s runs the table's calibration subnets %.2fx as long as when %s was built: is it the same "
                    "device, runtime and thread count? The validation compares at the table's speed.",
                    profile.name, drift, table.name)
    if refs and max(by_run) / min(by_run) > 1.1:
        log.warning("%s changed speed during the validation: its agent runs measured the calibration subnets at "
                    "%.2f-%.2fx the table's build latency. Each subnet is compared at its own run's speed; for "
                    "figures a user can rely on, validate on a quiet device (on a VM, watch the 'st' column of "
                    "vmstat: time the host took away).", profile.name, min(by_run), max(by_run))
    position = {id(a): i for i, a in enumerate(order)}
    report = ValidationReport(archs, np.asarray(predicted, float), np.array([measured[position[id(a)]] for a in archs]),
                              drift=drift, drift_subnets=len(refs),
                              run_drift=np.array([by_run[position[id(a)] // CHUNK] for a in archs]),
                              load=load, run_loads=run_loads or None)
    if plot is not None:
        report.plot = plot_validation(report, plot, title=f"{table.name}")
    table.header["validation"] = {"date": now(), "device": profile.key(), "seed": seed, **report.to_dict()}
    if save and table.path is not None and table.path.is_file():
        table.save()
    return report


def calibration_latencies(table: LatencyTable, space: SearchSpace) -> dict[Arch, float]:
    """{calibration subnet: its median latency (ms) when the table was built}, from the header."""
    nets = (table.header.get("calibration") or {}).get("networks") or {}
    out = {}
    for text, e in nets.items():
        try:
            out[Arch.parse(text, space)] = float(e["median"])
        except Exception:  # a hand-edited or foreign entry: it just does not serve as a reference
            log.debug("calibration entry %r skipped", text, exc_info=True)
    return out


def run_drifts(order: Sequence[Arch], measured: Sequence[float], then: dict[Arch, float], chunk: int,
               min_refs: int | None = None) -> tuple[float, list[float]]:
    """(the median drift over every reference, the drift of each agent run) for models measured in
    `order`, `chunk` per run: a run's drift is the median now / then of the references `then` it
    holds, or the overall median when it holds fewer than `min_refs` (default MIN_RUN_REFS); 1.0
    without references."""
    min_refs = MIN_RUN_REFS if min_refs is None else min_refs
    ratios = [(i // chunk, m / then[a]) for i, (a, m) in enumerate(zip(order, measured)) if a in then]
    if not ratios:
        return 1.0, [1.0] * max(1, -(-len(order) // chunk))
    overall = float(np.median([r for _, r in ratios]))
    runs = []
    for k in range(-(-len(order) // chunk)):
        own = [r for run, r in ratios if run == k]
        runs.append(float(np.median(own)) if len(own) >= min_refs else overall)
    return overall, runs


def spread(archs: Sequence[Arch], refs: Sequence[Arch]) -> list[Arch]:
    """`archs` with `refs` spread evenly among them, so that every chunk the runner sends to the
    device holds some of each and sees the same device speed."""
    if not refs:
        return list(archs)
    slots = np.linspace(0, len(archs), len(refs), endpoint=False).round().astype(int)
    out: list[Arch] = []
    j = 0
    for i, a in enumerate(archs):
        while j < len(refs) and slots[j] <= i:
            out.append(refs[j])
            j += 1
        out.append(a)
    return out + list(refs[j:])


def plot_validation(report: ValidationReport, path: str | Path, title: str = "") -> Path:
    """Predicted vs measured scatter with the y = x line and a ±10% band (matplotlib Agg)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    from edgenas.io import atomic_write
    from edgenas.plotting import fit_title

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m, p = report.compared, report.predicted
    lo, hi = 0.95 * min(m.min(), p.min()), 1.05 * max(m.max(), p.max())
    fig = Figure(figsize=(5, 5), dpi=120)
    ax = fig.subplots()
    xs = np.linspace(lo, hi, 2)
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(xs, xs, color="tab:green", lw=1)
    ax.scatter(m, p, s=12, color="tab:blue")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)" + (f", at the table's speed (drift {report.drift:.3f})" if report.drift_subnets else ""))
    ax.set_ylabel("predicted latency (ms)")
    ax.legend(loc="upper left", fontsize=8)
    fit_title(ax, f"{title}\n{report.summary().split(': ', 1)[1]}", fontsize=8)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
