"""Build a latency table by measuring every distinct layer of a space on a device.

    report = profile_device("device_profiles/local-cpu.yaml", "mbv3-tiny")
    report.table.predict(arch)

One run opens one transport (one SSH session), checks the device, then for each chunk of
missing layers writes the single-op models, uploads them in one batch and measures them with one
agent process (`edgenas.device.runner.measure_written`, the measurement step whole subnets and
exported files take too). Every result goes into the table as it
arrives and the file is rewritten atomically at most every `flush_s` seconds and at the end, also
when the run fails or is interrupted: rerunning the same command measures only the keys that
are still missing. Finally a few whole subnets are measured to calibrate the table (see
`edgenas.latency.table.Calibration`); they are resumable the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgenas.device import DeviceProfile, device_fingerprint, load_profile, open_transport
from edgenas.device.runner import CpuLoad, MeasureResult, measure_written
from edgenas.device.transport import Transport
from edgenas.errors import DeviceError, EdgeNASError
from edgenas.latency.formats import ModelFormat, model_format
from edgenas.latency.ops import enumerate_ops, estimate_seconds, resolutions_of
from edgenas.latency.calibration import SMALLEST_FLOOR, assess_calibration, choose_calibration, fit_calibration
from edgenas.latency.table import LatencyPredictor, LatencyTable, entry, now
from edgenas.space import Arch, SearchSpace, load_space, sample
from edgenas.space.arch import smallest as smallest_arch

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("latency_tables")
OVERHEAD_SHAPE = (1, 8, 1, 1)
# Fingerprint fields that must not change between the runs that fill one table.
_SAME_DEVICE = ("cpu_model", "machine", "runtime_version")


@dataclass
class ProfileReport:
    """What one `profile_device` run did."""

    table: LatencyTable
    path: Path
    profile_key: str
    total_ops: int  # distinct layers for the space and resolutions
    measured: list[str] = field(default_factory=list)  # keys measured in this run
    reused: int = 0  # keys that were already in the table
    failed: dict[str, str] = field(default_factory=dict)  # key -> error
    networks_measured: list[str] = field(default_factory=list)  # calibration subnets measured in this run
    estimate_s: float = 0.0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step: setup, ops, calibration

    @property
    def complete(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        c = self.table.header.get("calibration", {})
        return {
            "table": str(self.path), "profile": self.profile_key, "total_ops": self.total_ops,
            "measured": len(self.measured), "reused": self.reused, "failed": self.failed,
            "calibration_networks_measured": len(self.networks_measured),
            "calibration": {**{k: c.get(k) for k in ("overhead_ms", "scale", "offset_ms", "fitted_on")},
                            "per_type": {k: (c.get("per_type") or {}).get(k) for k in ("used", "cv_line", "cv_per_type")}},
            "estimate_s": round(self.estimate_s, 1), "seconds": round(self.seconds, 1),
            "phases": {k: round(v, 1) for k, v in self.phases.items()},
            **({"few_shot": {k: fs.get(k) for k in ("k", "reference", "fit", "seconds")}}
               if (fs := self.table.header.get("few_shot")) else {}),
            **({"device_load": load.to_dict()} if (load := header_load(self.table)) is not None else {}),
        }


def default_table_path(profile: DeviceProfile, space: SearchSpace, directory: Path = DEFAULT_DIR) -> Path:
    return Path(directory) / f"{profile.key()}-{space.name}.yaml"


class _Saver:
    """Save the table when asked, at most every `interval` seconds; `flush` saves what is pending."""

    def __init__(self, table: LatencyTable, path: Path, interval: float):
        self.table, self.path, self.interval = table, path, interval
        self.last, self.dirty = 0.0, False

    def touch(self) -> None:
        self.dirty = True
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.dirty:
            self.table.save(self.path)
            self.last, self.dirty = time.monotonic(), False


def profile_device(
    profile: DeviceProfile | str | Path,
    space: SearchSpace | str,
    *,
    resolutions: Sequence[int] | None = None,
    out: str | Path | None = None,
    calibrate: int = 24,
    seed: int = 0,
    warmup: int | None = None,
    runs: int | None = None,
    chunk_size: int = 500,
    flush_s: float = 1.0,
    progress: bool = True,
    position: int = 0,
    on_result: Callable[[str, MeasureResult], None] | None = None,
    transport: Transport | None = None,
    activations=None,
) -> ProfileReport:
    """Measure the layers of `space` that `out` does not have yet, then calibrate.

    `calibrate` whole subnets (seeded by `seed`) are measured to fit the table's calibration; 0
    keeps the raw sum. `chunk_size` layers go to the device per agent run; with a profile's
    `rounds` > 1 each layer's rounds are spread over its whole chunk, so a large chunk rejects
    long slow spells of the device better (results then arrive per chunk). `warmup` and `runs` override the profile's. `on_result(key, result)` is
    called after each measurement is stored (keys of calibration subnets are 'net:' + arch).
    A profile with `precision: int8` needs `activations` (`edgenas.latency.int8.ActivationSource`,
    a trained supernet and its images), which calibrate every layer's quantization.
    """
    t0 = time.monotonic()
    profile = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    if warmup is not None or runs is not None:
        profile = dataclasses.replace(profile, warmup=profile.warmup if warmup is None else warmup,
                                      runs=profile.runs if runs is None else runs)
    space = load_space(space)
    fmt = model_format(profile.runtime, profile.precision, activations)
    if activations is not None and activations.space.hash != space.hash:
        raise EdgeNASError(f"the supernet that calibrates the int8 layers is a {activations.space.name} supernet, "
                           f"not {space.name}; pass a supernet of the space being profiled")
    res = resolutions_of(space, resolutions)
    out = Path(out) if out is not None else default_table_path(profile, space)
    ops = enumerate_ops(space, res)

    with _opened(profile, transport) as t:
        fp = _check_device(profile, t)
        table = _open_table(out, profile, space, fp, fmt, res)
        todo = [op for op in ops if op.key not in table]
        report = ProfileReport(table, out, profile.key(), len(ops), reused=len(ops) - len(todo))
        report.estimate_s = estimate_seconds(todo, profile.warmup, profile.runs, rounds=profile.rounds) + 3.0 * max(calibrate, 0)
        log.info("%s: %d distinct ops for %s at %s px: %d to measure, %d already in %s; estimated %s",
                 profile.name, len(ops), space.name, ",".join(map(str, res)), len(todo), report.reused, out,
                 _duration(report.estimate_s))
        saver = _Saver(table, out, flush_s)
        saver.dirty = not out.exists()
        try:
            _measure_overhead(profile, t, fmt, table, saver)
            report.phases["setup"] = time.monotonic() - t0
            _measure_ops(profile, t, fmt, table, todo, chunk_size, saver, report, progress, position, on_result)
            report.phases["ops"] = time.monotonic() - t0 - report.phases["setup"]
            if calibrate > 0 and not report.failed:
                _calibrate(profile, t, fmt, table, space, res, calibrate, seed, saver, report, progress, position, on_result)
                report.phases["calibration"] = time.monotonic() - t0 - report.phases["setup"] - report.phases["ops"]
        except DeviceError as exc:
            saver.flush()
            done = sum(op.key in table for op in ops)
            raise DeviceError(f"{exc}; {done} of {len(ops)} ops are saved in {out}: rerun the same command to "
                              "measure only the rest") from exc
        finally:
            saver.flush()
        if report.failed:
            table.header["failed"] = dict(report.failed)
        saver.touch()
        saver.flush()
    report.seconds = time.monotonic() - t0
    return report


def profile_many(profiles: Sequence[DeviceProfile | str | Path], space: SearchSpace | str, *,
                 outs: Sequence[str | Path | None] | None = None, **kwargs) -> list[ProfileReport | BaseException]:
    """Profile several devices in parallel (one thread each, one table each); a failure on one
    device does not stop the others: its entry in the result list is the exception."""
    outs = list(outs) if outs is not None else [None] * len(profiles)
    if len(outs) != len(profiles):
        raise ValueError("one output path per profile")
    if len(profiles) == 1:
        try:
            return [profile_device(profiles[0], space, out=outs[0], **kwargs)]
        except (EdgeNASError, OSError) as exc:
            return [exc]
    stop = threading.Event()  # Ctrl-C in the main thread stops every device at its next result
    user_hook = kwargs.pop("on_result", None)

    def hook(key: str, result: MeasureResult) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        if user_hook is not None:
            user_hook(key, result)

    def one(i: int):
        try:
            return profile_device(profiles[i], space, out=outs[i], position=i, on_result=hook, **kwargs)
        except (EdgeNASError, OSError, KeyboardInterrupt) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(profiles)) as pool:
        futures = [pool.submit(one, i) for i in range(len(profiles))]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            stop.set()  # each table is saved by its own thread on the way out
            raise


# ---- steps ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _opened(profile: DeviceProfile, transport: Transport | None):
    if transport is not None:
        yield transport
    else:
        with open_transport(profile) as t:
            yield t


def _check_device(profile: DeviceProfile, t: Transport) -> dict:
    fp = device_fingerprint(profile, t)
    missing = [m for m in fp.get("missing", []) if m.get("required", True)]
    if missing:
        m = missing[0]
        raise DeviceError(f"device '{profile.name}' lacks {m['what']}: {m['hint']} (check with: edgenas device check {profile.source})")
    keep = ("hostname", "cpu_model", "board", "cores", "usable_cores", "machine", "os", "python", "numpy", "runtime_version")
    return {k: fp.get(k) for k in keep if fp.get(k) is not None}


def _open_table(out: Path, profile: DeviceProfile, space: SearchSpace, fp: dict, fmt: ModelFormat,
                resolutions: list[int]) -> LatencyTable:
    if out.exists():
        table = LatencyTable.load(out)
        check_same_device(table, out, profile, space, fp)
        h = table.header
        if "few_shot" in h:
            _from_few_shot(table)
        h["resolutions"] = sorted(set(h.get("resolutions", [])) | set(resolutions))
        h.pop("failed", None)
        return table
    return new_table(profile, space, fp, fmt, resolutions)


def check_same_device(table: LatencyTable, out: Path, profile: DeviceProfile, space: SearchSpace, fp: dict) -> None:
    """Raise unless the table at `out` was measured for `space` with `profile` on this device."""
    h = table.header
    table.space(space)  # raises if the table belongs to another space
    if h.get("device", {}).get("profile_key") != profile.key():
        raise EdgeNASError(f"{out} was measured with profile {h.get('device', {}).get('profile_key')}, not "
                           f"{profile.key()}; pass another --out")
    old = h.get("device", {}).get("fingerprint", {})
    for k in _SAME_DEVICE:
        if old.get(k) != fp.get(k):
            raise EdgeNASError(f"{out} was measured on a device with {k} {old.get(k)!r}, this one has "
                               f"{fp.get(k)!r}; pass another --out to start a new table")


def new_table(profile: DeviceProfile, space: SearchSpace, fp: dict, fmt: ModelFormat,
              resolutions: list[int]) -> LatencyTable:
    """An empty table for `space` measured with `profile` on the device with fingerprint `fp`."""
    return LatencyTable.create(
        space, f"{profile.key()}-{space.name}",
        device={"profile": profile.name, "profile_key": profile.key(), "transport": profile.transport,
                "source": str(profile.source), "fingerprint": fp},
        runtime=profile.runtime, runtime_version=fp.get("runtime_version"),
        runtime_options=dict(profile.runtime_options), threads=profile.threads, precision=profile.precision,
        thread_settings=profile.thread_settings(),
        warmup=profile.warmup, runs=profile.runs, model_format=fmt.describe(),
        resolutions=list(resolutions),
        calibration={"overhead_ms": 0.0, "scale": 1.0, "offset_ms": 0.0},
    )


def _from_few_shot(table: LatencyTable) -> None:
    """Start a full table from a few-shot one (edgenas.latency.fewshot): its layer entries were
    transferred or modelled, not measured here, so they go; its whole subnets were measured on
    this device, so they stay as calibration subnets (not measured again), and the header keeps
    what the table was built from under `few_shot_history`."""
    h = table.header
    fs = h.pop("few_shot")
    nets = (h.get("calibration") or {}).get("networks") or {}
    h["few_shot_history"] = {"k": fs.get("k"), "reference": (fs.get("reference") or {}).get("name"),
                             "subnets": [a for a in fs.get("subnets") or [] if a in nets],
                             "converted": now()}
    h["statistic"] = "median"
    h.pop("validation", None)
    h["calibration"] = {"overhead_ms": 0.0, "scale": 1.0, "offset_ms": 0.0, "networks": nets}
    table.ops = {}
    table.update_calibration()
    log.info("%s: a few-shot table: its %d measured subnets are kept as calibration subnets, its layers are "
             "measured now", table.name, len(h["few_shot_history"]["subnets"]))


def _result_entry(r: MeasureResult) -> dict:
    return entry(r.mean_ms, r.median_ms, r.std_ms, r.count)


def measure_overhead(profile, t, fmt: ModelFormat) -> MeasureResult:
    """The per-call overhead: a single ReLU on 8 numbers costs nothing but the call itself."""
    import torch

    write_overhead = getattr(fmt, "write_overhead", fmt.write_net)  # int8 tables: the fp32 call overhead
    (r,) = measure_written(profile, [torch.nn.ReLU()], lambda chunk, d, _stage: [
        write_overhead(chunk[0], OVERHEAD_SHAPE, d / f"overhead{fmt.suffix}")], transport=t)
    if not r.ok:
        raise DeviceError(f"device '{profile.name}' cannot run even a one-node model: {r.error}")
    return r


OVERHEAD_MODEL = f"Relu on a {'x'.join(map(str, OVERHEAD_SHAPE))} tensor"


def _measure_overhead(profile, t, fmt: ModelFormat, table: LatencyTable, saver: _Saver) -> None:
    cal = table.header.setdefault("calibration", {})
    if "overhead" in cal:
        return
    r = measure_overhead(profile, t, fmt)
    table.update_calibration(overhead_ms=round(r.median_ms, 6), overhead=_result_entry(r),
                             overhead_model=OVERHEAD_MODEL)
    saver.touch()


def _bar(total: int, desc: str, progress: bool, position: int):
    from edgenas.progress import progress_bar

    return progress_bar(total, desc, "op", enabled=progress, position=position)


def _measure_ops(profile, t, fmt, table, todo, chunk_size, saver, report, progress, position, on_result) -> None:
    with _bar(len(todo), f"{profile.name} ops", progress, position) as bar:
        def write(chunk, d: Path, stage) -> list:
            stage(f"writing {len(chunk)} models")
            if hasattr(fmt, "write_ops"):  # many layers at once (TFLite: one signature each of few files)
                return fmt.write_ops(chunk, d, stage)
            return [fmt.write_op(op, d / f"op{i:05d}{fmt.suffix}") for i, op in enumerate(chunk)]

        def stored(op, r: MeasureResult) -> None:
            measured.append(r)
            if r.ok:
                table.set(op.key, _result_entry(r))
                report.measured.append(op.key)
                saver.touch()
            else:
                report.failed[op.key] = r.error
                log.warning("%s: %s failed: %s", profile.name, op.key, r.error)
            bar.update(1)
            if on_result is not None:
                on_result(op.key, r)

        with recording_load(table, "ops") as measured:
            measure_written(profile, todo, write, transport=t, chunk_size=chunk_size, on_result=stored,
                            on_stage=bar.set_postfix_str)


@contextlib.contextmanager
def recording_load(table: LatencyTable, phase: str):
    """Yields a list for the results measured in the block; at its end, also when the connection
    dropped, adds what else the device's CPUs did meanwhile to the header's `device_load.<phase>`
    (merged with an earlier run's, when a profile resumes)."""
    results: list[MeasureResult] = []
    try:
        yield results
    finally:
        load = CpuLoad.of(results)
        if load is not None:
            rec = table.header.setdefault("device_load", {})
            rec[phase] = load.merged(CpuLoad.from_dict(rec.get(phase))).to_dict()


def header_load(table: LatencyTable) -> CpuLoad | None:
    """The load of every phase the header's `device_load` records, combined."""
    load = None
    for record in (table.header.get("device_load") or {}).values():
        one = CpuLoad.from_dict(record)
        if one is not None:
            load = one.merged(load)
    return load


def calibration_archs(space: SearchSpace, resolutions: Sequence[int], k: int, seed: int) -> list[Arch]:
    """`k` distinct random subnets (seeded), spread evenly over the resolutions.

    Random, like the subnets a search weighs against each other: the smallest and the largest
    subnet lie far outside that crowd (the largest w1.0 subnet at 224 px runs ~1.7x the slowest of
    100 random ones), and in a line fit such points decide the slope alone; with them in the
    calibration set a validation on this machine showed a -6% to +4% bias from 160 to 224 px.
    """
    sub = space.replace(resolutions=tuple(resolutions))
    archs: list[Arch] = []
    rng = np.random.default_rng([seed, 7])
    i = 0
    while len(archs) < k and i < 100 * k:  # a narrow space may hold fewer than k subnets
        a = sample(sub, rng)
        a = Arch(resolutions[i % len(resolutions)], a.units)
        i += 1
        if a not in archs:
            archs.append(a)
    return archs


def _calibrate(profile, t, fmt, table, space, res, k, seed, saver, report, progress, position, on_result) -> None:
    """Measure the calibration subnets twice (two passes, so a slow spell of the device shows as
    a disagreement), fit the line and the per-type correction, keep the per-type one only where
    it predicts held-out subnets clearly better, and check that the measurements support the
    model kept (edgenas.latency.calibration)."""
    cal = table.header.setdefault("calibration", {})
    nets = cal.setdefault("networks", {})
    archs = calibration_archs(space, res, k, seed)
    todo = [a for a in archs if str(a) not in nets or "repeat_median" not in nets[str(a)]]
    passes = {a: (0 if str(a) not in nets else 1) for a in todo}  # measurements each already has

    def stored(a: Arch, r: MeasureResult) -> None:
        if not r.ok:
            raise DeviceError(f"device '{profile.name}': calibration subnet {a} failed: {r.error}")
        measured_now.append(r)
        if passes[a] == 0:
            nets[str(a)] = _result_entry(r)
            report.networks_measured.append(str(a))
        elif passes[a] == 1:
            nets[str(a)]["repeat_median"] = round(float(r.median_ms), 6)
        passes[a] += 1
        saver.touch()
        if on_result is not None:
            on_result(f"net:{a}", r)

    if todo:
        fresh = [a for a in todo if passes[a] == 0]
        with recording_load(table, "calibration") as measured_now:
            measure_networks(profile, fmt, space, todo, t, progress=progress, position=position,
                             desc=f"{profile.name} calibration", on_result=stored, repeats=2 if fresh else 1)
    kept = [Arch.parse(a, space) for a in (table.header.get("few_shot_history") or {}).get("subnets") or []]
    used = [a for a in archs if str(a) in nets] + [a for a in kept if a not in archs and str(a) in nets]
    raw = [table.predict_raw(a, space) for a in used]
    measured = [float(nets[str(a)]["median"]) for a in used]
    smallest = [smallest_arch(space, r) for r in res]
    fitted = fit_calibration(raw, measured, float(cal.get("overhead_ms", 0.0)),
                             smallest_raw_ms=min(table.predict_raw(a, space) for a in smallest))
    choice = choose_calibration([table.type_sums(a, space) for a in used], measured, fitted,
                                [table.type_sums(a, space) for a in smallest],
                                smallest_raw_ms=min(table.predict_raw(a, space) for a in smallest))
    model = choice.calibration(fitted)
    if model.per_type:  # hold the floor at the lowest subnet under these scales, found over the whole space
        choice.offset_ms = held_offset(table, space, res, model)
        model = choice.calibration(fitted)
    check = assess_calibration(raw, measured, model, [nets[str(a)].get("repeat_median") for a in used],
                               predicted_ms=[table.predict(a, space, calibration=model) for a in used])
    table.update_calibration(**{
        "method": "predict = scale * sum(max(op - overhead_ms, 0)) + offset_ms; overhead_ms is the median of "
                  "the overhead model (the per-call cost in every isolated op), scale and offset_ms a robust "
                  "(Huber) relative least-squares fit of measured on summed latency over the networks below, "
                  "with scale > 0 and the smallest subnet predicted at >= half its summed layers x scale; "
                  "per_type: one scale per op type instead, used only where its leave-one-out error is clearly "
                  "lower (edgenas.latency.calibration)",
        "overhead_ms": fitted.overhead_ms, "scale": round(fitted.scale, 6), "offset_ms": round(fitted.offset_ms, 6),
        "fitted_on": len(used), "per_type": choice.to_header(), "check": check.to_header(),
    })
    if not check.reliable:
        log.warning("%s", check.warning(table.name, header_load(table)))
    cal["networks"] = cal.pop("networks")  # keep it last in the header: it is long
    saver.touch()


def held_offset(table: LatencyTable, space: SearchSpace, res: Sequence[int], model, floor_ms: float | None = None) -> float:
    """`model`'s per-type offset, raised where the lowest subnet of the space at `res` under its
    scales (found exactly) would lie below the floor: the call overhead (`floor_ms`, default the
    model's overhead_ms) and SMALLEST_FLOOR of its scaled layers."""
    sub = space.replace(resolutions=tuple(res))
    low = float(np.nanmin(LatencyPredictor(table, sub, model).lowest()))
    floor_ms = model.overhead_ms if floor_ms is None else floor_ms
    return max(model.offset_ms, floor_ms - low, -(1 - SMALLEST_FLOOR) * low)


def measure_networks(profile: DeviceProfile, fmt: ModelFormat, space: SearchSpace, archs: Sequence[Arch],
                     transport: Transport | None = None, *, progress: bool = True, position: int = 0,
                     desc: str = "networks", chunk_size: int = 25, repeats: int = 1,
                     on_result: Callable[[Arch, MeasureResult], None] | None = None) -> list[MeasureResult]:
    """Materialize each subnet from a randomly initialised supernet, export it in the device's
    format (the same path a user's exported subnet takes) and measure it `repeats` times (whole
    passes over a chunk, so the repeats lie apart in time); `on_result(arch, result)` is called
    as each result arrives, in pass order."""
    from edgenas.supernet import Supernet

    import torch

    supernet = getattr(fmt, "supernet", None)  # int8: the trained supernet, for realistic activation ranges
    if supernet is None:
        with torch.random.fork_rng():  # latency does not depend on the weights; seed them for reproducible files
            torch.manual_seed(0)
            supernet = Supernet(space).eval()

    def write(chunk, d: Path, stage) -> list[Path]:
        shapes = [(1, space.in_channels, a.resolution, a.resolution) for a in chunk]
        if hasattr(fmt, "write_nets"):  # many conversions at once, in worker processes (TFLite)
            return fmt.write_nets([(lambda a=a: supernet.materialize(a), shape, d / f"net{i:05d}{fmt.suffix}")
                                   for i, (a, shape) in enumerate(zip(chunk, shapes))], stage)
        paths = []
        for i, a in enumerate(chunk):
            stage(f"exporting {i + 1}/{len(chunk)}")
            paths.append(fmt.write_net(supernet.materialize(a), shapes[i], d / f"net{i:05d}{fmt.suffix}"))
        return paths

    with _opened(profile, transport) as t, _bar(len(archs) * repeats, desc, progress, position) as bar:
        def arrived(a: Arch, r: MeasureResult) -> None:
            bar.update(1)
            if on_result is not None:
                on_result(a, r)

        return measure_written(profile, list(archs), write, transport=t, chunk_size=chunk_size, repeats=repeats,
                               on_result=arrived, on_stage=bar.set_postfix_str)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.1f} min"
