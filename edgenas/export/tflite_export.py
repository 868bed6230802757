"""TFLite export through litert-torch: fp32, and full-integer int8 by PT2E post-training quantization.

Both files take NHWC input (the layout TFLite kernels use, so no transpose runs on the device)
with batch 1. The int8 file is integer end to end: int8 input and output with the scale and
zero point that `TFLiteRunner.io_details()` reports, and no float op inside. litert-torch's
quantizer leaves h-swish, ReLU6, residual adds and pooling unannotated, which would keep them
in float behind QUANTIZE/DEQUANTIZE pairs; `_FullIntQuantizer` annotates them too, and every
one has an int8 TFLite kernel. h-swish is spelled with ADD/ReLU6/MUL (`int8_friendly`) so that
XNNPACK runs the whole int8 graph, and 7x7 depthwise kernels as 7x3 + 7x3 + 7x1 parts
(`split_depthwise`), which XNNPACK runs 4-25x faster than its multi-pass 49-tap path.

litert-torch (`edgenas[tflite]`) is imported only here and only when a TFLite format is asked
for; its import alone takes ~10 s.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from edgenas.errors import MissingDependencyError, require
from edgenas.export.graph import ChannelsLast, int8_friendly, split_depthwise
from edgenas.io import atomic_write

log = logging.getLogger(__name__)

CALIB_BATCH = 32


def require_litert():
    """litert-torch, or a MissingDependencyError naming the extra.

    Its first import makes torchao and torch log warnings about optional CUDA kernels and
    deprecated registrations, and XLA print INFO lines; none concern the user, so they are muted.
    """
    if sys.modules.get("litert_torch") is not None:
        return sys.modules["litert_torch"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    noisy = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryFile() as sink, _fds_to(sink):  # its native libraries print at import
            return require("litert_torch", "tflite")
    finally:
        for logger, level in zip(noisy, levels):
            logger.setLevel(level)


def interpreter_class():
    """The TFLite Interpreter class: ai_edge_litert, else tflite_runtime (older devices)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise MissingDependencyError(
                "no TFLite interpreter is installed; install it with: pip install 'edgenas[tflite]' "
                "(or pip install tflite-runtime where ai-edge-litert has no wheel)"
            ) from exc
    return Interpreter


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide what one conversion prints: litert-torch's progress bars and "Use JAX lowering" lines,
    the converter's native INFO logs (written straight to file descriptors 1 and 2) and torch's
    export warnings. The text is logged at DEBUG level (`-v -v` or --debug shows it)."""
    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    with tempfile.TemporaryFile() as sink:
        try:
            with _fds_to(sink), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            if saved is None:
                os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
            else:
                os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved
            if log.isEnabledFor(logging.DEBUG):
                sink.seek(0)
                printed = sink.read()[-200_000:].decode(errors="replace").strip()
                if printed:
                    log.debug("litert-torch printed:\n%s", printed)


@contextlib.contextmanager
def _fds_to(sink) -> Iterator[None]:
    """Point file descriptors 1 and 2 (where sys.stdout/err write too) at `sink` for the duration."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real descriptors (an embedding host): leave them alone
        yield
        return
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _nhwc_example(resolution: int, batch: int = 1, channels: int = 3) -> torch.Tensor:
    return torch.zeros(batch, resolution, resolution, channels)


def to_nhwc(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 2, 3, 1).contiguous()


def convert_fp32(module: nn.Module, resolution: int, path: str | Path, channels: int = 3) -> Path:
    """Convert `module` (an eval-mode NCHW net) to an fp32 TFLite file with NHWC input."""
    litert_torch = require_litert()
    with _quiet():
        model = litert_torch.convert(ChannelsLast(split_depthwise(module)).eval(),
                                     (_nhwc_example(resolution, channels=channels),))
        content = model.model_content()
    return atomic_write(path, lambda f: f.write(content))


def convert_int8(module: nn.Module, resolution: int, calib_images: torch.Tensor, path: str | Path,
                 batch_size: int = CALIB_BATCH) -> Path:
    """Full-integer int8 TFLite file, activations calibrated on `calib_images` (NCHW, normalised,
    already at `resolution`, with the module's input channels); weights per-channel symmetric,
    activations per-tensor affine."""
    litert_torch = require_litert()
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = full_int_quantizer()
    graph = quantized_graph(module, calib_images, quantizer, batch_size)
    with _quiet(), torch.no_grad():
        model = litert_torch.convert(graph, (_nhwc_example(resolution, channels=calib_images.shape[1]),),
                                     quant_config=QuantConfig(pt2e_quantizer=quantizer))
        content = model.model_content()
    return atomic_write(path, lambda f: f.write(content))


def full_int_quantizer():
    """The PT2E quantizer of every int8 TFLite file (see `_full_int_quantizer`)."""
    require_litert()
    from litert_torch.quantize import pt2e_quantizer

    return _full_int_quantizer(pt2e_quantizer)


