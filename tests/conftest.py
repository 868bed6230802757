import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTE10 = REPO / "latency_tables" / "ofa-note10"


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip when a host resource is missing on a developer machine; under CI=true it must be there."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it)")
    pytest.skip(reason)


@pytest.fixture
def busy_cpus():
    """busy_cpus(n): start n processes that spin on a CPU each (for at most 5 minutes) and return
    their PIDs; the fixture stops each by its PID when the test ends."""
    started: list[subprocess.Popen] = []

    def start(n: int) -> list[int]:
        spin = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end:\n    pass\n"
        started.extend(subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n))
        return [p.pid for p in started]

    yield start
    for p in started:
        os.kill(p.pid, 9)
        p.wait(timeout=30)


@pytest.fixture
def ofa_note10_dir() -> Path:
    """OFA's published Note10 tables, shipped in the repo (latency_tables/ofa-note10)."""
    assert NOTE10.is_dir(), f"{NOTE10} is part of the repository"
    return NOTE10


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on a shared 2-core machine a second thread mostly waits for the first."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_table(space, path, name, scale=1.0, resolutions=None):
    """A latency table written by edgenas's own writer (`LatencyTable.save`) for `space` (at
    `resolutions`, default all), its entries proportional to each layer's MACs: a real table file
    in the current format, with made-up timings (no device needed)."""
    from edgenas.latency.ops import enumerate_ops
    from edgenas.latency.table import LatencyTable, entry

    table = LatencyTable.create(space, name, **({"resolutions": list(resolutions)} if resolutions else {}))
    for op in enumerate_ops(space, resolutions):
        ms = scale * (op.macs / 1e6 + 0.01)
        table.set(op.key, entry(ms, ms, 0.0, 1))
    return table.save(path)


# `edgenas demo` on a reduced budget (few steps, few subnets, ONNX only), as tests run it.
DEMO_QUICK = ["--samples", "30", "--formats", "onnx", "--set", "train.steps_per_epoch=3", "--set",
              "train.validate=false", "--set", "train.bn_recal_images=200"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One `edgenas demo --out DIR --json` run (about 1.5 min), shared by the tests that check it
    (test_demo) and those that chain its files into other commands (test_user_path)."""
    out = tmp_path_factory.mktemp("demo-run") / "demo"
    cmd = [sys.executable, "-m", "edgenas", "demo", "--out", str(out), *DEMO_QUICK, "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    return {"out": out, "cmd": cmd, "run": run}


DELETE = object()  # set_in: remove the key instead of setting it


def set_in(tree, path, value):
    """`tree` (nested dicts and lists) with the value at `path` set to `value`, or removed for
    DELETE; `value` itself for an empty path. Used to mutate real files in bad-input tests."""
    if not path:
        return value
    node = tree
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory):
    """A digits-tiny supernet checkpoint directory trained one short epoch on 200 images by
    `edgenas train` (about a minute): the trained weights and training images that int8 latency
    tables calibrate their layers on. Shared by the int8 table tests of every runtime."""
    from edgenas.cli import main

    out = tmp_path_factory.mktemp("tiny-supernet") / "train"
    code = main(["train", str(REPO / "configs" / "digits-tiny.yaml"), "--out", str(out), "-q",
                 "--set", "schedule.phases=[{name: full, epochs: 1, lr: 0.1}]", "--set", "data.limit=200"])
    assert code == 0
    return out
