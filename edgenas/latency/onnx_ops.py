"""Single-op ONNX models written directly with `onnx.helper`, and whole-net ONNX export.

A latency table must time the graph a user deploys. `export_onnx(net)` is that path: the net is
rewritten for inference by `edgenas.export.graph.deployable` (BN folded, the SE gate as
relu6 * 1/6, pooling as GlobalAveragePool) when that module is present, then exported with
`edgenas.export.onnx_export.export_onnx`, the exporter `edgenas export` uses (opset 18, dynamic
batch, input `input`, output `logits`).

Single ops do not go through `torch.onnx.export`: it costs 50-250 ms per op here (tracing and
graph passes), a minute or more for a five-resolution table, while writing the graph directly
costs about a millisecond. `op_graph(op)` writes the graph that exporting the layer through the
same path gives (same nodes, attributes and constants); `tests/test_latency_ops.py` checks that
node for node and that, given the same weights, the outputs are equal.

Latency does not depend on the weights' values, only on their shapes, so by default a weight is
not stored but made by a `ConstantOfShape` node, which onnxruntime folds into an ordinary
initializer when it loads the model (before it pre-packs conv weights): the optimized graph and
the timing are those of the model with stored weights, but the file is ~1 KB instead of up to
5 MB. That matters when hundreds of op models go to a device over a slow link (a full mbv3-w1.0
table is ~220 MB of weights). `weights="random"` stores seeded random weights instead.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgenas.errors import require
from edgenas.space.ops import OpSpec

from edgenas.export.onnx_export import INPUT_NAME as INPUT, OPSET, OUTPUT_NAME as OUTPUT  # one ONNX convention


def deployed_spelling() -> bool:
    """Whether exported nets go through `edgenas.export.graph.deployable` (present in this install)."""
    try:
        from edgenas.export.graph import deployable  # noqa: F401
    except ImportError:
        return False
    return True


class _Graph:
    """A tiny graph writer: fresh tensor names, initializers, nodes."""

    def __init__(self, helper, rng: np.random.Generator, weights: str):
        if weights not in ("constant", "random"):
            raise ValueError(f"weights must be 'constant' or 'random', got {weights!r}")
        self.h, self.rng, self.weights = helper, rng, weights
        self.nodes, self.inits, self.n = [], [], 0
        self.makers = []  # ConstantOfShape nodes, placed before the layer's nodes

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def scalar(self, value: float) -> str:
        from onnx import numpy_helper

        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        from onnx import numpy_helper

        name = self.name("w")
        scale = np.sqrt(2.0 / max(fan_in, 1))
        if self.weights == "random":
            w = (self.rng.standard_normal(shape) * scale).astype(np.float32)
            self.inits.append(numpy_helper.from_array(w, name))
        else:
            self.inits.append(numpy_helper.from_array(np.array(shape, np.int64), name + "_shape"))
            value = numpy_helper.from_array(np.array([scale / 4], np.float32))
            self.makers.append(self.h.make_node("ConstantOfShape", [name + "_shape"], [name], value=value))
        return name

    def node(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(self.h.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, bias: bool = True) -> str:
        w = self.weight((cout, cin // groups, k, k), cin // groups * k * k)
        inputs = [x, w] + ([self.weight((cout,), 1)] if bias else [])
        p = k // 2
        return self.node("Conv", inputs, dilations=[1, 1], group=groups, kernel_shape=[k, k],
                         pads=[p, p, p, p], strides=[stride, stride])

    def act(self, x: str, act: str) -> str:
        if act == "relu":
            return self.node("Relu", [x])
        if act == "hswish":
            return self.node("HardSwish", [x])
        return x

    def pool(self, x: str, deployed: bool) -> str:
        if deployed:
            return self.node("GlobalAveragePool", [x])
        from onnx import numpy_helper

        axes = self.name("axes")  # an input since opset 18
        self.inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), axes))
        return self.node("ReduceMean", [x, axes], keepdims=1)

    def gate(self, x: str, deployed: bool) -> str:
        """hardsigmoid; the deployed spelling (edgenas.export.graph.GatedSE) is relu6(x), with the +3
        in the conv bias and the 1/6 folded into the block's project conv weights."""
        if deployed:
            return self.node("Clip", [x, self.scalar(0.0), self.scalar(6.0)])
        return self.node("HardSigmoid", [x], alpha=1.0 / 6)


def op_graph(op: OpSpec, weights: str = "constant", deployed: bool | None = None, seed: int = 0):
    """The ONNX model (edgenas's opset, batch 1, input 'input', output 'logits') of one layer.

    `weights` is "constant" (made in the graph, see the module docstring) or "random" (stored,
    seeded); `deployed` picks the spelling of `edgenas.export.graph.deployable` (default: when
    that module is present, as `export_onnx` does)."""
    onnx = require("onnx", "onnx")
    h = onnx.helper
    deployed = deployed_spelling() if deployed is None else deployed
    g = _Graph(h, np.random.default_rng(seed), weights)
    x = INPUT
    if op.kind in ("stem", "final_expand"):
        y = g.act(g.conv(x, op.in_ch, op.out_ch, op.kernel, op.stride), op.act)
    elif op.kind == "mbconv":
        m = op.mid_ch
        y = g.act(g.conv(x, op.in_ch, m), op.act) if op.expand_conv else x
        y = g.act(g.conv(y, m, m, op.kernel, op.stride, groups=m), op.act)
        if op.se_ch:
            s = g.node("Relu", [g.conv(g.pool(y, deployed), m, op.se_ch)])
            y = g.node("Mul", [y, g.gate(g.conv(s, op.se_ch, m), deployed)])
        y = g.conv(y, m, op.out_ch)
        if op.residual:
            y = g.node("Add", [x, y])
    elif op.kind == "pool":
        y = g.pool(x, deployed)
    elif op.kind == "feature_mix":
        y = g.act(g.conv(x, op.in_ch, op.out_ch, bias=False), op.act)
    elif op.kind == "classifier":
        f = g.node("Flatten", [x], axis=1)
        y = g.node("Gemm", [f, g.weight((op.out_ch, op.in_ch), op.in_ch), g.weight((op.out_ch,), 1)],
                   alpha=1.0, beta=1.0, transB=1)
    else:
        raise ValueError(f"unknown op kind {op.kind!r}")
    g.nodes[-1].output[0] = OUTPUT
    out_shape = [1, op.out_ch] if op.kind == "classifier" else [1, op.out_ch, op.out_size, op.out_size]
    graph = h.make_graph(
        g.makers + g.nodes, "op",
        [h.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, [1, op.in_ch, op.in_size, op.in_size])],
        [h.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, out_shape)], initializer=g.inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="edgenas")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime >= 1.14 on older devices
    return model


def write_op_onnx(op: OpSpec, path: str | Path) -> Path:
    """Write the single-op model of `op` to `path`."""
    path = Path(path)
    path.write_bytes(op_graph(op).SerializeToString())
    return path


def export_onnx(module, input_shape: tuple[int, ...], path: str | Path, deployed: bool | None = None) -> Path:
    """Export a module as a user's model is exported (`edgenas.export.formats.FORMATS["onnx"]`),
    or with `deployed=False` in its static spelling (no `deployable` rewrite; for comparisons)."""
    if deployed_spelling() if deployed is None else deployed:
        from edgenas.export.formats import FORMATS

        return FORMATS["onnx"].write(module, input_shape, path)
    from edgenas.export.onnx_export import export_onnx as write

    return write(module.eval(), tuple(input_shape), path)
