"""Measure models on a device: upload the agent and the models, run it once, stream results back.

    fp = device_fingerprint(profile)                       # what the device is and has
    results = measure_models(profile, paths, on_result=save_one, chunk_size=200)
    results = measure_written(profile, ops, write_chunk, on_result=store)  # write -> measure -> clean up

`measure_written` is the one measurement step every latency edgenas reports goes through: the
profiler's single layers and whole subnets (calibration, --validate, search --verify) and
`export --measure`. For each chunk of items it writes their model files into a temporary
directory, measures them with `measure_models`, and removes them.

`measure_models` opens one transport (one SSH connection), uploads the agent once, and for each
chunk of models uploads the chunk in one batch, runs the agent once over the chunk and calls
`on_result` for every model as soon as its JSON line arrives, so a caller can save each
measurement atomically and resume after a dropped connection (which raises `ConnectionLost`).

A model is a file, or a `(file, signature)` pair naming one signature of a TFLite file that holds
many (the layers of a latency table, `edgenas.export.tflite_layers`): the agent times that
signature's subgraph alone, and each file is uploaded once however many of its signatures are
measured.

A model that fails to load or run is data: its `MeasureResult.error` says why and the batch goes
on. If the agent process itself dies while measuring a model (a runtime crash), that model gets
an error result and the agent is started again on the rest of the chunk.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgenas.device.profile import DeviceProfile
from edgenas.device.transport import CommandError, ConnectionLost, Transport, open_transport
from edgenas.errors import DeviceError, EdgeNASError

log = logging.getLogger(__name__)

AGENT_PATH = Path(__file__).with_name("agent.py")
AGENT_REMOTE_NAME = "edgenas_agent.py"


@dataclass(frozen=True)
class MeasureResult:
    """The latency of one model on a device, or why it could not be measured."""

    model: str  # the model file's name
    path: Path | None = None  # the local model file
    signature: str | None = None  # the signature of the file that was timed (None: the whole file)
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None  # population standard deviation of the timed runs
    p10_ms: float | None = None
    p90_ms: float | None = None
    count: int = 0  # number of timed runs
    error: str | None = None  # None on success
    info: dict = field(default_factory=dict)  # e.g. {"providers": [...]} actually used

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MeasureResult":
        d = dict(d)
        if d.get("path") is not None:
            d["path"] = Path(d["path"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


_STAT_KEYS = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms")

NOTABLE_STEAL = 0.05  # a share of the device's CPU time taken by a VM's host that is worth saying
NOTABLE_OTHER = 0.10  # a share used by other processes that is


@dataclass(frozen=True)
class CpuLoad:
    """What else the device's CPUs did while models were timed, from the agent's counters: the
    share of all CPU time a VM's host took away (steal) and the share other processes used."""

    steal: float
    other: float
    seconds: float  # CPU seconds counted (every CPU), at the kernel's 10 ms tick

    @classmethod
    def of(cls, results: Sequence[MeasureResult]) -> "CpuLoad | None":
        """The load over the agent runs of `results`, None where none carries counters. Each
        result's counters run from its agent run's start (the agent's docstring), so a run counts
        once, with its latest counters."""
        latest: dict[str, dict] = {}
        for r in results:
            cpu = r.info.get("cpu") if r.ok else None
            if isinstance(cpu, dict) and float(cpu.get("ticks", 0)) >= float(latest.get(cpu.get("job"), {}).get("ticks", -1)):
                latest[cpu.get("job")] = cpu
        ticks, idle, steal, own = (sum(float(c.get(k, 0.0)) for c in latest.values())
                                   for k in ("ticks", "idle", "steal", "own"))
        if ticks <= 0:
            return None
        # USER_HZ, the unit of /proc/stat and os.times, is 100 on every Linux architecture
        return cls(steal=steal / ticks, other=max(ticks - idle - steal - own, 0.0) / ticks, seconds=ticks / 100)

    @classmethod
    def from_dict(cls, d: Any) -> "CpuLoad | None":
        """The load a table header records (to_dict), None for anything else."""
        try:
            return cls(float(d["steal"]), float(d["other"]), float(d["cpu_seconds"]))
        except (KeyError, TypeError, ValueError):
            return None

    def merged(self, other: "CpuLoad | None") -> "CpuLoad":
        """The load over both measurements (weighted by their CPU seconds)."""
        if other is None or other.seconds + self.seconds <= 0:
            return self
        w = self.seconds + other.seconds
        return CpuLoad((self.steal * self.seconds + other.steal * other.seconds) / w,
                       (self.other * self.seconds + other.other * other.seconds) / w, w)

    @property
    def notable(self) -> bool:
        return self.steal >= NOTABLE_STEAL or self.other >= NOTABLE_OTHER

    def to_dict(self) -> dict[str, float]:
        return {"steal": round(self.steal, 4), "other": round(self.other, 4), "cpu_seconds": round(self.seconds, 1)}

    def describe(self) -> str:
        """A clause for a warning: what took the device's CPUs away from the measurement."""
        parts = []
        if self.steal >= NOTABLE_STEAL:
            parts.append(f"the VM's host took {self.steal:.0%} of the device's CPU time (steal)")
        if self.other >= NOTABLE_OTHER:
            parts.append(f"other processes used {self.other:.0%}" + (" of it" if parts else " of the device's CPU time"))
        return " and ".join(parts) or f"the device was otherwise idle (steal {self.steal:.0%}, other processes {self.other:.0%})"


