"""Conversions in worker processes, one per host core.

A litert-torch conversion runs on one core (its CPU time equals its wall time), so a TFLite
latency table's layer files (`edgenas.latency.formats.TFLiteFormat.write_ops`, ~1.3 s per fp32
and ~1.8 s per int8 layer) and the whole subnets written for its calibration (`write_nets`) are
converted in several processes at once:

    paths = run_jobs(convert_layers_fp32, len(groups), lambda i: (layers[i], shapes[i], names[i], paths[i]),
                     on_done=lambda i, path: print("done", path))

`make_args(i)` builds job i's arguments in the calling process (modules, example inputs,
recorded calibration activations: anything that pickles; tensors travel through shared memory)
just before the job is handed to a worker, so only a few jobs' inputs exist at a time. Workers
are started with 'spawn' (torch is not fork-safe), run one torch thread each, ignore SIGINT
(the caller handles Ctrl-C and stops them), do not import the caller's `__main__` (a script
without a main guard is not run again in each worker; `fn` and its arguments must come from
edgenas or a library) and send what they log back to the caller's loggers (litert-torch's
output goes to the DEBUG log, as in this process). A job that raises raises the
same exception here; a worker that dies (e.g. killed for memory) is an `EdgeNASError` saying so.
On any exception, Ctrl-C included, the pool is shut down and its processes terminated before
it propagates.

The number of workers: `EDGENAS_CONVERT_WORKERS` (1 converts in this process, exactly as
before), else the host's usable cores (at most `MAX_WORKERS`), never more than there are jobs.
The caller converts everything before it measures anything, so no measurement runs beside a
conversion.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import types
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, ContextManager, Iterator

from edgenas.errors import EdgeNASError

ENV = "EDGENAS_CONVERT_WORKERS"
MAX_WORKERS = 8  # an int8 worker converting mbv3-w1.0 layers held up to 1.9 GB (RSS)


def convert_workers(jobs: int) -> int:
    """Worker processes for `jobs` conversions: EDGENAS_CONVERT_WORKERS, else the usable cores
    (at most MAX_WORKERS); at most `jobs`, at least 1."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        n = int(raw) if raw.isdigit() else 0
        if n < 1:
            raise EdgeNASError(f"{ENV} must be a number of conversion processes, 1 or more (1: convert in this "
                               f"process), not {raw!r}")
    else:
        n = min(_cores(), MAX_WORKERS)
    return max(1, min(n, jobs))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_jobs(fn: Callable, count: int, make_args: Callable[[int], tuple], *, workers: int | None = None,
             on_done: Callable[[int, Any], None] | None = None,
             lock: ContextManager | None = None) -> list:
    """[fn(*make_args(i)) for i in range(count)], in `workers` processes (None: `convert_workers`).

    `fn` must be importable by name (a module-level function or a bound method of a picklable
    object). on_done(i, result) is called here as each job finishes, in finishing order. With one
    worker everything runs in this process, in order, each call of `fn` under `lock`."""
    n = convert_workers(count) if workers is None else max(1, min(int(workers), count))
    results: list = [None] * count
    if n == 1:
        for i in range(count):
            args = make_args(i)
            with lock if lock is not None else contextlib.nullcontext():
                results[i] = fn(*args)
            if on_done is not None:
                on_done(i, results[i])
        return results
    import multiprocessing

    level = logging.getLogger("edgenas").getEffectiveLevel()
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
    procs: dict[int, Any] = {}  # every worker started, kept here: the pool forgets those that die
    try:
        running: dict[Future, int] = {}
        submitted = 0
        while submitted < count or running:
            while submitted < count and len(running) < 2 * n:  # one queued behind each busy worker
                args = make_args(submitted)
                with _main_hidden():  # submit() starts the workers
                    running[pool.submit(_call, fn, args, level)] = submitted
                procs.update((p.pid, p) for p in _processes(pool))
                submitted += 1
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=running.get):
                i = running.pop(future)
                try:
                    results[i], records = future.result()
                except BrokenProcessPool:
                    _stop(pool, procs.values())
                    codes = sorted({p.exitcode for p in procs.values()} - {None, 0, -signal.SIGTERM})
                    raise EdgeNASError(
                        f"a conversion process stopped unexpectedly (exit code {', '.join(map(str, codes)) or '?'}), "
                        f"perhaps for lack of memory; set {ENV} to fewer processes ({ENV}=1 converts in this "
                        "process)") from None
                for record in records:
                    logging.getLogger(record["name"]).handle(logging.makeLogRecord(record))
                if on_done is not None:
                    on_done(i, results[i])
    except BaseException:
        _stop(pool, procs.values())
        raise
    pool.shutdown(wait=True)
    return results


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """A blank `__main__` while workers start: 'spawn' would otherwise run the caller's script
    again in each worker (and, without an `if __name__ == "__main__"` guard, everything it does
    before converting). Jobs are edgenas or library functions; nothing of __main__ is needed."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _processes(pool: ProcessPoolExecutor) -> list:
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop(pool: ProcessPoolExecutor, procs) -> None:
    """Cancel what has not started and end every worker now (Python 3.11 has no public call for it)."""
    procs = list(procs) + _processes(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join(timeout=10)


def _init_worker() -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the caller stops us
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    torch.set_num_threads(1)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        d = dict(record.__dict__, msg=record.getMessage(), args=None, exc_info=None)
        if record.exc_info and not record.exc_text:
            d["exc_text"] = logging.Formatter().formatException(record.exc_info)
        self.records.append(d)


def _call(fn: Callable, args: tuple, level: int) -> tuple[Any, list[dict]]:
    """In a worker: fn(*args), and the records edgenas logged meanwhile at the caller's level."""
    logger = logging.getLogger("edgenas")
    logger.setLevel(level)
    handler = _Collect()
    logger.addHandler(handler)
    try:
        return fn(*args), handler.records
    finally:
        logger.removeHandler(handler)
