"""ONNX export: opset 18, dynamic batch, NCHW float input, metadata properties in the file.

The TorchScript-based exporter (`dynamo=False`) is used: on these small convolutional graphs it
gives the same operators as the dynamo exporter in a quarter of the time.
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from edgenas.errors import require
from edgenas.io import atomic_write

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(module: nn.Module, input_shape: int | tuple[int, ...], path: str | Path,
                metadata: Mapping[str, Any] | None = None, opset: int = OPSET) -> Path:
    """Export `module` to `path` the one way edgenas writes ONNX: NCHW float input `input` with a
    dynamic batch, output `logits`, opset 18, the TorchScript exporter with constant folding,
    `metadata` as properties, fully checked, written atomically.

    `input_shape` is (C, H, W), (N, C, H, W) (N is ignored: the batch is dynamic) or a resolution
    (3 channels). `edgenas export` writes deployed files with it, and the profiler writes the
    whole subnets it times with it (edgenas.latency.formats), so a table times the graph that
    ships."""
    onnx = require("onnx", "onnx")
    import io

    shape = (3, input_shape, input_shape) if isinstance(input_shape, int) else tuple(input_shape)[-3:]
    example = torch.zeros(2, *shape)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices are not the user's business
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "edgenas"
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model, full_check=True)
    return atomic_write(path, lambda f: f.write(model.SerializeToString()))


def quantize_onnx(module: nn.Module, input_shape: tuple[int, int, int], calib_images, path: str | Path,
                  metadata: Mapping[str, Any] | None = None, batch_size: int = 32) -> Path:
    """A static int8 ONNX file through onnxruntime.quantization: QDQ format, weights per-channel
    symmetric int8, activations per-tensor asymmetric uint8 with min/max ranges calibrated by
    running the fp32 graph on `calib_images` (NCHW, normalised, at the input resolution)."""
    import contextlib
    import io
    import tempfile

    require("onnx", "onnx")
    quant = require("onnxruntime.quantization", "onnx")
    images = np.ascontiguousarray(np.asarray(calib_images, dtype=np.float32))

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="edgenas-int8-") as d:
        fp32, pre, out = Path(d) / "fp32.onnx", Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        export_onnx(module, input_shape, fp32, metadata)
        ort = require("onnxruntime", "onnx")
        ort.set_default_logger_severity(3)  # calibration sessions would print every unused initializer
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
                    quant.quant_pre_process(str(fp32), str(pre))  # shape inference and graph clean-up, as advised
                quant.quantize_static(str(pre), str(out), Reader(), quant_format=quant.QuantFormat.QDQ,
                                      per_channel=True, activation_type=quant.QuantType.QUInt8,
                                      weight_type=quant.QuantType.QInt8, calibrate_method=quant.CalibrationMethod.MinMax,
                                      reduce_range=_x86_without_vnni())
        finally:
            ort.set_default_logger_severity(2)  # onnxruntime's default (it has no getter to restore from)
        content = out.read_bytes()
    return atomic_write(path, lambda f: f.write(content))


@functools.lru_cache(maxsize=None)  # read /proc/cpuinfo once, not once per quantized layer
def _x86_without_vnni() -> bool:
    """7-bit weights (onnxruntime's reduce_range) on an x86 CPU without VNNI: there onnxruntime's
    u8s8 kernels can saturate their 16-bit intermediate sums (measured on an AVX2-only AMD EPYC:
    top-1 agreement with fp32 fell to 93.6% on digits; the onnxruntime quantization docs advise
    reduce_range for such CPUs). Elsewhere full 8-bit weights."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "vnni" not in flags


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file, as strings."""
    onnx = require("onnx", "onnx")
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


class OnnxRunner:
    """Runs an ONNX file in onnxruntime on the CPU: NCHW float images in, logits out."""

    def __init__(self, path: str | Path, threads: int | None = 1):
        ort = require("onnxruntime", "onnx")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    layout = "NCHW"

    def io_details(self) -> dict:
        """Name, shape (dynamic dimensions by name) and dtype of the input and the output."""
        def info(v):
            return {"name": v.name, "shape": list(v.shape), "dtype": v.type.replace("tensor(", "").rstrip(")")
                    .replace("float", "float32")}

        i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
        return {"input": {**info(i), "layout": "NCHW"}, "output": info(o)}

    def __call__(self, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        outs = [self.session.run(None, {self.input_name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(outs)
