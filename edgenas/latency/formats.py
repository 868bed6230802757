"""Model formats the profiler can write: one per device runtime.

A format turns one `OpSpec` into a single-op model file and a whole `nn.Module` subnet into a
model file, both in the runtime's format:

    fmt = model_format("onnxruntime")
    fmt.write_op(op, dir / "op0.onnx")
    fmt.write_net(static_net, (1, 3, 224, 224), dir / "net0.onnx")

ONNX and TFLite are built in (`register_format` replaces the format of a runtime). A format may
also have `write_ops(ops, directory, on_stage) -> [file or (file, signature)]`, which writes many
layers at once: TFLite does, writing tens of layers as signatures of one file, since one
litert-torch conversion per layer would cost ~30 min for mbv3-w1.0 at 5 resolutions. And it may
have `write_nets([(make_net, input_shape, path), ...], on_stage) -> [path]`, which writes many
subnets at once. TFLite's and onnxruntime int8's `write_ops` and `write_nets` convert their files
in worker processes, one per host core (`edgenas.export.pool`; EDGENAS_CONVERT_WORKERS=1 converts
in this process).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from edgenas.errors import EdgeNASError
from edgenas.space.ops import OpSpec

# torch.onnx.export (TorchScript) is not safe to run from several threads at once, and several
# devices may be profiled in parallel threads.
_EXPORT_LOCK = threading.Lock()


class ModelFormat(Protocol):
    name: str  # "onnx" | "tflite"
    suffix: str  # file suffix, with the dot

    def write_op(self, op: OpSpec, path: Path) -> Path: ...  # or, batching, write_ops (see above)

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


LAYERS_PER_FILE = 32  # TFLite layers converted together and written as signatures of one file


class TFLiteFormat:
    """fp32 TFLite: single layers as signatures of few files (`edgenas.export.tflite_layers`),
    whole subnets as `edgenas export` writes model.tflite.

    `write_ops` converts `LAYERS_PER_FILE` layers at a time, side by side in one litert-torch
    conversion, and returns a `(file, signature)` per layer, which the agent times alone. The
    per-call overhead model is written and timed the same way (a one-signature file).
    `write_ops` and `write_nets` convert `workers` files at a time in worker processes (None:
    `edgenas.export.pool.convert_workers`, EDGENAS_CONVERT_WORKERS or one per core)."""

    name, suffix, precision = "tflite", ".tflite", "fp32"
    layers_per_file = LAYERS_PER_FILE
    workers: int | None = None

    def write_ops(self, ops, directory: Path, on_stage=None) -> list[tuple[Path, str]]:
        from edgenas.export.tflite_layers import convert_layers_fp32
        from edgenas.nn.static import build_op

        def prepare(group):
            return [build_op(op) for op in group], [(op.in_ch, op.in_size, op.in_size) for op in group]

        return _in_files(ops, directory, self.layers_per_file, convert_layers_fp32, prepare, on_stage, self.workers)

    def write_net(self, net, input_shape, path: Path) -> Path:
        from edgenas.export.formats import FORMATS

        with _EXPORT_LOCK:
            return FORMATS["tflite"].write(net, input_shape, path)

    def write_nets(self, nets, on_stage=None) -> list[Path]:
        return _nets_in_processes("tflite", nets, None, on_stage, self.workers)

    def write_overhead(self, module, input_shape, path: Path) -> tuple[Path, str]:
        return write_overhead_signature(module, input_shape, path)

    def describe(self) -> dict:
        return {"format": "tflite", "precision": "fp32", "exporter": "litert-torch",
                "ops": "each layer as export converts it (deployable, split_depthwise, NHWC in and out)",
                "batching": f"up to {self.layers_per_file} layers per litert-torch conversion, one signature each, "
                            "each signature timed alone (edgenas.export.tflite_layers)",
                "networks": "FORMATS['tflite'].write, as edgenas export writes model.tflite",
                "overhead": "one-ReLU layer in a one-signature file, timed as the layers are"}


def _in_files(ops, directory: Path, per_file: int, convert, prepare, on_stage=None,
              workers: int | None = None) -> list[tuple[Path, str]]:
    """Write `ops` `per_file` at a time, file k by convert(*prepare(group k), names, path) in worker
    processes (`edgenas.export.pool.run_jobs`); a (file, signature) per op. prepare runs here,
    seeded by k (random layer weights do not depend on the order of conversions); on_stage hears
    of each finished file."""
    from edgenas.export.pool import convert_workers, run_jobs

    groups = [list(ops[s:s + per_file]) for s in range(0, len(ops), per_file)]
    starts = list(range(0, len(ops), per_file))
    names = [[f"op{s + i:05d}" for i in range(len(g))] for s, g in zip(starts, groups)]
    paths = [Path(directory) / f"ops{s:05d}.tflite" for s in starts]
    n = workers if workers is not None else convert_workers(len(groups))
    stage = on_stage or (lambda _text: None)
    stage(f"converting {len(ops)} layers into {len(groups)} files, {min(n, len(groups))} at a time")
    done = [0, 0]  # files, layers

    def finished(k: int, _path) -> None:
        done[0] += 1
        done[1] += len(groups[k])
        stage(f"converted {done[0]}/{len(groups)} files ({done[1]}/{len(ops)} layers)")

    def args(k: int) -> tuple:
        import torch

        with torch.random.fork_rng():  # the same weights for a file however many are converted before it
            torch.manual_seed(k)
            return (*prepare(groups[k]), names[k], paths[k])

    run_jobs(convert, len(groups), args, workers=n, on_done=finished, lock=_EXPORT_LOCK)
    return [(path, name) for path, group_names in zip(paths, names) for name in group_names]


def _nets_in_processes(format_name: str, nets, calib_images, on_stage=None, workers: int | None = None) -> list[Path]:
    """FORMATS[format_name].write(make_net(), input_shape, path, calib_images(input_shape)) for each
    (make_net, input_shape, path) of `nets`, in worker processes; the paths."""
    from edgenas.export.formats import FORMATS
    from edgenas.export.pool import run_jobs

    nets = list(nets)
    stage = on_stage or (lambda _text: None)
    done = [0]

    def args(i: int) -> tuple:
        make, shape, path = nets[i]
        return make(), shape, path, None if calib_images is None else calib_images(shape)

    def finished(_i, _path) -> None:
        done[0] += 1
        stage(f"exported {done[0]}/{len(nets)}")

    stage(f"exporting {len(nets)}")
    return run_jobs(FORMATS[format_name].write, len(nets), args, workers=workers, on_done=finished, lock=_EXPORT_LOCK)


def write_overhead_signature(module, input_shape, path: Path) -> tuple[Path, str]:
    """The per-call overhead model of a TFLite table: `module` (a ReLU) as the one signature of a
    file written like the layers' files, so the agent times it as it times a layer."""
    from edgenas.export.tflite_layers import convert_layers_fp32

    with _EXPORT_LOCK:
        convert_layers_fp32([module], [tuple(input_shape[-3:])], ["overhead"], path)
    return Path(path), "overhead"


