"""The model formats edgenas writes: one object per format, and one way to build each.

    fmt = FORMATS["tflite-int8"]
    fmt.write(net, (1, 3, 224, 224), "model_int8.tflite", calib_images=images)
    fmt.runtime, fmt.precision          # "tflite", "int8": which device profiles run it, and how
    runner = fmt.runner(path, threads=1)  # runs the file here, for the export checks

`edgenas export` writes deployed files through `Format.write`, and the profiler writes the whole
subnets it times (calibration, --validate, search --verify) through the same call
(`edgenas.latency.formats`), so a latency table times the graph that ships. Every format first
rewrites the net for inference with `edgenas.export.graph.deployable` (BN folded, the SE gate as
relu6, pooling as a global average).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgenas.errors import EdgeNASError


@dataclass(frozen=True)
class Format:
    name: str  # as --format spells it
    runtime: str  # the device runtime that runs the file: a profile's `runtime`
    precision: str  # "fp32" | "int8" | "fp16" (tflite-fp16: float16 weights, see edgenas.export.tflite_fp16)
    file_name: str  # the file's name in an export directory

    @property
    def suffix(self) -> str:
        return Path(self.file_name).suffix

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int8"

    def write(self, net, input_shape: tuple[int, ...] | int, path: str | Path, calib_images=None,
              metadata: Mapping[str, Any] | None = None) -> Path:
        """Write `net` (an eval-mode NCHW float module) as this format's file at `path`.

        input_shape: (N, C, H, W), (C, H, W) or a resolution (3 channels); H == W.
        calib_images: normalised images (N, C, H, W) at the input resolution, for int8.
        metadata: ONNX metadata properties (ONNX only)."""
        import torch

        from edgenas.export.graph import deployable

        channels, height, width = ((3, input_shape, input_shape) if isinstance(input_shape, int)
                                   else tuple(input_shape)[-3:])
        if height != width:
            raise ValueError(f"{self.name} export takes square inputs, got {height}x{width}")
        module = deployable(torch.nn.Sequential(net.eval()))  # a container, so a top-level layer is rewritten too
        if self.needs_calibration and (calib_images is None or len(calib_images) == 0):
            raise EdgeNASError(f"{self.name} needs calibration images (training images, e.g. 256 of them)")
        if self.runtime == "onnxruntime":
            from edgenas.export.onnx_export import export_onnx, quantize_onnx

            if self.precision == "fp32":
                return export_onnx(module, (channels, height, width), path, metadata)
            return quantize_onnx(module, (channels, height, width), calib_images, path, metadata)
        from edgenas.export import tflite_export

        if self.precision == "fp32":
            return tflite_export.convert_fp32(module, height, path, channels=channels)
        if self.precision == "fp16":
            from edgenas.export.tflite_fp16 import convert_fp16

            return convert_fp16(module, height, path, channels=channels)
        return tflite_export.convert_int8(module, height, calib_images, path)

    def runner(self, path: str | Path, threads: int | None = 1):
        """A callable that runs the file here on NCHW float images and returns float logits."""
        if self.runtime == "onnxruntime":
            from edgenas.export.onnx_export import OnnxRunner

            return OnnxRunner(path, threads)
        from edgenas.export.tflite_export import TFLiteRunner

        return TFLiteRunner(path, threads)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", "onnxruntime", "fp32", "model.onnx"),
    Format("onnx-int8", "onnxruntime", "int8", "model_int8.onnx"),
    Format("tflite", "tflite", "fp32", "model.tflite"),
    Format("tflite-int8", "tflite", "int8", "model_int8.tflite"),
    # float16 weights, float32 arithmetic where XNNPACK is not told otherwise (edgenas.export.tflite_fp16);
    # onnxruntime's CPU provider has no fp16 kernels on x86, so there is no onnx-fp16.
    Format("tflite-fp16", "tflite", "fp16", "model_fp16.tflite"),
)}


def formats_for(runtime: str, precision: str = "fp32") -> list[str]:
    """The names of the formats a device profile or a latency table of `runtime` and `precision`
    times: what `--measure` measures and a table predicts."""
    return [name for name, f in FORMATS.items() if f.runtime == runtime and f.precision == precision]
