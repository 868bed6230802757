"""TFLite with float16 weights (`tflite-fp16`): what TFLite calls "float16 quantization".

The fp32 file `convert_fp32` writes is rewritten by ai-edge-quantizer (installed with
litert-torch): every conv and fully-connected weight is cast to float16 and stored with a
DEQUANTIZE op in front of it, so the file is about half the size. Activations stay float32.

What a runtime then does with it (checked with ai-edge-litert 2.3 on x86-64 and with
onnxruntime 1.32; see the README's latency section):
- The TFLite interpreter and its XNNPACK delegate on x86 turn the float16 weights back into
  float32 once, when the model is prepared, and compute in float32: the file runs as fast as the
  fp32 file (0.90 against 0.84 ms for a small conv block here, under load), it is only smaller.
- On ARM cores with half-precision arithmetic (ARMv8.2-A FP16), XNNPACK can compute in float16
  instead, but only where the delegate is told to (its force-fp16 flag, or a model marked for
  reduced precision); edgenas's agent does not set that flag, so it times fp32 arithmetic there
  too (not checked on an ARM device).
- onnxruntime's CPU execution provider has no float16 kernels for these ops on x86: a float16
  ONNX model loads, but the runtime inserts Cast nodes around them and computes in float32,
  2.9x slower than the fp32 file here. edgenas therefore writes no fp16 ONNX format.

Latency tables are fp32 (or int8); a profile's `precision: fp16` is refused (see
`edgenas.device.profile.FP16_LACKS`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from edgenas.io import atomic_write

_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def convert_fp16(module: nn.Module, resolution: int, path: str | Path, channels: int = 3) -> Path:
    """An fp32 TFLite conversion of `module` (as `convert_fp32`), its weights stored as float16."""
    from edgenas.export.tflite_export import _quiet, convert_fp32

    from ai_edge_quantizer import qtyping, quantizer

    with tempfile.TemporaryDirectory(prefix="edgenas-fp16-") as d:
        fp32 = convert_fp32(module, resolution, Path(d) / "model.tflite", channels=channels)
        q = quantizer.Quantizer(str(fp32))
        config = qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
        for op in _WEIGHT_OPS:
            q.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                         algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING, op_config=config)
        with _quiet():
            content = bytes(q.quantize().quantized_model)
    return atomic_write(path, lambda f: f.write(content))
