"""Model formats the profiler can write: one per device runtime.

A format turns one `OpSpec` into a single-op model file and a whole `nn.Module` subnet into a
model file, both in the runtime's format:

    fmt = model_format("onnxruntime")
    fmt.write_op(op, dir / "op0.onnx")
    fmt.write_net(static_net, (1, 3, 224, 224), dir / "net0.onnx")

ONNX is built in. TFLite is a hook: when `edgenas.export` provides a TFLite exporter, register
it with `register_format("tflite", TFLiteFormat(export_fn))` (or expose
`edgenas.export.tflite.export_tflite(module, input_shape, path)`, which is found automatically),
and `edgenas profile` works for TFLite device profiles without further changes.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Protocol

from edgenas.errors import EdgeNASError
from edgenas.space.ops import OpSpec

# torch.onnx.export (TorchScript) is not safe to run from several threads at once, and several
# devices may be profiled in parallel threads.
_EXPORT_LOCK = threading.Lock()


class ModelFormat(Protocol):
    name: str  # "onnx" | "tflite"
    suffix: str  # file suffix, with the dot

    def write_op(self, op: OpSpec, path: Path) -> Path: ...

    def write_net(self, net, input_shape: tuple[int, ...], path: Path) -> Path: ...

    def describe(self) -> dict: ...  # recorded in the latency table header


class OnnxFormat:
    name, suffix = "onnx", ".onnx"

    def write_op(self, op: OpSpec, path: Path) -> Path:
        from edgenas.latency.onnx_ops import write_op_onnx

        return write_op_onnx(op, path)

    def write_net(self, net, input_shape, path: Path) -> Path:
        from edgenas.export.formats import FORMATS

        with _EXPORT_LOCK:
            return FORMATS["onnx"].write(net, input_shape, path)

    def describe(self) -> dict:
        from edgenas.latency.onnx_ops import OPSET, deployed_spelling

        spelling = "edgenas.export.graph.deployable" if deployed_spelling() else "edgenas.nn.static"
        return {"format": "onnx", "opset": OPSET, "graph": spelling,
                "ops": "onnx.helper graphs equal to exporting each layer (BN folded), weights made in-graph",
                "networks": "edgenas.export.formats.FORMATS['onnx'].write, as edgenas export writes model.onnx"}


class TFLiteFormat:
    """Single ops and subnets through a module exporter `export(module, input_shape, path)`."""

    name, suffix = "tflite", ".tflite"

    def __init__(self, export: Callable[..., object], description: str = "edgenas.export TFLite exporter"):
        self.export = export
        self.description = description

    def write_op(self, op: OpSpec, path: Path) -> Path:
        from edgenas.nn.static import build_op

        return self.write_net(build_op(op), (1, op.in_ch, op.in_size, op.in_size), path)

    def write_net(self, net, input_shape, path: Path) -> Path:
        with _EXPORT_LOCK:
            self.export(net.eval(), tuple(input_shape), Path(path))
        return Path(path)

    def describe(self) -> dict:
        return {"format": "tflite", "exporter": self.description}


_REGISTRY: dict[str, ModelFormat] = {"onnxruntime": OnnxFormat()}


def register_format(runtime: str, fmt: ModelFormat) -> None:
    """Use `fmt` for device profiles whose runtime is `runtime`."""
    _REGISTRY[runtime] = fmt


def model_format(runtime: str, precision: str = "fp32", activations=None) -> ModelFormat:
    """The format a device runtime ('onnxruntime' or 'tflite') times at a precision. int8 needs
    `activations` (an `edgenas.latency.int8.ActivationSource`): its layers are calibrated on them."""
    if precision == "int8":
        from edgenas.latency.int8 import Int8OnnxFormat

        if runtime != "onnxruntime":
            raise EdgeNASError(f"edgenas builds int8 latency tables for onnxruntime only, not {runtime}")
        if activations is None:
            raise EdgeNASError("an int8 latency table calibrates every layer on real activations: pass a trained "
                               "supernet (edgenas profile --supernet CKPT); its training images are used")
        return Int8OnnxFormat(activations)
    if precision != "fp32":
        raise EdgeNASError(f"edgenas builds no {precision} latency tables for {runtime}")
    if runtime in _REGISTRY:
        return _REGISTRY[runtime]
    if runtime == "tflite":
        from edgenas.export.formats import FORMATS
        from edgenas.export.tflite_export import require_litert

        require_litert()  # a clear MissingDependencyError naming the extra when it is not installed
        fmt = TFLiteFormat(FORMATS["tflite"].write, "litert-torch fp32: edgenas.export.formats.FORMATS['tflite'].write")
        _REGISTRY[runtime] = fmt
        return fmt
    raise EdgeNASError(f"no model format for runtime {runtime!r}; known: onnxruntime, tflite")
