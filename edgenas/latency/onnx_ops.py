"""Single-op ONNX models written directly with `onnx.helper`, and whole-net ONNX export.

Why not `torch.onnx.export` for every op: it costs 50-250 ms per op here (tracing and graph
passes), about a minute for a five-resolution table, while writing the graph directly costs a
few milliseconds. The graphs below are the ones `torch.onnx.export(build_op(op).eval(),
opset_version=17, dynamo=False)` produces for the same layer (BatchNorm folded into the conv
bias, the same node types and attributes); `tests/test_latency_ops.py` checks that they run the
same nodes and, with the same weights, give the same outputs. Weights are random (seeded):
latency does not depend on their values, only their shapes.

Whole subnets (calibration and validation) go through `torch.onnx.export`, the path a user's
exported model takes.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from edgenas.errors import require
from edgenas.space.ops import OpSpec

OPSET = 17
INPUT, OUTPUT = "x", "y"


class _Graph:
    """A tiny graph writer: fresh tensor names, initializers, nodes."""

    def __init__(self, helper, rng: np.random.Generator):
        self.h, self.rng = helper, rng
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        from onnx import numpy_helper

        name = self.name("w")
        w = (self.rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, name))
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


def op_graph(op: OpSpec, seed: int = 0):
    """The ONNX model (opset 17, batch 1, input 'x', output 'y') of one layer."""
    onnx = require("onnx", "onnx")
    h = onnx.helper
    g = _Graph(h, np.random.default_rng(seed))
    x = INPUT
    if op.kind in ("stem", "final_expand"):
        y = g.act(g.conv(x, op.in_ch, op.out_ch, op.kernel, op.stride), op.act)
    elif op.kind == "mbconv":
        m = op.mid_ch
        y = g.act(g.conv(x, op.in_ch, m), op.act) if op.expand_conv else x
        y = g.act(g.conv(y, m, m, op.kernel, op.stride, groups=m), op.act)
        if op.se_ch:
            s = g.node("ReduceMean", [y], axes=[2, 3], keepdims=1)
            s = g.node("Relu", [g.conv(s, m, op.se_ch)])
            s = g.node("HardSigmoid", [g.conv(s, op.se_ch, m)], alpha=1.0 / 6)
            y = g.node("Mul", [y, s])
        y = g.conv(y, m, op.out_ch)
        if op.residual:
            y = g.node("Add", [x, y])
    elif op.kind == "pool":
        y = g.node("ReduceMean", [x], axes=[2, 3], keepdims=1)
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
        g.nodes, "op", [h.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, [1, op.in_ch, op.in_size, op.in_size])],
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


def export_onnx(module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """`torch.onnx.export` a module in eval mode (opset 17, TorchScript exporter, BN folded)."""
    import torch

    require("onnx", "onnx")
    path = Path(path)
    module = module.eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(input_shape),), buf, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True, input_names=[INPUT], output_names=[OUTPUT])
    path.write_bytes(buf.getvalue())
    return path
