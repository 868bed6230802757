"""`edgenas export` and `edgenas.export`: ONNX / TFLite files, their checks, and the model card."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import require_or_skip  # noqa: E402
from edgenas.cli import main as cli_main  # noqa: E402
from edgenas.data import load_dataset  # noqa: E402
from edgenas.errors import EdgeNASError, MissingDependencyError  # noqa: E402
from edgenas.export import (  # noqa: E402
    ExportMetadata, OnnxRunner, ParityError, TFLiteRunner, export_subnet, load_card, read_metadata,
)
from edgenas.latency.table import LatencyTable  # noqa: E402
from edgenas.search import load_results  # noqa: E402
from edgenas.space import Arch, arch_cost, load_space, smallest  # noqa: E402
from edgenas.supernet import Supernet  # noqa: E402
from edgenas.train.bn import recalibrate_bn, resize  # noqa: E402

SPACE = "mbv3-tiny"
TRAIN_STEPS = 60


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(None)


@pytest.fixture(scope="module")
def supernet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Supernet(load_space(SPACE)).eval()


@pytest.fixture(scope="module")
def arch():
    return smallest(load_space(SPACE), 24)


@pytest.fixture(scope="module")
def trained(supernet, arch, digits):
    """The smallest subnet at 24 px, trained for a few SGD steps on digits (~90-95% test accuracy)."""
    net = supernet.materialize(arch).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    step = 0
    while step < TRAIN_STEPS:
        for x, y in digits.batches("train", 64, shuffle=True, generator=gen, drop_last=True):
            loss = torch.nn.functional.cross_entropy(net(resize(x, 24)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == TRAIN_STEPS:
                break
    recalibrate_bn(net, digits.train.tensors()[0])
    return net.eval()


def _meta(digits, **kw):
    return ExportMetadata(dataset="digits", class_names=digits.class_names, mean=digits.mean, std=digits.std, **kw)


class FakeTable:
    """What export needs from a latency table: a name, a device key, predict(arch)."""

    name = "fake-device_onnxruntime-cpu_t1-mbv3-tiny"
    header = {"device": {"profile_key": "fake-device_onnxruntime-cpu_t1"}}

    def predict(self, arch):
        return 1.5 + 0.001 * arch.resolution


# ------------------------------------------------------------------------------------- ONNX

def test_onnx_export_matches_pytorch_and_carries_metadata(tmp_path, trained, arch, digits):
    images, labels = digits.test.tensors()
    report = export_subnet(trained, "onnx", tmp_path, test_data=(images, labels),
                           metadata=_meta(digits, latency_tables=[FakeTable()]))
    assert report.valid, report.failures
    path = tmp_path / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17

    # Parity, checked here independently of the exporter's own check, on real test images.
    x = resize(images[:64], 24)
    with torch.no_grad():
        expected = trained(x).numpy()
    got = OnnxRunner(path)(x)
    assert np.abs(got - expected).max() <= 1e-4
    assert report.results["onnx"].max_abs_diff <= 1e-4
    assert report.results["onnx"].accuracy > 80  # a trained network, not a trivial one

    meta = read_metadata(path)
    assert meta["arch"] == str(arch)
    assert meta["space"] == SPACE and meta["space_hash"] == load_space(SPACE).hash
    assert json.loads(meta["input_size"]) == [1, 3, 24, 24] and meta["input_layout"] == "NCHW"
    assert json.loads(meta["mean"]) == pytest.approx(list(digits.mean))
    assert json.loads(meta["std"]) == pytest.approx(list(digits.std))
    assert json.loads(meta["class_names"]) == list(digits.class_names)
    assert json.loads(meta["predicted_latency_ms"]) == {FakeTable.name: pytest.approx(1.524)}
    assert json.loads(meta["accuracy"]) == pytest.approx(report.card["accuracy"]["fp32"])
    assert meta["edgenas_version"] == __import__("edgenas").__version__


def test_model_card_contents_and_hashes(tmp_path, trained, arch, digits):
    images, labels = digits.test.tensors()
    report = export_subnet(trained, ["onnx"], tmp_path, test_data=(images[:100], labels[:100]),
                           metadata=_meta(digits, latency_tables=[FakeTable()], budget_ms=3.0,
                                          source={"checkpoint": "ckpt.pt"}))
    card = load_card(tmp_path)
    assert card == json.loads((tmp_path / "model.json").read_text()) == report.card
    space = load_space(SPACE)
    cost = arch_cost(space, arch)
    assert card["arch"] == str(arch) and Arch.parse(card["arch"], space) == arch
    assert card["space"] == {"name": SPACE, "hash": space.hash}
    assert card["dataset"]["name"] == "digits" and card["dataset"]["num_classes"] == 10
    assert (card["macs"], card["params"]) == (cost.macs, cost.params)
    with torch.no_grad():
        expected = (trained(resize(images[:100], 24)).argmax(1) == labels[:100]).float().mean().item() * 100
    assert card["accuracy"]["fp32"] == pytest.approx(expected) and card["accuracy"]["images"] == 100
    assert card["latency"]["predicted_ms"] == {FakeTable.name: pytest.approx(1.524)}
    assert card["latency"]["budget_ms"] == 3.0 and card["source"] == {"checkpoint": "ckpt.pt"}
    entry = card["files"]["onnx"]
    data = (tmp_path / "model.onnx").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert entry["valid"] is True and card["valid"] is True and entry["error"] is None
    assert entry["input"]["layout"] == "NCHW" and entry["input"]["shape"] == ["batch", 3, 24, 24]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
    # A card that is damaged where its readers look is an error naming the file and key.
    bad_cases = [
        (lambda c: c.update(format="x"), "key 'format': got 'x', expected 'edgenas-model-card'"),
        (lambda c: c.update(format_version=99), "key 'format_version': got 99, expected at most 1"),
        (lambda c: c.pop("arch"), "key 'arch': got null, expected a string"),
        (lambda c: c["files"]["onnx"].update(file="../../etc/passwd"), "key 'files.onnx.file': got '../../etc/passwd'"),
        (lambda c: c["latency"].update(budget_ms=-1), "key 'latency.budget_ms': got -1"),
        (lambda c: c["latency"]["predicted_ms"].update(x=float("nan")), "key 'latency.predicted_ms.x': got NaN"),
        (lambda c: c.update(files=[1]), "key 'files': got a list [1], expected a mapping"),
    ]
    for change, words in bad_cases:
        bad = json.loads((tmp_path / "model.json").read_text())
        change(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(EdgeNASError) as err:
            load_card(tmp_path / "bad.json")
        assert str(err.value).startswith(str(tmp_path / "bad.json")) and words in str(err.value), str(err.value)
    (tmp_path / "bad.json").write_bytes(b'{"format": "edgenas-model-card", "format": 1}')
    with pytest.raises(EdgeNASError, match="got key 'format' twice"):
        load_card(tmp_path / "bad.json")


def test_parity_error_is_typed_and_the_file_is_kept_invalid(tmp_path, trained, digits):
    images, labels = digits.test.tensors()
    report = export_subnet(trained, "onnx", tmp_path, test_data=(images[:50], labels[:50]),
                           metadata=_meta(digits), atol=0.0)
    # With a zero tolerance the last-bit differences of a real runtime fail the check.
    result = report.results["onnx"]
    assert not report.valid and not result.valid
    assert isinstance(result.exception, ParityError)
    assert result.exception.atol == 0.0 and result.exception.max_diff == result.max_abs_diff > 0
    assert (tmp_path / "model.onnx").is_file() and load_card(tmp_path)["files"]["onnx"]["valid"] is False
    with pytest.raises(ParityError, match="more than the tolerance"):
        report.raise_for_failures()


# --------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, supernet):
    """A supernet.pt as `edgenas train` writes it (untrained weights: the CLI checks need no accuracy)."""
    from edgenas.train.checkpoint import payload, save
    from edgenas.train.config import TrainConfig

    path = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    save(path, payload("supernet", TrainConfig(space=SPACE), supernet.space, supernet, progress={}, metrics={}))
    return path


def _cli(*args: str) -> int:
    return cli_main(["export", *map(str, args), "--bn-images", "200", "--eval-images", "100"])


@pytest.fixture(scope="module")
def searched(checkpoint):
    """A results file written by `edgenas search` on `checkpoint`, with a predictor beside it and a
    latency table (edgenas's writer, made-up timings) so small that any measured file is over budget."""
    from conftest import write_table
    from edgenas.search import ArchBatch, latency_metric, metric_range
    from edgenas.search.predictor import default_predictor_path, train_predictor
    from edgenas.space import sample_genomes

    space = load_space(SPACE)
    genomes = sample_genomes(space, np.random.default_rng(0), 100)
    predictor, _ = train_predictor(space, genomes, 80 + 3 * np.log(ArchBatch(space, genomes).costs()["macs"] / 1e6),
                                   epochs=10)
    predictor.save(default_predictor_path(checkpoint))
    table = write_table(space, checkpoint.parent / "local-cpu.yaml", "local-cpu", scale=1e-6)
    span = metric_range(space, latency_metric(LatencyTable.load(table), space=space))
    out = checkpoint.parent / "search.json"
    assert cli_main(["search", "--supernet", str(checkpoint), "--latency-table", str(table), "--latency-ms",
                     f"{(span.minimum + span.maximum) / 2:.6g}", "--strategy", "random", "--evaluations", "100",
                     "--top-k", "3", "--out", str(out)]) == 0
    return out


def test_cli_exports_from_results_and_measures_on_the_device(tmp_path, checkpoint, searched, capsys, caplog):
    results = load_results(searched)
    second = results.entry(2)
    capsys.readouterr()
    out = tmp_path / "deploy"
    with caplog.at_level(logging.WARNING):
        code = _cli("--supernet", checkpoint, "--from", searched, "--rank", 2, "--format", "onnx", "--out", out,
                    "--measure", "local-cpu")
    text = capsys.readouterr().out
    assert code == 0, text
    assert "[ok]" in text and "model.onnx" in text and "max |diff|" in text
    card = load_card(out)
    assert card["arch"] == second.arch and card["source"]["rank"] == 2 and card["source"]["results"] == str(searched)
    predicted = second.predicted_latency_ms["local-cpu"]
    budget = results.latency_budgets["local-cpu"]
    assert card["latency"]["predicted_ms"] == {"local-cpu": predicted} and card["latency"]["budget_ms"] == budget
    measured = card["files"]["onnx"]["measured"]
    assert measured["device"] == "local-cpu" and measured["median_ms"] > 0 and measured["error"] is None
    assert measured["predicted_ms"] == predicted and measured["over_budget"] is True
    assert f"predicted {predicted:g} ms (local-cpu" in text
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"over the search budget of {budget:g} ms" in warning and f"{measured['median_ms']:.3f} ms" in warning


def test_cli_failed_parity_exits_1_and_marks_the_file_invalid(tmp_path, checkpoint, arch, capsys, monkeypatch):
    import edgenas.export.graph as graph

    real = graph.deployable

    def corrupted(net):  # a converter bug stand-in: the exported weights are not the network's
        module = real(net)
        with torch.no_grad():
            next(module.parameters()).mul_(1.5)
        return module

    monkeypatch.setattr(graph, "deployable", corrupted)  # what every format's write() rewrites the net with
    code = _cli("--supernet", checkpoint, "--arch", arch, "--format", "onnx", "--out", tmp_path)
    text = capsys.readouterr().out
    assert code == 1
    assert "[FAILED]" in text and "differ from PyTorch by up to" in text and "tolerance 0.0001" in text
    card = load_card(tmp_path)
    assert card["valid"] is False and card["files"]["onnx"]["valid"] is False
    assert card["files"]["onnx"]["max_abs_diff"] > 1e-4 and "tolerance" in card["files"]["onnx"]["error"]
    assert (tmp_path / "model.onnx").is_file()


def test_missing_litert_gives_the_install_command(tmp_path, checkpoint, arch, trained, digits, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # `import litert_torch` now raises ImportError
    code = cli_main(["export", "--supernet", str(checkpoint), "--arch", str(arch), "--format", "onnx,tflite",
                     "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 2
    assert "litert_torch is not installed" in err and "pip install 'edgenas[tflite]'" in err
    with pytest.raises(MissingDependencyError, match="edgenas\\[tflite\\]"):
        export_subnet(trained, "tflite-int8", tmp_path / "lib", digits.train.tensors()[0][:8])
    assert not (tmp_path / "cli").exists() and not (tmp_path / "lib").exists()  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx,coreml"], "unknown export format 'coreml'"),
    (["--arch", "r24_x"], "cannot read block 'x'"),
])
def test_cli_user_errors_exit_2(tmp_path, checkpoint, arch, capsys, args, message):
    base = {"--arch": str(arch), "--format": "onnx"}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["export", "--supernet", str(checkpoint), "--out", str(tmp_path)]
    for k, v in base.items():
        argv += [k, v]
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_rank_out_of_range(tmp_path, checkpoint, searched, capsys):
    ranked = len(load_results(searched).top)
    capsys.readouterr()
    assert cli_main(["export", "--supernet", str(checkpoint), "--from", str(searched), "--rank", str(ranked + 1),
                     "--out", str(tmp_path / "out")]) == 2
    assert f"--rank {ranked + 1} is out of range: {searched} ranks {ranked}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_results_from_another_space(tmp_path, checkpoint, searched, capsys):
    """The search's own file, its space changed: export says which space each came from."""
    data = json.loads(searched.read_text())
    data["space"] = {"name": "mbv3-large", "hash": "0123456789ab"}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    capsys.readouterr()
    assert cli_main(["export", "--supernet", str(checkpoint), "--from", str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "searched in space mbv3-large" in err[0] and "Traceback" not in err[0]


# ------------------------------------------------------------------------------------ TFLite

@pytest.mark.slow
def test_tflite_fp32_parity_and_int8_agreement(tmp_path, trained, digits):
    require_or_skip(importlib.util.find_spec("litert_torch") is not None,
                    "litert-torch is not installed (pip install 'edgenas[tflite]')")
    images, labels = digits.test.tensors()
    calib = digits.sample_images("train", 256, torch.Generator().manual_seed(1))
    report = export_subnet(trained, "tflite,tflite-int8", tmp_path, calib, (images, labels), _meta(digits))
    fp32, int8 = report.results["tflite"], report.results["tflite-int8"]

    # fp32: the same logits as PyTorch, checked here on real test images.
    x = resize(images[:32], 24)
    with torch.no_grad():
        expected = trained(x).numpy()
    runner = TFLiteRunner(tmp_path / "model.tflite")
    assert np.abs(runner(x) - expected).max() <= 1e-4 and fp32.valid and fp32.max_abs_diff <= 1e-4

    # int8: integer input and output, >= 98% top-1 agreement, <= 1 pp accuracy drop on the test split.
    q = TFLiteRunner(tmp_path / "model_int8.tflite")
    io = q.io_details()
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    with torch.no_grad():
        ref = trained(resize(images, 24)).numpy()
    got = q(resize(images, 24))
    agreement = float(np.mean(got.argmax(1) == ref.argmax(1)))
    drop = 100 * (np.mean(ref.argmax(1) == labels.numpy()) - np.mean(got.argmax(1) == labels.numpy()))
    print(f"int8: agreement {100 * agreement:.2f}%, accuracy drop {drop:.2f} pp "
          f"(fp32 {report.card['accuracy']['fp32']:.2f}%)")
    assert agreement >= 0.98 and drop <= 1.0
    assert int8.valid and int8.agreement == pytest.approx(agreement) and int8.accuracy_drop_pp == pytest.approx(drop)

    card = load_card(tmp_path)
    assert card["valid"] is True and card["accuracy"]["int8"] == pytest.approx(int8.accuracy)
    for fmt in ("tflite", "tflite-int8"):
        entry = card["files"][fmt]
        assert entry["layout"] == "NHWC" and entry["input"]["shape"] == [1, 24, 24, 3]
        assert entry["sha256"] == hashlib.sha256((tmp_path / entry["file"]).read_bytes()).hexdigest()
    quant = card["files"]["tflite-int8"]
    assert quant["input"]["quantization"] == {"scale": pytest.approx(q.input["quantization"][0]),
                                              "zero_point": q.input["quantization"][1]}
    assert set(quant["output"]["quantization"]) == {"scale", "zero_point"}


def test_tflite_fp16_stores_float16_weights_and_matches_pytorch(tmp_path, trained, digits):
    """tflite-fp16: the fp32 conversion with every conv and FC weight stored as float16 (about
    half the file), float32 input and output, logits within 1% of the largest one."""
    require_or_skip(importlib.util.find_spec("litert_torch") is not None,
                    "litert-torch is not installed (pip install 'edgenas[tflite]')")
    images, labels = digits.test.tensors()
    report = export_subnet(trained, "tflite,tflite-fp16", tmp_path, None, (images[:64], labels[:64]), _meta(digits))
    fp32, fp16 = report.results["tflite"], report.results["tflite-fp16"]
    assert fp16.valid and fp16.path == tmp_path / "model_fp16.tflite", fp16.error
    assert fp16.bytes < 0.6 * fp32.bytes
    runner = TFLiteRunner(fp16.path)
    io = runner.io_details()
    assert io["input"]["dtype"] == "float32" and io["output"]["dtype"] == "float32"
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(fp16.path)).get_tensor_details()
    assert any(d["dtype"] == np.float16 for d in details)  # the weights
    x = resize(images[:32], 24)
    with torch.no_grad():
        expected = trained(x).numpy()
    diff = np.abs(runner(x) - expected).max()
    assert 0 < diff <= 0.01 * np.abs(expected).max() and fp16.max_abs_diff <= fp16.atol
    assert load_card(tmp_path)["files"]["tflite-fp16"]["file"] == "model_fp16.tflite"


def test_onnx_int8_is_static_qdq_with_per_channel_weights_and_keeps_accuracy(tmp_path, trained, digits):
    import onnx
    from onnx import numpy_helper

    images, labels = digits.test.tensors()
    calib = digits.sample_images("train", 256, torch.Generator().manual_seed(1))
    report = export_subnet(trained, "onnx,onnx-int8", tmp_path, calib, (images, labels), _meta(digits))
    int8 = report.results["onnx-int8"]
    model = onnx.load(tmp_path / "model_int8.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > ops.count("Conv")
    # Every conv weight is int8 with one scale per output channel.
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_of = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        dq = dq_of[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],)
    # Accuracy as the runtime computes it on the whole test split.
    with torch.no_grad():
        ref = trained(resize(images, 24)).numpy()
    got = OnnxRunner(tmp_path / "model_int8.onnx")(resize(images, 24))
    agreement = float(np.mean(got.argmax(1) == ref.argmax(1)))
    assert agreement >= 0.98 and int8.valid and int8.agreement == pytest.approx(agreement)
    card = load_card(tmp_path)
    assert card["files"]["onnx-int8"]["file"] == "model_int8.onnx" and card["accuracy"]["int8"] == int8.accuracy
    assert read_metadata(tmp_path / "model_int8.onnx")["arch"] == read_metadata(tmp_path / "model.onnx")["arch"]


def test_cli_refuses_a_profile_that_cannot_run_the_formats_before_exporting(tmp_path, checkpoint, arch, capsys):
    profile = tmp_path / "tflite-box.yaml"
    profile.write_text("name: tflite-box\ntransport: local\nruntime: tflite\n")
    out = tmp_path / "deploy"
    code = cli_main(["export", "--supernet", str(checkpoint), "--arch", str(arch), "--format", "onnx",
                     "--out", str(out), "--measure", str(profile)])
    assert code == 2
    err = capsys.readouterr().err
    assert "tflite-box runs tflite models, but the export has no file for it; add --format tflite or pick" in err
    assert not out.exists()


def test_cli_predicts_latency_from_a_latency_table(tmp_path, checkpoint, arch, capsys):
    from edgenas.latency import LatencyTable
    from edgenas.latency.table import entry
    from edgenas.space import arch_ops

    space = load_space(SPACE)
    table = LatencyTable.create(space, "box_onnxruntime-cpu_t1-mbv3-tiny",
                                device={"profile": "box", "profile_key": "box_onnxruntime-cpu_t1"})
    ops = arch_ops(space, arch)
    for op in ops:
        table.set(op.key, entry(0.25, 0.25, 0.0, 10))
    path = table.save(tmp_path / "box.yaml")
    code = _cli("--supernet", checkpoint, "--arch", arch, "--format", "onnx", "--out", tmp_path / "out",
                "--latency-table", path)
    assert code == 0
    card = load_card(tmp_path / "out")
    assert card["latency"]["predicted_ms"] == {table.name: pytest.approx(0.25 * len(ops))}
    assert card["latency"]["tables"] == {table.name: "box_onnxruntime-cpu_t1"}
    assert f"predicted latency {0.25 * len(ops):.3f} ms ({table.name})" in capsys.readouterr().out
    meta = json.loads(read_metadata(tmp_path / "out" / "model.onnx")["predicted_latency_ms"])
    assert meta == {table.name: pytest.approx(0.25 * len(ops))}


# ------------------------------------------------------------------- large depthwise kernels

@pytest.mark.parametrize("stride,size,bias", [(1, 13, True), (2, 13, True), (2, 12, False), (1, 7, False)])
def test_split_depthwise_equals_the_7x7_conv(stride, size, bias):
    from edgenas.export.graph import SplitDepthwise, split_depthwise

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 7, stride, 3, groups=8, bias=bias)
    split = SplitDepthwise(conv)
    assert [p.kernel_size for p in split.parts] == [(7, 3), (7, 3), (7, 1)]  # 21 + 21 + 7 taps, none above 25
    x = torch.randn(2, 8, size, size)
    with torch.no_grad():
        assert torch.allclose(split(x), conv(x), atol=1e-5)
    net = torch.nn.Sequential(conv, torch.nn.Conv2d(8, 8, 5, 1, 2, groups=8), torch.nn.Conv2d(8, 4, 1))
    rewritten = split_depthwise(net)
    assert isinstance(rewritten[0], SplitDepthwise) and type(rewritten[1]) is torch.nn.Conv2d  # 25 taps stay
    assert type(net[0]) is torch.nn.Conv2d  # the original is not changed
    with torch.no_grad():
        assert torch.allclose(rewritten(x), net(x), atol=1e-5)


@pytest.mark.parametrize("kernel,max_taps", [(7, 25), (5, 9), (3, 4)])
def test_split_depthwise_is_exact_for_every_size_and_stride(kernel, max_taps):
    from edgenas.export.graph import SplitDepthwise

    torch.manual_seed(1)
    for stride in (1, 2):
        conv = torch.nn.Conv2d(3, 3, kernel, stride, kernel // 2, groups=3)
        split = SplitDepthwise(conv, max_taps)
        assert all(p.kernel_size[0] * p.kernel_size[1] <= max_taps for p in split.parts)
        for size in range(kernel, kernel + 12):
            x = torch.randn(1, 3, size, size + 1)
            with torch.no_grad():
                assert torch.allclose(split(x), conv(x), atol=1e-5), (stride, size)


def test_tflite_files_have_no_depthwise_kernel_over_25_taps(tmp_path, supernet, digits):
    require_or_skip(importlib.util.find_spec("litert_torch") is not None,
                    "litert-torch is not installed (pip install 'edgenas[tflite]')")
    space = load_space(SPACE)
    arch = Arch(24, tuple(((7, 3),) * 2 for _ in space.units))  # every block 7x7, stride 1 and 2
    net = supernet.materialize(arch)
    recalibrate_bn(net, digits.sample_images("train", 256, torch.Generator().manual_seed(0)))
    images, labels = digits.test.tensors()
    calib = digits.sample_images("train", 64, torch.Generator().manual_seed(1))
    report = export_subnet(net.eval(), "tflite,tflite-int8", tmp_path, calib, (images[:64], labels[:64]), _meta(digits))
    assert report.results["tflite"].valid and report.results["tflite"].max_abs_diff <= 1e-4
    from edgenas.export.tflite_export import interpreter_class

    for name in ("model.tflite", "model_int8.tflite"):
        interp = interpreter_class()(model_path=str(tmp_path / name))
        interp.allocate_tensors()
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        kernels = [tuple(tensors[op["inputs"][1]]["shape"][1:3]) for op in interp._get_ops_details()
                   if op["op_name"] == "DEPTHWISE_CONV_2D"]
        assert kernels and max(h * w for h, w in kernels) <= 25, (name, kernels)
        assert (7, 3) in kernels and (7, 1) in kernels


def test_int8_calibration_observer_reads_channels_last_activations_as_the_stock_one_does():
    require_or_skip(importlib.util.find_spec("torchao") is not None, "torchao is not installed (pip install 'edgenas[tflite]')")
    from torchao.quantization.pt2e.observer import HistogramObserver

    from edgenas.export.tflite_export import _flat_histogram_observer, flat_view

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 6, 5, 7, generator=gen) * s + o for s, o in ((1, 0), (3, 1), (0.5, -2))]
    flat, stock = _flat_histogram_observer()(eps=2**-12), HistogramObserver(eps=2**-12)
    for x in batches:
        cl = x.contiguous(memory_format=torch.channels_last)
        assert flat_view(cl).data_ptr() == cl.data_ptr()  # a view: no copy
        assert torch.equal(torch.sort(flat_view(cl)).values, torch.sort(x.reshape(-1)).values)
        assert flat(cl) is cl
        stock(x)
    assert flat.min_val == stock.min_val and flat.max_val == stock.max_val
    assert torch.equal(flat.histogram, stock.histogram)
    assert flat.calculate_qparams() == stock.calculate_qparams()
