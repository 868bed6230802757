"""TFLite latency tables: layers batched as signatures of few files, each signature timed alone
and the same as the layer in a file of its own; int8 tables (litert-torch PT2E, calibrated on a
trained supernet's activations) and fp32 tables built through `edgenas profile`."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, require_or_skip

require_or_skip(importlib.util.find_spec("litert_torch") is not None,
                "litert-torch is not installed (pip install 'edgenas[tflite]')")

from edgenas.cli import main  # noqa: E402
from edgenas.errors import EdgeNASError  # noqa: E402
from edgenas.export.formats import FORMATS  # noqa: E402
from edgenas.export.tflite_layers import convert_layers_fp32, convert_layers_int8, signature_structure  # noqa: E402
from edgenas.latency import LatencyTable, enumerate_ops, validate_table  # noqa: E402
from edgenas.nn.static import build_op  # noqa: E402
from edgenas.space import load_space, smallest  # noqa: E402
from edgenas.space.arch import largest  # noqa: E402

AGENT = REPO / "edgenas" / "device" / "agent.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def _alone(structure: dict) -> list:
    """The only signature of a file of one layer, without the TRANSPOSE back to NCHW that ends a
    file whose output is a feature map (a layer of a table keeps NHWC, as inside a network)."""
    (ops,) = structure.values()
    return ops[:-1] if ops and ops[-1][0] == "TRANSPOSE" else ops


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    """Three mbv3-w1.0 layers (the stem at 160 px, an SE block, the
    classifier) in one file per precision, and each written alone by FORMATS[...].write."""
    d = tmp_path_factory.mktemp("sig")
    ops = enumerate_ops(load_space("mbv3-w1.0"), [160])
    chosen = [ops[0], next(o for o in ops if o.kind == "mbconv" and o.se_ch and o.in_size == 20), ops[-1]]
    torch.manual_seed(0)
    modules = [build_op(o).eval() for o in chosen]
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(8, o.in_ch, o.in_size, o.in_size, generator=g) for o in chosen]
    names = ["stem", "se_block", "logits"]
    convert_layers_fp32(modules, [(o.in_ch, o.in_size, o.in_size) for o in chosen], names, d / "many.tflite")
    convert_layers_int8(modules, inputs, names, d / "many8.tflite")
    for name, o, m, x in zip(names, chosen, modules, inputs):
        FORMATS["tflite"].write(m, (1, o.in_ch, o.in_size, o.in_size), d / f"{name}.tflite")
        FORMATS["tflite-int8"].write(m, (1, o.in_ch, o.in_size, o.in_size), d / f"{name}8.tflite", calib_images=x)
    return d, names


def test_each_signature_holds_the_layer_as_written_alone(layers):
    # The same operators, tensor shapes, types and (int8) scales and zero points as the layer
    # converted on its own by the export path.
    d, names = layers
    for many, suffix in (("many.tflite", ""), ("many8.tflite", "8")):
        got = signature_structure(d / many)
        assert sorted(got) == sorted(names)
        for name in names:
            assert got[name] == _alone(signature_structure(d / f"{name}{suffix}.tflite")), (many, name)
        assert any(op[0] == "CONV_2D" for op in got["stem"])
    types = {t[1] for _, ts in signature_structure(d / "many8.tflite")["se_block"] for t in ts if t is not None}
    assert 9 in types and 0 not in types  # full integer: int8 tensors (TFLite TensorType 9), no float32 (0) one


def _agent(job: dict, tmp_path) -> dict:
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = subprocess.run([sys.executable, str(AGENT), "--job", str(tmp_path / "job.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    return {m["model"]: m for m in lines if "index" in m and "event" not in m}


def test_a_signature_times_as_the_layer_in_its_own_file(layers, tmp_path):
    # Each signature of the many-layer file is timed as its own layer alone, within 2x, and not as
    # the file's subgraphs together; an agent that timed every subgraph for each signature would
    # fail this on every try (which subgraph runs is what the agent reports, checked below). A shared machine's slow
    # spell can distort one try, so up to three are made; the exact structure of each signature
    # is checked above.
    d, names = layers
    for many, suffix in (("many.tflite", ""), ("many8.tflite", "8")):
        models = []
        for name in names:
            models += [{"name": f"sig-{name}", "path": str(d / many), "signature": name},
                       {"name": f"alone-{name}", "path": str(d / f"{name}{suffix}.tflite")}]
        tries = []
        for _ in range(3):
            res = _agent({"runtime": "tflite", "threads": 1, "warmup": 5, "runs": 60, "rounds": 6, "models": models},
                         tmp_path)
            assert all("error" not in r for r in res.values()), res
            assert all(res[f"sig-{n}"]["signature"] == n for n in names)
            sig = {n: res[f"sig-{n}"]["median_ms"] for n in names}
            alone = {n: res[f"alone-{n}"]["median_ms"] for n in names}
            tries.append((sig, alone))
            # Within 2x of the layer alone, and well below all three together: an agent that ran
            # every subgraph for each signature would measure their sum (these small layers cost
            # about as much as one call, so they are not told apart by their times).
            ok = all(0.5 < sig[n] / alone[n] < 2.0 and sig[n] < 0.75 * sum(alone.values()) for n in names)
            if ok:
                break
        else:
            pytest.fail(f"{many}: a signature was not timed as its own layer in any try: {tries}")


def test_the_agent_reports_a_missing_signature_and_goes_on(layers, tmp_path):
    d, _ = layers
    res = _agent({"runtime": "tflite", "threads": 1, "warmup": 1, "runs": 2, "models": [
        {"name": "bad", "path": str(d / "many.tflite"), "signature": "nope"},
        {"name": "good", "path": str(d / "many.tflite"), "signature": "logits"}]}, tmp_path)
    assert "nope" in res["bad"]["error"] and res["good"]["median_ms"] > 0


@pytest.fixture(scope="module")
def tables(tmp_path_factory, tiny_supernet):
    """A TFLite int8 and a TFLite fp32 table of mbv3-tiny at 24 px, built by `edgenas profile`."""
    d = tmp_path_factory.mktemp("tflite-tables")
    base = {"name": "local-tflite", "transport": "local", "runtime": "tflite", "threads": 1, "warmup": 1, "runs": 3}
    (d / "int8.yaml").write_text(yaml.safe_dump(dict(base, precision="int8")))
    (d / "fp32.yaml").write_text(yaml.safe_dump(base))
    common = ["--space", "mbv3-tiny", "--resolutions", "24", "--calibrate", "4", "-q"]
    assert main(["profile", str(d / "int8.yaml"), *common, "--supernet", str(tiny_supernet), "--calib-images", "16",
                 "--out", str(d / "t8.yaml")]) == 0
    assert main(["profile", str(d / "fp32.yaml"), *common, "--out", str(d / "t32.yaml")]) == 0
    return d


def test_tflite_tables_are_built_described_and_predict(tables):
    space = load_space("mbv3-tiny")
    for name, precision, fmt in (("t8.yaml", "int8", "tflite-int8"), ("t32.yaml", "fp32", "tflite")):
        table = LatencyTable.load(tables / name)
        h = table.header
        assert table.precision == precision and h["runtime"] == "tflite", name
        assert h["device"]["profile_key"].endswith("_int8") == (precision == "int8")
        assert h["model_format"]["format"] == fmt and h["model_format"]["precision"] == precision
        assert "signature" in h["model_format"]["batching"] and "timed as the layers" in h["model_format"]["overhead"]
        assert len(table) == len(enumerate_ops(space, [24])) and all(e["median"] > 0 for e in table.ops.values())
        assert len(h["calibration"]["networks"]) == 4
        assert 0 < table.predict(smallest(space, 24), space) < table.predict(largest(space, 24), space)
    q = LatencyTable.load(tables / "t8.yaml").header["model_format"]["quantization"]
    assert "per-channel" in q and "real activations" in q and "digits training images" in q


def test_a_tflite_table_of_one_precision_is_refused_at_another(tables, tiny_supernet, tmp_path, capsys):
    with pytest.raises(EdgeNASError, match="is int8 but profile local-tflite measures fp32"):
        validate_table(LatencyTable.load(tables / "t8.yaml"), tables / "fp32.yaml", 2, progress=False, save=False)
    capsys.readouterr()
    arch = str(smallest(load_space("mbv3-tiny"), 24))
    assert main(["export", "--supernet", str(tiny_supernet), "--arch", arch, "--latency-table", str(tables / "t8.yaml"),
                 "--format", "tflite", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is an int8 tflite table" in err and "--format tflite-int8" in err
    assert not (tmp_path / "e").exists()


def test_bad_tflite_int8_requests_are_one_line_errors(tables, tmp_path, capsys):
    capsys.readouterr()
    # no trained supernet to calibrate the layers on
    assert main(["profile", str(tables / "int8.yaml"), "--space", "mbv3-tiny", "--resolutions", "24",
                 "--out", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--supernet CKPT" in err and not (tmp_path / "t.yaml").exists()
    # a delegate without int8 kernels
    gpu = dict(yaml.safe_load((tables / "int8.yaml").read_text()), runtime_options={"delegate": "gpu"})
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(gpu))
    assert main(["profile", str(tmp_path / "gpu.yaml"), "--space", "mbv3-tiny", "--out", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "xnnpack or none with precision int8" in err and "gpu" in err
    assert not (tmp_path / "t.yaml").exists()


def test_a_file_of_one_int8_layer_holds_it_as_written_alone(tmp_path):
    # A table's last file of a resolution can hold a single layer: one PT2E pass of one input.
    op = enumerate_ops(load_space("mbv3-tiny"))[-1]
    torch.manual_seed(0)
    module = build_op(op).eval()
    x = torch.randn(4, op.in_ch, op.in_size, op.in_size, generator=torch.Generator().manual_seed(0))
    convert_layers_int8([module], [x], ["only"], tmp_path / "one.tflite")
    FORMATS["tflite-int8"].write(module, (1, op.in_ch, op.in_size, op.in_size), tmp_path / "alone.tflite",
                                 calib_images=x)
    got = signature_structure(tmp_path / "one.tflite")
    assert list(got) == ["only"]
    assert got["only"] == _alone(signature_structure(tmp_path / "alone.tflite"))
