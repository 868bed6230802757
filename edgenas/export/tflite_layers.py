"""Many independent layers in one TFLite file, one signature (one subgraph) per layer.

A latency table times every distinct layer of a space on its own: about 450 layers for
mbv3-w1.0 at 5 resolutions. One litert-torch conversion per layer costs ~1.5-4 s on this
machine, most of it per converted node (torch.export, decompositions, lowering) plus a fixed
part per conversion (each `run_decompositions` walks every registered op). Adding layers as
signatures of one conversion does not help: litert-torch exports, decomposes and lowers every
signature on its own (measured: 10 layers as 10 signatures cost as much as 10 conversions).
What does help is converting many layers as *one* module, the layers side by side (input i ->
layer i -> output i, nothing shared): one export, one decomposition, one lowering per chunk,
about half the cost per layer. The resulting file has one subgraph holding every layer's
operators as separate connected components; `split_signatures` rewrites it so that each
component is a subgraph of its own with a signature named after the layer, which the device
agent runs alone (`edgenas.device.agent`, a model entry with a "signature").

A layer is written as `edgenas.export.formats.FORMATS[...].write` writes it alone: the same
`deployable` rewrite, `split_depthwise`, channels-last input, and for int8 the same PT2E
quantizer, observers and calibration batches (`tflite_export.calibrated_pt2e`): the layers of
a file go through one PT2E export, prepare and convert side by side, each layer's observers fed
its own calibration inputs (half the cost of one PT2E pass per layer), then one litert-torch
conversion. One difference, on purpose: a layer's
feature-map output stays NHWC (`ChannelsLastLayer`), as it is inside a network, where a file of
its own would end in a TRANSPOSE to NCHW that no network runs. tests/test_tflite_tables.py
checks that each signature holds the same operators, tensor shapes, types and quantization as
the layer written alone by `FORMATS[...].write` (but that TRANSPOSE), and that both time the same.

    convert_layers_fp32(layers, shapes, names, "chunk.tflite")           # shapes: (C, H, W) each
    convert_layers_int8(layers, calib_inputs, names, "chunk8.tflite")    # inputs: (N, C, H, W) each
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from edgenas.io import atomic_write


class Parallel(nn.Module):
    """Layers side by side: `forward(x0, x1, ...)` returns `(layer0(x0), layer1(x1), ...)`."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(x) for layer, x in zip(self.layers, xs))


def _deployable(layer: nn.Module) -> nn.Module:
    from edgenas.export.graph import deployable

    return deployable(nn.Sequential(layer.eval()))  # as Format.write does


def _check(layers, names, other, what) -> None:
    if not layers or len(layers) != len(names) or len(other) != len(layers):
        raise ValueError(f"one name and one {what} per layer, and at least one layer")
    if len(set(names)) != len(names) or not all(names):
        raise ValueError("layer names must be distinct and non-empty")


def convert_layers_fp32(layers: Sequence[nn.Module], shapes: Sequence[tuple[int, int, int]],
                        names: Sequence[str], path: str | Path) -> Path:
    """One fp32 TFLite file at `path` with a signature `names[i]` running `layers[i]` on an
    NHWC input of shape (1, H, W, C) for `shapes[i]` = (C, H, W)."""
    from edgenas.export import tflite_export as te
    from edgenas.export.graph import ChannelsLastLayer, split_depthwise

    _check(layers, names, shapes, "input shape")
    litert_torch = te.require_litert()
    nets = [ChannelsLastLayer(split_depthwise(_deployable(m))).eval() for m in layers]
    examples = tuple(te._nhwc_example(h, channels=c) for c, h, _ in shapes)
    with te._quiet():
        content = litert_torch.convert(Parallel(nets).eval(), examples).model_content()
    split = split_signatures(content, list(names))
    return atomic_write(path, lambda f: f.write(split))


def convert_layers_int8(layers: Sequence[nn.Module], calib_inputs: Sequence[torch.Tensor],
                        names: Sequence[str], path: str | Path) -> Path:
    """One full-integer int8 TFLite file at `path`: each layer quantized by the PT2E path of
    `edgenas export --format tflite-int8` (per-channel weights), its activation ranges calibrated
    on `calib_inputs[i]` (NCHW, the real inputs it gets), then all converted at once."""
    from edgenas.export import tflite_export as te
    from edgenas.export.graph import ChannelsLastLayer, int8_friendly, split_depthwise

    _check(layers, names, calib_inputs, "calibration batch")
    litert_torch = te.require_litert()  # first: its first import is noisy (in a worker process, it is the first)
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = te.full_int_quantizer()
    nets = [ChannelsLastLayer(int8_friendly(split_depthwise(_deployable(m)))).eval() for m in layers]
    graph = te.calibrated_pt2e(Parallel(nets).eval(), list(calib_inputs), quantizer)
    examples = tuple(te._nhwc_example(x.shape[-1], channels=x.shape[1]) for x in calib_inputs)
    with te._quiet(), torch.no_grad():
        content = litert_torch.convert(graph, examples, quant_config=QuantConfig(pt2e_quantizer=quantizer)
                                       ).model_content()
    split = split_signatures(content, list(names))
    return atomic_write(path, lambda f: f.write(split))


