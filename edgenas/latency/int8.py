"""int8 latency tables: every layer quantized as `edgenas export --format onnx-int8` quantizes a
subnet, with its activation ranges calibrated on real activations.

A device profile with `precision: int8` times int8 models. Each layer of the table is cut from a
trained supernet (`ActivationSource`): for every resolution a base subnet (every unit at its
largest depth, kernels and expand ratios seeded) is run on a few of the supernet's training
images and the input of every layer is recorded. A layer at a block position is the block of a
subnet that differs from the base only there, so its recorded input is the input it really gets.
The layer, with its trained weights, is then written by `FORMATS["onnx-int8"].write` calibrated
on that input: the same static QDQ quantization (per-channel int8 weights, uint8 activations,
MinMax ranges) that export gives a whole subnet. Whole subnets (calibration, --validate, search
--verify) are materialized from the same supernet and written by the same call, calibrated on
the images themselves.

The per-call overhead is measured on an fp32 one-ReLU model, as for fp32 tables: it is the cost
of one runtime call (feeding the input, fetching the output), which does not depend on the
precision of the layers.

TFLite int8 (`Int8TFLiteFormat`, `runtime: tflite, precision: int8`) is the same with
`FORMATS["tflite-int8"]`: litert-torch's PT2E path, full integer (int8 input, output and every
op), per-channel symmetric int8 weights, per-tensor int8 activations whose ranges a histogram
observer takes from the layer's recorded inputs. Tens of layers are quantized side by side: one
PT2E export, prepare and convert of them all, each layer's observers fed its own recorded inputs
(`edgenas.export.tflite_export.calibrated_pt2e`, the steps export runs for a subnet), so each
gets the ranges and scales it gets alone; then one litert-torch conversion, written as
signatures of one file (`edgenas.export.tflite_layers.convert_layers_int8`), each timed alone.
The files are converted in worker processes, one per host core (`edgenas.export.pool`): each
gets its layers and their recorded inputs, so its quantization ranges are those this process
would compute.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgenas.errors import EdgeNASError
from edgenas.space import Arch, SearchSpace
from edgenas.space.ops import OpSpec, arch_ops


class ActivationSource:
    """Real inputs of every layer of a space, recorded from a trained supernet."""

    def __init__(self, supernet, images: torch.Tensor, description: str = "", seed: int = 0):
        if images is None or len(images) == 0:
            raise EdgeNASError("an int8 latency table needs calibration images: pass the trained supernet "
                               "(edgenas profile --supernet CKPT) whose training images calibrate every layer")
        self.supernet = supernet.eval()
        self.space: SearchSpace = supernet.space
        self.images = images.float()
        self.description = description or f"{len(images)} training images"
        self.seed = seed
        self._inputs: dict[int, list[torch.Tensor]] = {}  # resolution -> input of every layer of the base
        self._where: dict[str, tuple[Arch, int]] = {}  # op key -> (subnet holding it, layer index)
        self._bases: dict[int, Arch] = {}

    def images_at(self, resolution: int) -> torch.Tensor:
        from edgenas.train.bn import resize

        return resize(self.images, resolution)

    def base(self, resolution: int) -> Arch:
        if resolution not in self._bases:
            space = self.space
            rng = np.random.default_rng([self.seed, resolution])
            ks, es = space.kernel_sizes, space.expand_ratios
            units = tuple(tuple((ks[rng.integers(len(ks))], es[rng.integers(len(es))])
                                for _ in range(space.max_depth)) for _ in space.units)
            self._bases[resolution] = arch = Arch(resolution, units)
            self._index(arch)
        return self._bases[resolution]

    def _index(self, base: Arch) -> None:
        """Where every layer of the space at the base's resolution is found: in the base, or in the
        base with one block changed."""
        space = self.space
        for i, op in enumerate(arch_ops(space, base)):
            self._where.setdefault(op.key, (base, i))
        index = 2  # after the stem and the first block
        for u, blocks in enumerate(base.units):
            for j in range(len(blocks)):
                for k in space.kernel_sizes:
                    for e in space.expand_ratios:
                        units = [list(b) for b in base.units]
                        units[u][j] = (k, e)
                        arch = Arch(base.resolution, tuple(tuple(b) for b in units))
                        self._where.setdefault(arch_ops(space, arch)[index].key, (arch, index))
                index += 1

    @torch.no_grad()
    def _record(self, resolution: int) -> list[torch.Tensor]:
        if resolution not in self._inputs:
            net = self.supernet.materialize(self.base(resolution)).eval()
            inputs: list[torch.Tensor] = []
            x = self.images_at(resolution)
            for layer in net:
                inputs.append(x)
                x = layer(x)
            self._inputs[resolution] = inputs
        return self._inputs[resolution]

    def layer(self, op: OpSpec) -> tuple[torch.nn.Module, torch.Tensor]:
        """The layer `op` with trained weights, and the real inputs it gets."""
        for r in self.space.resolutions:
            if op.key in self._where:
                break
            self.base(r)
        if op.key not in self._where:
            raise EdgeNASError(f"layer {op.key} is not in space {self.space.name}")
        arch, i = self._where[op.key]
        module = self.supernet.materialize(arch)[i].eval()
        return module, self._record(arch.resolution)[i]


class Int8OnnxFormat:
    """The profiler's format for `runtime: onnxruntime, precision: int8` (see the module docstring)."""

    name, suffix, precision = "onnx-int8", ".onnx", "int8"

    def __init__(self, source: ActivationSource):
        self.source = source
        self.supernet = source.supernet  # whole subnets are materialized from it (edgenas.latency.profiler)
        # quantization processes, as TFLiteFormat.workers: onnxruntime.quantization spends ~1 s per layer
        # and ~10 s per w1.0 subnet on one core (calibration runs and graph rewriting)
        self.workers: int | None = None

    def write_op(self, op: OpSpec, path: Path) -> Path:
        from edgenas.export.formats import FORMATS

        module, inputs = self.source.layer(op)
        return FORMATS["onnx-int8"].write(module, tuple(inputs.shape[1:]), path, calib_images=inputs)

    def write_ops(self, ops, directory: Path, on_stage=None) -> list[Path]:
        """The layers' files (one per layer, as write_op writes each), quantized in worker processes."""
        from edgenas.export.formats import FORMATS
        from edgenas.export.pool import run_jobs
        from edgenas.latency.formats import _EXPORT_LOCK

        ops, stage, done = list(ops), on_stage or (lambda _text: None), [0]

        def args(i: int) -> tuple:
            module, inputs = self.source.layer(ops[i])
            return module, tuple(inputs.shape[1:]), directory / f"op{i:05d}{self.suffix}", inputs

        def finished(_i, _path) -> None:
            done[0] += 1
            if done[0] % 10 == 0 or done[0] == len(ops):
                stage(f"quantized {done[0]}/{len(ops)} layers")

        return run_jobs(FORMATS["onnx-int8"].write, len(ops), args, workers=self.workers, on_done=finished,
                        lock=_EXPORT_LOCK)

    def write_net(self, net, input_shape, path: Path) -> Path:
        from edgenas.export.formats import FORMATS

        return FORMATS["onnx-int8"].write(net, input_shape, path, calib_images=self.source.images_at(input_shape[-1]))

    def write_nets(self, nets, on_stage=None) -> list[Path]:
        from edgenas.latency.formats import _nets_in_processes

        return _nets_in_processes("onnx-int8", nets, lambda shape: self.source.images_at(shape[-1]), on_stage,
                                  self.workers)

    def write_overhead(self, module, input_shape, path: Path) -> Path:
        from edgenas.export.formats import FORMATS

        return FORMATS["onnx"].write(module, input_shape, path)

    def describe(self) -> dict:
        from edgenas.export.onnx_export import OPSET

        return {"format": "onnx-int8", "opset": OPSET, "precision": "int8",
                "quantization": "onnxruntime.quantization static QDQ: per-channel int8 weights, uint8 activations, "
                                f"MinMax ranges on real activations ({self.source.description})",
                "ops": "each layer cut from the trained supernet, calibrated on the inputs it gets in a subnet",
                "networks": "FORMATS['onnx-int8'].write, as edgenas export --format onnx-int8 writes model_int8.onnx",
                "overhead": "fp32 one-ReLU model"}


