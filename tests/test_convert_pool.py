"""edgenas.export.pool: conversions in worker processes (spawned, one torch thread each), the
serial path with one worker, failures raised as the serial path raises them, and no worker left
behind, also after Ctrl-C. Cheap jobs (library functions) here; tests/test_tflite_parallel.py
converts real TFLite files."""
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from edgenas.errors import EdgeNASError
from edgenas.export.pool import ENV, MAX_WORKERS, convert_workers, run_jobs
from edgenas.space import load_space


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie has ended; only its exit status is left


def _no_children() -> bool:
    """No worker process of this test process is left running (checked by PID, in /proc:
    multiprocessing's own list once kept a worker the OS had already reaped)."""
    left = [c for c in multiprocessing.active_children() if not _gone(c.pid)]
    assert not left, [(c.name, c.pid) for c in left]
    return True


def test_the_number_of_workers_comes_from_the_cores_or_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert convert_workers(100) == min(cores, MAX_WORKERS) and convert_workers(1) == 1
    monkeypatch.setenv(ENV, "3")
    assert convert_workers(10) == 3 and convert_workers(2) == 2  # never more than there are jobs
    monkeypatch.setenv(ENV, "1")
    assert convert_workers(10) == 1
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(EdgeNASError) as e:
            convert_workers(10)
        assert ENV in str(e.value) and repr(bad) in str(e.value) and "\n" not in str(e.value)


def test_one_worker_runs_every_job_here_in_order():
    done = []
    assert run_jobs(os.getpid, 3, lambda i: (), workers=1, on_done=lambda i, r: done.append(i)) == [os.getpid()] * 3
    assert done == [0, 1, 2] and _no_children()


def test_jobs_run_in_worker_processes_that_end_with_the_call():
    done = []
    pids = run_jobs(os.getpid, 4, lambda i: (), workers=2, on_done=lambda i, r: done.append(i))
    assert sorted(done) == [0, 1, 2, 3] and len(pids) == 4
    assert os.getpid() not in pids and 1 <= len(set(pids)) <= 2
    assert _no_children() and all(_gone(p) for p in set(pids))
    assert run_jobs(torch.get_num_threads, 2, lambda i: (), workers=2) == [1, 1]  # one torch thread per worker


def test_what_a_worker_logs_reaches_this_process(caplog):
    log = logging.getLogger("edgenas.export.tflite_export")  # where litert-torch's output is logged, at DEBUG
    with caplog.at_level(logging.DEBUG, logger="edgenas"):
        run_jobs(log.debug, 2, lambda i: ("printed %s", f"job {i}"), workers=2)
    got = [r for r in caplog.records if r.name == log.name]
    assert sorted(r.getMessage() for r in got) == ["printed job 0", "printed job 1"]
    assert all(r.levelno == logging.DEBUG and r.process != os.getpid() for r in got)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgenas"):  # below the level here: not sent
        run_jobs(log.debug, 2, lambda i: ("printed %s", f"job {i}"), workers=2)
    assert not [r for r in caplog.records if r.name == log.name]


def test_a_failing_job_raises_here_what_it_raises_in_this_process():
    # an EdgeNASError (the CLI's one line) and any other exception: the same type and message
    for fn, args in ((load_space, lambda i: ("mbv3-tiny" if i != 1 else "no-such-space",)),
                     (int, lambda i: ("12" if i != 2 else "twelve",))):
        errors = []
        for workers in (1, 2):
            with pytest.raises(Exception) as e:
                run_jobs(fn, 3, args, workers=workers)
            errors.append((type(e.value), str(e.value)))
            assert _no_children()
        assert errors[0] == errors[1], errors
    assert errors[0][0] is ValueError


def test_a_worker_that_dies_is_a_one_line_error():
    with pytest.raises(EdgeNASError) as e:
        run_jobs(os._exit, 2, lambda i: (3,), workers=2)
    message = str(e.value)
    assert "exit code 3" in message and f"{ENV}=1" in message and "\n" not in message
    assert _no_children()


_SCRIPT = """
import time
from edgenas.export.pool import run_jobs
run_jobs(time.sleep, 6, lambda i: (120,), workers=2)  # no main guard: the workers must not run this again
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_ctrl_c_leaves_no_worker_behind(tmp_path):
    script = tmp_path / "convert.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            time.sleep(0.5)
            workers = [p for p in _children(proc.pid) if b"spawn_main" in _cmdline(p)]
        assert len(workers) == 2, proc.communicate(timeout=30)
        everything = _children(proc.pid)  # the workers and multiprocessing's resource tracker
        time.sleep(3)  # let them start their jobs
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    time.sleep(1)
    assert all(_gone(p) for p in everything), [p for p in everything if not _gone(p)]