_REGISTRY: dict[str, ModelFormat] = {"onnxruntime": OnnxFormat()}


def register_format(runtime: str, fmt: ModelFormat) -> None:
    """Use `fmt` for device profiles whose runtime is `runtime`."""
    _REGISTRY[runtime] = fmt


def model_format(runtime: str, precision: str = "fp32", activations=None) -> ModelFormat:
    """The format a device runtime ('onnxruntime' or 'tflite') times at a precision. int8 needs
    `activations` (an `edgenas.latency.int8.ActivationSource`): its layers are calibrated on them."""
    if precision == "int8":
        from edgenas.latency.int8 import Int8OnnxFormat, Int8TFLiteFormat

        if runtime not in ("onnxruntime", "tflite"):
            raise EdgeNASError(f"edgenas builds int8 latency tables for onnxruntime and tflite only, not {runtime}")
        if activations is None:
            raise EdgeNASError("an int8 latency table calibrates every layer on real activations: pass a trained "
                               "supernet (edgenas profile --supernet CKPT); its training images are used")
        if runtime == "tflite":
            from edgenas.export.tflite_export import require_litert

            require_litert()
            return Int8TFLiteFormat(activations)
        return Int8OnnxFormat(activations)
    if precision != "fp32":
        raise EdgeNASError(f"edgenas builds no {precision} latency tables for {runtime}")
    if runtime in _REGISTRY:
        return _REGISTRY[runtime]
    if runtime == "tflite":
        from edgenas.export.tflite_export import require_litert

        require_litert()  # a clear MissingDependencyError naming the extra when it is not installed
        fmt = TFLiteFormat()
        _REGISTRY[runtime] = fmt
        return fmt
    raise EdgeNASError(f"no model format for runtime {runtime!r}; known: onnxruntime, tflite")