class Int8TFLiteFormat:
    """The profiler's format for `runtime: tflite, precision: int8` (see the module docstring)."""

    name, suffix, precision = "tflite-int8", ".tflite", "int8"

    def __init__(self, source: ActivationSource):
        from edgenas.latency.formats import LAYERS_PER_FILE

        self.source = source
        self.supernet = source.supernet
        self.layers_per_file = LAYERS_PER_FILE
        self.workers: int | None = None  # conversion processes, as TFLiteFormat.workers

    def write_ops(self, ops, directory: Path, on_stage=None) -> list[tuple[Path, str]]:
        from edgenas.export.tflite_layers import convert_layers_int8
        from edgenas.latency.formats import _in_files

        def prepare(group):
            layers, inputs = zip(*(self.source.layer(op) for op in group))
            return list(layers), list(inputs)

        return _in_files(ops, directory, self.layers_per_file, convert_layers_int8, prepare, on_stage, self.workers)

    def write_net(self, net, input_shape, path: Path) -> Path:
        from edgenas.export.formats import FORMATS

        return FORMATS["tflite-int8"].write(net, input_shape, path, calib_images=self.source.images_at(input_shape[-1]))

    def write_nets(self, nets, on_stage=None) -> list[Path]:
        from edgenas.latency.formats import _nets_in_processes

        return _nets_in_processes("tflite-int8", nets, lambda shape: self.source.images_at(shape[-1]), on_stage,
                                  self.workers)

    def write_overhead(self, module, input_shape, path: Path) -> tuple[Path, str]:
        from edgenas.latency.formats import write_overhead_signature

        return write_overhead_signature(module, input_shape, path)

    def describe(self) -> dict:
        return {"format": "tflite-int8", "precision": "int8", "exporter": "litert-torch PT2E",
                "quantization": "full integer (int8 input, output and ops): per-channel symmetric int8 weights, "
                                "per-tensor int8 activations, histogram-observer ranges on real activations "
                                f"({self.source.description})",
                "ops": "each layer cut from the trained supernet, quantized on the inputs it gets in a subnet",
                "batching": f"up to {self.layers_per_file} layers per PT2E pass (each calibrated on its own inputs) and "
                            "per litert-torch conversion, one signature each, each signature timed alone "
                            "(edgenas.export.tflite_layers)",
                "networks": "FORMATS['tflite-int8'].write, as edgenas export --format tflite-int8 writes "
                            "model_int8.tflite",
                "overhead": "fp32 one-ReLU layer in a one-signature file, timed as the layers are"}