@contextlib.contextmanager
def _transport(profile: DeviceProfile, transport: Transport | None) -> Iterator[Transport]:
    if transport is not None:
        yield transport
    else:
        with open_transport(profile) as t:
            yield t


def _ensure_agent(t: Transport) -> str:
    """Upload the agent once per transport; returns its path on the device."""
    cached = getattr(t, "_edgenas_agent", None)
    if cached and cached[0] == t.tmpdir:
        return cached[1]
    remote = t.put(AGENT_PATH, AGENT_REMOTE_NAME)
    t._edgenas_agent = (t.tmpdir, remote)
    return remote


def _python_hint(profile: DeviceProfile) -> str:
    return (
        f"install Python 3 on the device (Debian/Raspberry Pi OS: sudo apt install python3; "
        f"Termux: pkg install python) or set 'python:' in {profile.source}"
    )


def _agent_args(profile: DeviceProfile) -> list[str]:
    o = profile.agent_options()
    args = ["--runtime", o["runtime"]]
    if "providers" in o:
        args += ["--providers", ",".join(o["providers"])]
    if "interpreter" in o:
        args += ["--interpreter", o["interpreter"]]
    return args


def device_fingerprint(profile: DeviceProfile, transport: Transport | None = None) -> dict[str, Any]:
    """Describe the device: CPU, cores, OS, Python, numpy, runtimes and providers.

    `missing` lists what the profile's runtime needs but the device lacks, each as
    {"what", "required", "hint"} where hint is the install command. A missing Python
    interpreter is reported there too (the rest of the dict is then empty).
    """
    with _transport(profile, transport) as t:
        agent = _ensure_agent(t)
        res = t.run([profile.python, agent, "--fingerprint", *_agent_args(profile)], timeout=profile.command_timeout)
    if res.rc == 127:
        return {
            "profile": profile.name,
            "python": None,
            "missing": [{"what": f"python ({profile.python})", "required": True, "hint": _python_hint(profile)}],
        }
    info = None
    for line in reversed(res.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                info = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if res.rc != 0 or not isinstance(info, dict):
        raise DeviceError(
            f"device '{profile.name}': the agent failed with status {res.rc} under {profile.python} "
            f"(it needs Python 3.7 or newer): {res.stderr.strip()[-500:] or '(no output)'}"
        )
    info["profile"] = profile.name
    info["profile_key"] = profile.key()
    return info


def _entries(models: Sequence) -> tuple[list[Path], list[str | None]]:
    files, signatures = [], []
    for m in models:
        path, signature = (m if isinstance(m, tuple) else (m, None))
        files.append(Path(path))
        signatures.append(None if signature is None else str(signature))
    return files, signatures


def measure_models(
    profile: DeviceProfile,
    paths: Sequence,
    on_result: Callable[[MeasureResult], None] | None = None,
    *,
    chunk_size: int | None = None,
    transport: Transport | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[MeasureResult]:
    """Measure every model on the device; results come back in the order of `paths`, each a
    file or a `(file, signature)` pair (see the module docstring).

    `on_result(result)` is called for each model as soon as it is measured. With `rounds` > 1
    no result arrives until a chunk's last round, so `on_stage(text)` tells what the agent is
    doing meanwhile ("warm-up 12/500", "round 2/5"), for a progress display. `chunk_size`
    uploads and measures that many models at a time (all chunks share one connection and one
    agent upload), which bounds disk use on the device. Pass an open `transport` to reuse it.
    Raises `ConnectionLost` / `DeviceError` if the device drops out; results already passed
    to `on_result` are kept by the caller.
    """
    files, signatures = _entries(paths)
    for p in set(files):
        if not p.is_file():
            raise EdgeNASError(f"model file {p} not found")
    if not files:
        return []
    if chunk_size is None:
        chunk_size = len(files)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    results: list[MeasureResult | None] = [None] * len(files)

    def deliver(i: int, r: MeasureResult) -> None:
        results[i] = r
        if on_result is not None:
            on_result(r)

    with _transport(profile, transport) as t:
        agent = _ensure_agent(t)
        for start in range(0, len(files), chunk_size):
            idx = list(range(start, min(start + chunk_size, len(files))))
            first = {}  # each file once: the index of its first model in the chunk
            for i in idx:
                first.setdefault(files[i], i)
            names = {f: f"m{i:05d}{f.suffix}" for f, i in first.items()}
            remote = dict(zip(names, t.put_many([(f, n) for f, n in names.items()])))
            remote_of = {i: remote[files[i]] for i in idx}
            try:
                _run_chunk(profile, t, agent, files, idx, remote_of, deliver, on_stage, signatures)
            finally:
                if t.tmpdir:
                    with contextlib.suppress(DeviceError):
                        t.remove(names.values())
    return [r for r in results if r is not None]


def measure_written(
    profile: DeviceProfile,
    items: Sequence[Any],
    write: Callable[[Sequence[Any], Path, Callable[[str], None]], Sequence[Path]] | None,
    *,
    transport: Transport | None = None,
    chunk_size: int = 25,
    repeats: int = 1,
    on_result: Callable[[Any, MeasureResult], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[MeasureResult]:
    """Write, upload, measure and remove the model files of `items`, a chunk at a time.

    write(chunk, directory, on_stage) writes the models of the chunk's items into `directory` (a
    fresh temporary directory) and returns one model per item in the chunk's order: a file, or a
    `(file, signature)` pair where several items are signatures of one file
    (`edgenas.export.tflite_layers`); it may report its progress through on_stage(text). With
    write=None the items are existing model files, measured and left in place. Each chunk is measured `repeats` times, in whole passes
    over the chunk, so that the repeats of one model lie apart in time. on_result(item, result)
    is called as each result arrives, in pass order; results are returned in the same order.
    One transport (one SSH connection, one agent upload) serves every chunk.
    """
    if chunk_size < 1 or repeats < 1:
        raise ValueError("chunk_size and repeats must be at least 1")
    stage = on_stage or (lambda _text: None)
    results: list[MeasureResult] = []
    with _transport(profile, transport) as t:
        for start in range(0, len(items), chunk_size):
            chunk = list(items[start:start + chunk_size])
            with tempfile.TemporaryDirectory(prefix="edgenas-models-") as d:
                files, signatures = _entries(chunk if write is None else write(chunk, Path(d), stage))
                if len(files) != len(chunk):
                    raise ValueError(f"write() returned {len(files)} model files for {len(chunk)} items")
                paths = [f if s is None else (f, s) for f, s in zip(files, signatures)]
                item_of = {(f, s): item for f, s, item in zip(files, signatures, chunk)}
                if len(item_of) != len(chunk):
                    raise ValueError("write() returned the same model file (or signature) for two items")

                def arrived(r: MeasureResult) -> None:
                    if on_result is not None:
                        on_result(item_of[(r.path, r.signature)], r)

                for _ in range(repeats):
                    results += measure_models(profile, paths, on_result=arrived, transport=t, on_stage=on_stage)
    return results


def _run_chunk(profile, t: Transport, agent: str, files, idx: list[int], remote_of, deliver, on_stage=None,
               signatures=None) -> None:
    """Run the agent over `idx`; restart it past a model that crashes it."""
    signatures = signatures or [None] * len(files)
    pending = list(idx)

    def failed(i: int, error: str) -> MeasureResult:
        return MeasureResult(model=files[i].name, path=files[i], signature=signatures[i], error=error)

    while pending:
        job = dict(profile.agent_options())
        job["models"] = [{"name": files[i].name, "path": remote_of[i],
                          **({"signature": signatures[i]} if signatures[i] is not None else {})} for i in pending]
        with tempfile.TemporaryDirectory(prefix="edgenas-job-") as d:
            job_file = Path(d) / "job.json"
            job_file.write_text(json.dumps(job))
            job_remote = t.put(job_file, "job.json")
        ready = False
        current: int | None = None  # position in `pending` being measured
        done: set[int] = set()
        fatal: str | None = None
        last_stage = ["", 0.0]  # the kind of stage last given to on_stage, and when
        try:
            for line in t.stream([profile.python, agent, "--job", job_remote], timeout=profile.command_timeout):
                msg = _parse(line)
                if msg is None:
                    continue
                if "fatal" in msg:
                    fatal = str(msg["fatal"])
                elif msg.get("event") == "ready":
                    ready = True
                elif msg.get("event") == "begin":
                    current = int(msg["index"])
                    if on_stage is not None and profile.rounds > 1:
                        # A new round at once; otherwise at most twice a second.
                        kind = f"round {msg['round']}" if "round" in msg else "warm-up"
                        if kind != last_stage[0] or time.monotonic() - last_stage[1] > 0.5:
                            last_stage[:] = [kind, time.monotonic()]
                            on_stage(_stage(msg, len(pending), profile.rounds))
                elif "model" in msg and "index" in msg and "event" not in msg:
                    pos = int(msg["index"])
                    if 0 <= pos < len(pending) and pos not in done:
                        done.add(pos)
                        deliver(pending[pos], _result(msg, files[pending[pos]], signatures[pending[pos]]))
        except ConnectionLost:
            if len(done) < len(pending):
                raise
            # Every result arrived; only the exit status was lost. The next upload (if any)
            # will raise again, and the caller already has all of this chunk.
            log.warning("%s: connection lost after the last result of a chunk", t.describe())
            return
        except CommandError as exc:
            if fatal is not None:
                raise DeviceError(f"{t.describe()}: {fatal}") from None
            if exc.rc == 127:
                raise DeviceError(f"{t.describe()}: python interpreter {profile.python!r} not found; {_python_hint(profile)}") from None
            if not ready or current is None or current in done:
                raise DeviceError(f"{t.describe()}: the agent failed before measuring: {exc}") from None
            crashed = pending[current]
            log.warning("%s: the agent died while measuring %s (status %d); continuing with the rest",
                        t.describe(), files[crashed].name, exc.rc)
            detail = exc.stderr.strip()[-500:]
            deliver(crashed, failed(crashed, f"the agent process died while measuring this model (status {exc.rc})"
                                    + (f": {detail}" if detail else "")))
            done.add(current)
            pending = [pending[p] for p in range(len(pending)) if p not in done]
            continue
        if fatal is not None:
            raise DeviceError(f"{t.describe()}: {fatal}")
        for pos, i in enumerate(pending):
            if pos not in done:
                deliver(i, failed(i, "the agent reported no result"))
        pending = []


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def _result(msg: dict, path: Path, signature: str | None = None) -> MeasureResult:
    if msg.get("error") is not None:
        return MeasureResult(model=path.name, path=path, signature=signature, error=str(msg["error"]))
    info = {k: v for k, v in msg.items()
            if k not in _STAT_KEYS and k not in ("index", "model", "count", "error", "signature")}
    return MeasureResult(
        model=path.name,
        path=path,
        signature=signature,
        count=int(msg.get("count", 0)),
        info=info,
        **{k: float(msg[k]) for k in _STAT_KEYS},
    )


def _stage(begin: dict, models: int, rounds: int) -> str:
    """What a "begin" event of an interleaved job says the agent is doing."""
    if "round" in begin:
        return f"round {int(begin['round']) + 1}/{rounds}"
    return f"warm-up {int(begin['index']) + 1}/{models}"
