"""TFLite files converted in worker processes (edgenas.export.pool) are the files the serial path
writes: layer files (fp32 and int8, signatures, ops, quantization) and whole subnets, byte for
byte; a conversion that fails in a worker fails as it does here. mbv3-tiny, a few layers."""
import importlib.util
import multiprocessing
import os

import pytest
import numpy as np
import torch

from conftest import require_or_skip

require_or_skip(importlib.util.find_spec("litert_torch") is not None,
                "litert-torch is not installed (pip install 'edgenas[tflite]')")

from edgenas.export.pool import run_jobs  # noqa: E402
from edgenas.export.tflite_layers import convert_layers_fp32, signature_structure  # noqa: E402
from edgenas.latency.formats import TFLiteFormat  # noqa: E402
from edgenas.latency.int8 import ActivationSource, Int8TFLiteFormat  # noqa: E402
from edgenas.latency.ops import enumerate_ops  # noqa: E402
from edgenas.nn.static import build_op  # noqa: E402
from edgenas.space import load_space, sample  # noqa: E402
from edgenas.supernet import Supernet  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source():
    """A seeded random mbv3-tiny supernet and random images: what int8 layers are calibrated on."""
    torch.manual_seed(0)
    return ActivationSource(Supernet(load_space("mbv3-tiny")).eval(), torch.randn(8, 3, 28, 28), "8 random images")


def _ops():
    ops = enumerate_ops(load_space("mbv3-tiny"), [24])
    return [ops[0], next(o for o in ops if o.kind == "mbconv" and o.se_ch), ops[len(ops) // 2], ops[-1]]


def _write(fmt, workers, directory):
    fmt.layers_per_file, fmt.workers = 2, workers
    stages = []
    out = fmt.write_ops(_ops(), directory, stages.append)
    return out, stages


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_layer_files_from_workers_are_the_serial_files(precision, source, tmp_path):
    make = TFLiteFormat if precision == "fp32" else (lambda: Int8TFLiteFormat(source))
    serial, serial_stages = _write(make(), 1, tmp_path / "serial")
    parallel, parallel_stages = _write(make(), 2, tmp_path / "parallel")
    assert [(p.name, s) for p, s in serial] == [(p.name, s) for p, s in parallel]
    files = sorted({p.name for p, _ in serial})
    assert len(files) == 2
    for name in files:
        a, b = tmp_path / "serial" / name, tmp_path / "parallel" / name
        assert signature_structure(a) == signature_structure(b)  # signatures, ops, shapes, types, scales, zero points
        assert a.read_bytes() == b.read_bytes(), name
    if precision == "int8":  # the quantization compared is there: int8 tensors with scales
        tensors = [t for ops in signature_structure(tmp_path / "parallel" / files[0]).values()
                   for _, ts in ops for t in ts if t is not None]
        assert any(t[1] == 9 and t[2] for t in tensors)
    # progress per finished file, the same in both
    assert [s for s in serial_stages if s.startswith("converted")] == [
        "converted 1/2 files (2/4 layers)", "converted 2/2 files (4/4 layers)"]
    assert [s for s in parallel_stages if s.startswith("converted")] == serial_stages[1:]
    assert "2 at a time" in parallel_stages[0] and "1 at a time" in serial_stages[0]
    assert not [c for c in multiprocessing.active_children() if c.is_alive() and os.path.exists(f"/proc/{c.pid}")]


def test_subnets_from_workers_are_the_serial_files(tmp_path):
    # fp32: an int8 mbv3-tiny subnet takes minutes to convert on a loaded 2-core machine
    space = load_space("mbv3-tiny")
    archs = [sample(space, np.random.default_rng(3)) for _ in range(2)]
    torch.manual_seed(0)
    supernet = Supernet(space).eval()
    files = {}
    for workers in (1, 2):
        fmt = TFLiteFormat()
        fmt.workers = workers
        d = tmp_path / str(workers)
        d.mkdir()
        stages = []
        nets = [(lambda a=a: supernet.materialize(a), (1, 3, a.resolution, a.resolution), d / f"net{i}.tflite")
                for i, a in enumerate(archs)]
        assert fmt.write_nets(nets, stages.append) == [d / "net0.tflite", d / "net1.tflite"]
        assert stages == ["exporting 2", "exported 1/2", "exported 2/2"]
        files[workers] = [p.read_bytes() for p in sorted(d.iterdir())]
    assert files[1] == files[2]


def test_a_conversion_that_fails_in_a_worker_fails_as_it_does_here(tmp_path):
    ops = _ops()[:2]
    layers = [build_op(o).eval() for o in ops]

    def args(i):  # the second file's input has one channel too many: torch.export fails on it
        o = ops[i]
        return [layers[i]], [(o.in_ch + i, o.in_size, o.in_size)], [f"l{i}"], tmp_path / f"{i}.tflite"

    errors = []
    for workers in (1, 2):
        with pytest.raises(Exception) as e:
            run_jobs(convert_layers_fp32, 2, args, workers=workers)
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1]
    assert not (tmp_path / "1.tflite").exists()