def quantized_graph(module: nn.Module, calib_images: torch.Tensor, quantizer, batch_size: int = CALIB_BATCH,
                    layout=ChannelsLast):
    """`module` (an eval-mode NCHW net, already `deployable`) exported channels-last (`layout`), prepared with
    `quantizer`, calibrated on `calib_images` (NCHW) in batches of `batch_size` and converted:
    the PT2E graph that litert-torch turns into an int8 TFLite model."""
    return calibrated_pt2e(layout(int8_friendly(split_depthwise(module))).eval(), [calib_images], quantizer,
                           batch_size)


def calibrated_pt2e(net: nn.Module, calib_inputs: list[torch.Tensor], quantizer, batch_size: int = CALIB_BATCH):
    """The PT2E steps of `quantized_graph` for an NHWC `net` taking one input per tensor of
    `calib_inputs` (NCHW, all with as many samples): one export, prepare and convert, calibrated
    on batches i of every input together. Observers belong to nodes, so a net of independent
    parts (`edgenas.export.tflite_layers.Parallel`) gets for each part the ranges it gets alone."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    n = {len(x) for x in calib_inputs}
    if len(n) != 1:
        raise ValueError("every calibration input needs as many samples")
    with _quiet(), torch.no_grad():
        # Batch 2 so the batch dimension stays symbolic (1 would be specialised) and calibration can batch.
        batch = torch.export.Dim("batch", min=1, max=4096)
        examples = tuple(_nhwc_example(x.shape[-1], 2, channels=x.shape[1]) for x in calib_inputs)
        shapes = tuple({0: batch} for _ in examples)
        if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(net.forward).parameters.values()):
            shapes = (shapes,)  # forward(*xs): the inputs are one argument to torch.export
        graph = torch.export.export(net, examples, dynamic_shapes=shapes).module()
        graph = prepare_pt2e(graph, quantizer)
        for start in range(0, n.pop(), batch_size):
            graph(*(to_nhwc(x[start:start + batch_size]) for x in calib_inputs))
        graph = convert_pt2e(graph, fold_quantize=False)
        move_exported_model_to_eval(graph)
        graph.training = False  # what litert-torch looks at; .eval() is refused on exported graphs
    return graph


def _full_int_quantizer(pt2e_quantizer):
    """litert-torch's PT2E quantizer plus annotations for the ops it leaves in float."""
    from litert_torch.quantize.pt2e_quantizer_utils import QuantizationAnnotation

    aten = torch.ops.aten
    extra_ops = {aten.hardswish.default, aten.relu6.default, aten.hardtanh.default, aten.relu.default,
                 aten.add.Tensor, aten.adaptive_avg_pool2d.default, aten.mean.dim}

    class _FullIntQuantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            spec = self.global_config.input_activation
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target not in extra_ops:
                    continue
                if "quantization_annotation" in node.meta:
                    continue
                inputs = {a: spec for a in node.args[:2] if isinstance(a, torch.fx.Node)}
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=inputs, output_qspec=spec, _annotated=True)
            return model

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    act = config.input_activation
    act = dataclasses.replace(act, observer_or_fake_quant_ctr=_flat_histogram_observer().with_args(eps=2**-12))
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return _FullIntQuantizer().set_global(config)


@functools.lru_cache(maxsize=None)
def _flat_histogram_observer():
    """litert-torch's activation observer (a per-tensor histogram, eps 2**-12 as in its config),
    fed each activation as the flat block of memory it is. The graph runs channels-last (NHWC input), and on channels-last
    tensors torch's aminmax and histc, which the observer calls on every activation of every
    calibration batch, run 2-7x slower; per-tensor statistics do not depend on element order, so
    the histograms are the same."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    class FlatHistogramObserver(HistogramObserver):
        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            super().forward(flat_view(x_orig))
            return x_orig

    return FlatHistogramObserver


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor's elements in memory order (no copy for contiguous and
    channels-last tensors; anything else is copied)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


class TFLiteRunner:
    """Runs a TFLite file one image at a time: NCHW float images in, float logits out.

    It transposes to the file's NHWC layout and, for an int8 file, quantizes the input and
    dequantizes the output with the file's own scale and zero point, as a device would.
    """

    def __init__(self, path: str | Path, threads: int | None = 1):
        self.interpreter = interpreter_class()(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.layout = "NHWC" if int(self.input["shape"][-1]) == 3 else "NCHW"

    def io_details(self) -> dict:
        """Shape, dtype and quantization of the input and the output, for the model card."""
        def describe(d: dict, layout: str | None = None) -> dict:
            scale, zero_point = d["quantization"]
            out = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
            if layout:
                out["layout"] = layout
            if scale:
                out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
            return out

        return {"input": describe(self.input, self.layout), "output": describe(self.output)}

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        outs = []
        for i in range(len(x)):
            self.interpreter.set_tensor(self.input["index"], _quantize(x[i:i + 1], self.input))
            self.interpreter.invoke()
            outs.append(_dequantize(self.interpreter.get_tensor(self.output["index"]), self.output))
        return np.concatenate(outs)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind == "f" or not scale:
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
