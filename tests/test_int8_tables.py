"""int8 latency tables for onnxruntime: layers quantized as export quantizes a subnet, calibrated on
real activations of a trained supernet; precision mismatches are errors naming both."""
import numpy as np
import pytest
import torch
import yaml

from edgenas.cli import main
from edgenas.device import load_profile
from edgenas.errors import ConfigError, EdgeNASError
from edgenas.latency import LatencyTable, enumerate_ops, profile_device, validate_table
from edgenas.latency.int8 import ActivationSource, Int8OnnxFormat
from edgenas.space import load_space, smallest
from edgenas.train import checkpoint as ckpt
from edgenas.train.checkpoint import load_supernet

from conftest import REPO

LOCAL = REPO / "device_profiles" / "local-cpu.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_supernet):
    """The session's trained digits supernet (as run/train), and an int8 local profile."""
    d = tmp_path_factory.mktemp("int8")
    (d / "train").symlink_to(tiny_supernet, target_is_directory=True)
    profile = yaml.safe_load(LOCAL.read_text())
    profile.update(precision="int8", runs=3, warmup=1, rounds=1)
    (d / "int8.yaml").write_text(yaml.safe_dump(profile))
    return d


@pytest.fixture(scope="module")
def source(run):
    supernet, info = load_supernet(run / "train")
    from edgenas.data import load_dataset

    images = load_dataset(info.data).sample_images("train", 16, torch.Generator().manual_seed(0))
    return ActivationSource(supernet, images, "16 digits training images")


def test_every_layer_is_found_and_quantized_on_the_inputs_it_really_gets(source, tmp_path):
    import onnx
    from onnx import numpy_helper

    space = source.space
    ops = enumerate_ops(space, [24])
    fmt = Int8OnnxFormat(source)
    for op in ops:  # every layer of the space has a subnet that holds it and real inputs
        module, inputs = source.layer(op)
        assert tuple(inputs.shape[1:]) == (op.in_ch, op.in_size, op.in_size) and len(inputs) == 16
    op = next(o for o in ops if o.kind == "mbconv" and o.se_ch and o.in_size == 12)
    module, inputs = source.layer(op)
    with torch.no_grad():  # the layer carries the supernet's trained weights and computes its output
        assert torch.isfinite(module(inputs)).all()
    path = fmt.write_op(op, tmp_path / "op.onnx")
    model = onnx.load(path)
    kinds = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in kinds and kinds.count("DequantizeLinear") > kinds.count("Conv") >= 3
    # The input's quantization range is the range of the recorded activations (MinMax, uint8).
    first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == model.graph.input[0].name)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale, zero = float(inits[first.input[1]]), int(inits[first.input[2]])
    lo, hi = min(float(inputs.min()), 0.0), max(float(inputs.max()), 0.0)
    assert scale == pytest.approx((hi - lo) / 255, rel=1e-3) and 0 <= zero <= 255


def test_layers_and_subnets_quantized_in_workers_are_the_serial_files(source, tmp_path):
    """onnxruntime int8 layers and subnets are quantized in worker processes (edgenas.export.pool);
    the files are byte for byte the ones this process writes alone."""
    import multiprocessing
    import os

    from edgenas.space import sample

    space = source.space
    ops = enumerate_ops(space, [24])[:3]
    archs = [sample(space.replace(resolutions=(24,)), np.random.default_rng(5)) for _ in range(2)]
    files = {}
    for workers in (1, 2):
        fmt = Int8OnnxFormat(source)
        fmt.workers = workers
        d = tmp_path / f"w{workers}"
        d.mkdir()
        stages = []
        layers = fmt.write_ops(ops, d, stages.append)
        nets = fmt.write_nets([(lambda a=a: source.supernet.materialize(a), (1, 3, 24, 24), d / f"net{i}.onnx")
                               for i, a in enumerate(archs)], stages.append)
        assert [p.name for p in layers] == ["op00000.onnx", "op00001.onnx", "op00002.onnx"]
        assert stages[-1] == "exported 2/2" and "quantized 3/3 layers" in stages
        files[workers] = {p.name: p.read_bytes() for p in [*layers, *nets]}
    assert files[1] == files[2]
    assert fmt.write_op(ops[0], tmp_path / "alone.onnx").read_bytes() == files[1]["op00000.onnx"]
    assert not [c for c in multiprocessing.active_children() if c.is_alive() and os.path.exists(f"/proc/{c.pid}")]