def split_signatures(content: bytes, names: list[str]) -> bytearray:
    """Rewrite a one-subgraph TFLite model of independent layers (input i and output i of
    `Parallel`) as one subgraph and one signature per layer, named `names[i]`.

    The layers' operators form connected components once constant tensors (weights, shapes)
    are set aside; each component becomes a subgraph with its own copy of the tensor table
    entries it uses (constant buffers are shared, not copied)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    if len(model.subgraphs) != 1 or len(model.signatureDefs or []) != 1:
        raise ValueError("expected a model with one subgraph and one signature")
    sg, sig = model.subgraphs[0], model.signatureDefs[0]
    by_name = {_text(t.name): t.tensorIndex for t in sig.inputs}
    inputs = [by_name[f"args_{i}"] for i in range(len(names))]
    if len(sig.inputs) != len(names) or len(sig.outputs) != len(names):
        raise ValueError(f"{len(names)} names for a model of {len(sig.inputs)} inputs and {len(sig.outputs)} outputs")

    constant = {i for i, t in enumerate(sg.tensors) if _has_data(model.buffers[t.buffer])}
    parent = list(range(len(sg.tensors)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def tensors_of(op) -> list[int]:
        return [t for t in list(op.inputs or []) + list(op.outputs or []) + list(op.intermediates or []) if t >= 0]

    for op in sg.operators:
        live = [t for t in tensors_of(op) if t not in constant]
        for t in live[1:]:
            parent[find(t)] = find(live[0])
    root_of = {find(t): k for k, t in enumerate(inputs)}
    if len(root_of) != len(names):
        raise ValueError("two layers of the model share a tensor; they are not independent")
    ops_of: list[list] = [[] for _ in names]
    for op in sg.operators:
        live = [t for t in tensors_of(op) if t not in constant]
        if not live or find(live[0]) not in root_of:
            raise ValueError("an operator belongs to no layer's input")
        ops_of[root_of[find(live[0])]].append(op)
    outputs: list[int | None] = [None] * len(names)
    for t in sg.outputs:
        k = root_of.get(find(t))
        if k is None or outputs[k] is not None:
            raise ValueError("each layer must have exactly one output")
        outputs[k] = t

    subgraphs, signatures = [], []
    for k, name in enumerate(names):
        used = sorted({inputs[k], outputs[k], *(t for op in ops_of[k] for t in tensors_of(op))})
        new = {old: i for i, old in enumerate(used)}
        for op in ops_of[k]:
            op.inputs = [new[t] if t >= 0 else t for t in (op.inputs or [])]
            op.outputs = [new[t] if t >= 0 else t for t in (op.outputs or [])]
            if op.intermediates:
                op.intermediates = [new[t] if t >= 0 else t for t in op.intermediates]
        subgraphs.append(schema.SubGraphT(tensors=[sg.tensors[t] for t in used], inputs=[new[inputs[k]]],
                                          outputs=[new[outputs[k]]], operators=ops_of[k], name=name))
        signatures.append(schema.SignatureDefT(
            inputs=[schema.TensorMapT(name="input", tensorIndex=new[inputs[k]])],
            outputs=[schema.TensorMapT(name="output", tensorIndex=new[outputs[k]])],
            signatureKey=name, subgraphIndex=k))
    model.subgraphs, model.signatureDefs = subgraphs, signatures
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _has_data(buffer) -> bool:
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def signature_structure(path: str | Path) -> dict[str, list[tuple]]:
    """{signature: [(op name, [(shape, dtype, scales) of every input and output tensor])...]}
    of a TFLite file (a file of one unnamed signature reports it as its only key): what the
    runtime executes, for comparing a layer in a many-layer file with the layer alone."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(Path(path))

    def tensor(t) -> tuple:
        q = t.quantization
        scales = tuple(np.round(np.asarray(q.scale, dtype=np.float64), 9).tolist()) if q is not None and q.scale is not None else ()
        zeros = tuple(np.asarray(q.zeroPoint).tolist()) if q is not None and q.zeroPoint is not None else ()
        return tuple(np.asarray(t.shape).tolist()), int(t.type), scales, zeros

    out = {}
    for sig in model.signatureDefs or []:
        sg = model.subgraphs[sig.subgraphIndex]
        out[_text(sig.signatureKey)] = [
            (flatbuffer_utils.opcode_to_name(model, op.opcodeIndex),
             [tensor(sg.tensors[t]) if t >= 0 else None for t in list(op.inputs or []) + list(op.outputs or [])])
            for op in sg.operators]
    return out
