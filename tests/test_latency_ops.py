"""Op enumeration and the single-op ONNX models."""
import io
import warnings

import numpy as np
import pytest

from edgenas.errors import EdgeNASError
from edgenas.latency import enumerate_ops, estimate_seconds, model_format
from edgenas.latency.onnx_ops import op_graph
from edgenas.space import arch_ops, load_space, sample

PRESETS = ["mbv3-tiny", "mbv3-w1.0", "mbv3-w1.2"]


@pytest.mark.parametrize("name", PRESETS)
def test_one_resolution_has_96_distinct_layers(name):
    # stem, first block, 5 units x (first block, later blocks) x 3 kernels x 3 expands, 4 head layers
    space = load_space(name)
    ops = enumerate_ops(space, [space.resolutions[-1]])
    assert len(ops) == 96 == len({op.key for op in ops})
    assert [op.kind for op in ops[:2]] == ["stem", "mbconv"]
    assert [op.kind for op in ops[-4:]] == ["final_expand", "pool", "feature_mix", "classifier"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_layer_of_random_subnets_is_enumerated(name):
    space = load_space(name)
    keys = {op.key for op in enumerate_ops(space)}
    for arch in sample(space, np.random.default_rng(3), 40):
        assert {op.key for op in arch_ops(space, arch)} <= keys


def test_resolution_independent_layers_appear_once():
    space = load_space("mbv3-w1.0")
    ops = enumerate_ops(space, [160, 224])
    kinds = [op.kind for op in ops]
    assert kinds.count("stem") == 2 and kinds.count("classifier") == 1 and kinds.count("feature_mix") == 1


def test_unknown_resolution_is_a_user_error():
    with pytest.raises(EdgeNASError, match="resolution 100 is not in space mbv3-tiny"):
        enumerate_ops(load_space("mbv3-tiny"), [100])


def test_keys_of_mbv3_w12_are_ofa_keys(ofa_note10_dir):
    import yaml

    space = load_space("mbv3-w1.2")
    for r in space.resolutions:
        ofa = yaml.safe_load((ofa_note10_dir / f"{r}_lookup_table.yaml").read_text())
        assert {op.key for op in enumerate_ops(space, [r])} == set(ofa)


def test_estimate_grows_with_runs_and_size():
    space = load_space("mbv3-w1.0")
    small, big = enumerate_ops(space, [160]), enumerate_ops(space, [224])
    assert 0 < estimate_seconds(small, 10, 50) < estimate_seconds(big, 10, 50) < estimate_seconds(big, 10, 500)


# ---- the direct ONNX graphs are what torch.onnx.export writes for the same layer --------------

def _torch_export(op, deployed, tmp_path):
    import onnx
    import torch

    from edgenas.latency.onnx_ops import export_onnx
    from edgenas.nn.static import build_op

    module = build_op(op).eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding them is visible in the outputs
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    path = export_onnx(module, (1, op.in_ch, op.in_size, op.in_size), tmp_path / "ref.onnx", deployed=deployed)
    return onnx.load(path)


def _nodes(model):
    import onnx

    return [(n.op_type, sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute))
            for n in model.graph.node if n.op_type not in ("Identity", "Constant", "ConstantOfShape")]