@pytest.fixture(scope="module")
def int8_table(run):
    out = run / "t8.yaml"
    code = main(["profile", str(run / "int8.yaml"), "--space", "mbv3-tiny", "--resolutions", "24", "--calibrate", "6",
                 "--supernet", str(run / "train"), "--calib-images", "16", "--out", str(out), "-q"])
    assert code == 0
    return out


def test_an_int8_table_is_built_marked_and_predicts(int8_table):
    table = LatencyTable.load(int8_table)
    h = table.header
    assert table.precision == "int8" and h["device"]["profile_key"].endswith("_int8")
    assert h["model_format"]["format"] == "onnx-int8" and "real activations" in h["model_format"]["quantization"]
    assert len(table) == len(enumerate_ops(load_space("mbv3-tiny"), [24]))
    assert len(h["calibration"]["networks"]) == 6 and table.predict(smallest(table.space(), 24)) > 0
    # The table validates with its own profile, and refuses an fp32 one, naming both precisions.
    with pytest.raises(EdgeNASError, match="is int8 but profile local-cpu measures fp32"):
        validate_table(table, LOCAL, 2, progress=False, save=False)


def test_bad_int8_requests_are_one_line_errors(run, tmp_path, capsys):
    args = ["profile", str(run / "int8.yaml"), "--space", "mbv3-tiny", "--resolutions", "24", "--out", str(tmp_path / "t.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--supernet CKPT" in err and not (tmp_path / "t.yaml").exists()
    tflite = yaml.safe_load(LOCAL.read_text())
    tflite.update(runtime="tflite", precision="int8", runtime_options={"delegate": "gpu"})
    (tmp_path / "tflite8.yaml").write_text(yaml.safe_dump(tflite))
    with pytest.raises(ConfigError, match="delegate.*xnnpack or none with precision int8"):
        load_profile(tmp_path / "tflite8.yaml")
    # fp16: refused in one line that names what lacks it (edgenas.export.tflite_fp16 measured why).
    fp16 = dict(yaml.safe_load(LOCAL.read_text()), precision="fp16")
    (tmp_path / "fp16.yaml").write_text(yaml.safe_dump(fp16))
    with pytest.raises(ConfigError, match="CPU execution provider has no fp16 kernels"):
        load_profile(tmp_path / "fp16.yaml")
    fp16.update(runtime="tflite")
    fp16.pop("runtime_options", None)
    (tmp_path / "fp16.yaml").write_text(yaml.safe_dump(fp16))
    with pytest.raises(ConfigError, match="XNNPACK on x86 computes a tflite-fp16 file .* in fp32"):
        load_profile(tmp_path / "fp16.yaml")


def test_export_predicts_latency_only_for_files_of_the_tables_precision(run, int8_table, tmp_path, capsys):
    arch = str(smallest(load_space("mbv3-tiny"), 24))
    base = ["export", "--supernet", str(run / "train"), "--arch", arch, "--latency-table", str(int8_table),
            "--bn-images", "64", "--calib-images", "32", "--eval-images", "64"]
    capsys.readouterr()
    assert main(base + ["--format", "onnx", "--out", str(tmp_path / "fp32")]) == 2
    err = capsys.readouterr().err
    assert "is an int8 onnxruntime table" in err
    assert "--format onnx-int8" in err and not (tmp_path / "fp32").exists()
    # Exit 1 is allowed: a supernet trained one epoch on 200 images is near chance, so its int8
    # file may miss the agreement check; what is tested here is the prediction and the measurement.
    assert main(base + ["--format", "onnx-int8", "--out", str(tmp_path / "int8"),
                        "--measure", str(run / "int8.yaml")]) in (0, 1)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("onnx-int8") and "measured" in x)
    assert "predicted" in line and "_int8-mbv3-tiny" in line