def _weights(model):
    """Per weighted node (Conv, Gemm) in order, the arrays of its constant inputs."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}
    return [[inits[alias.get(name, name)] for name in n.input[1:]] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def _representative_ops():
    space = load_space("mbv3-tiny")
    ops = arch_ops(space, sample(space, np.random.default_rng(0)))
    picks = {"stem": ops[0], "first block": ops[1]}
    for op in ops[2:-4]:
        picks.setdefault(f"se={bool(op.se_ch)} res={op.residual} act={op.act}", op)
    picks.update(zip(["final_expand", "pool", "feature_mix", "classifier"], ops[-4:]))
    return picks


def _spellings():
    from edgenas.latency.onnx_ops import deployed_spelling

    return [False, True] if deployed_spelling() else [False]


@pytest.mark.parametrize("deployed", _spellings(), ids=lambda d: "deployed" if d else "static")
@pytest.mark.parametrize("what,op", list(_representative_ops().items()), ids=list(_representative_ops()))
def test_direct_graph_matches_torch_export(what, op, deployed, tmp_path):
    # The same nodes as exporting the layer the way whole nets are exported, and with the
    # exported (BN-folded) weights copied in, the same outputs.
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    ref = _torch_export(op, deployed, tmp_path)
    assert _nodes(op_graph(op, deployed=deployed)) == _nodes(ref)
    mine = op_graph(op, weights="random", deployed=deployed)
    assert _nodes(mine) == _nodes(ref)
    # Give the direct graph the exported (BN-folded) weights; both must then compute the same.
    inits = {i.name: i for i in mine.graph.initializer}
    for node, arrays in zip([n for n in mine.graph.node if n.op_type in ("Conv", "Gemm")], _weights(ref)):
        assert len(node.input) - 1 == len(arrays)
        for name, a in zip(node.input[1:], arrays):
            assert tuple(inits[name].dims) == a.shape
            inits[name].CopyFrom(numpy_helper.from_array(a.astype(np.float32), name))
    x = np.random.default_rng(0).standard_normal((1, op.in_ch, op.in_size, op.in_size)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {m.graph.input[0].name: x})[0]
    np.testing.assert_allclose(run(mine), run(ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("what,op", list(_representative_ops().items())[:4], ids=list(_representative_ops())[:4])
def test_generated_weights_optimize_to_the_same_graph_as_stored_ones(what, op, tmp_path):
    # onnxruntime folds the ConstantOfShape weights into initializers before optimizing: the graph
    # it runs is node for node the one of the model with stored weights, and the file is tiny.
    ort = pytest.importorskip("onnxruntime")
    import onnx

    def optimized(model, name):
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / name)
        so.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [(n.op_type, n.domain) for n in onnx.load(tmp_path / name).graph.node]

    constant, stored = op_graph(op), op_graph(op, weights="random")
    assert optimized(constant, "c.onnx") == optimized(stored, "s.onnx")
    assert "ConstantOfShape" not in {t for t, _ in optimized(constant, "c.onnx")}
    assert len(constant.SerializeToString()) < 4000


def test_tflite_format_writes_what_export_writes():
    import importlib.util

    if importlib.util.find_spec("litert_torch") is None:
        with pytest.raises(EdgeNASError, match="tflite"):
            model_format("tflite")
    else:
        assert model_format("tflite").suffix == ".tflite"
    assert model_format("onnxruntime").suffix == ".onnx"


@pytest.mark.parametrize("seed", [0, 1])
def test_a_profiled_subnet_is_the_graph_export_ships(seed, tmp_path):
    # One build path: the whole subnet the profiler times (calibration, --validate, search --verify)
    # and the model.onnx `edgenas export` writes for the same arch have the same operators, opset
    # and inputs/outputs.
    import collections

    import onnx
    import torch

    from edgenas.export import export_subnet
    from edgenas.latency.formats import model_format
    from edgenas.supernet import Supernet

    space = load_space("mbv3-tiny")
    arch = sample(space, np.random.default_rng(seed))
    torch.manual_seed(seed)
    net = Supernet(space).eval().materialize(arch).eval()
    r = arch.resolution
    profiled = onnx.load(model_format("onnxruntime").write_net(net, (1, 3, r, r), tmp_path / "net.onnx"))
    images = torch.randn(8, 3, r, r)
    report = export_subnet(net, ["onnx"], tmp_path / "export", test_data=(images, torch.zeros(8, dtype=torch.long)))
    shipped = onnx.load(report.results["onnx"].path)

    def ops(m):
        return collections.Counter(n.op_type for n in m.graph.node if n.op_type not in ("Identity", "Constant"))

    def io(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert ops(profiled) == ops(shipped) and sum(ops(shipped).values()) > 10
    assert [(o.domain, o.version) for o in profiled.opset_import] == [(o.domain, o.version) for o in shipped.opset_import]
    assert io(profiled.graph.input) == io(shipped.graph.input) and io(profiled.graph.output) == io(shipped.graph.output)
    assert io(shipped.graph.input)[0][2][0] == "batch"
