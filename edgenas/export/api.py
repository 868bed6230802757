"""Export one subnet to deployable files, validate each against PyTorch, and write its model card.

    report = export_subnet(net, ["onnx", "tflite", "tflite-int8"], "out/",
                           calib_images=train_images, test_data=(test_images, test_labels),
                           metadata=ExportMetadata(dataset="digits", class_names=names, mean=m, std=s))
    for r in report.results.values():
        print(r.line())
    if not report.valid: ...                     # a file failed its check; it is kept, marked invalid

`net` is a `StaticNet`, normally `supernet.subnet(arch, dataset)` (BatchNorm recalibrated). Every
format is validated on the test images (resized to the subnet's resolution): float files must
match PyTorch's logits within `atol` (tflite-fp16: within FP16_REL of the largest logit), the int8 file must agree with PyTorch's top-1 on at least
`min_agreement` of them and lose at most `max_drop_pp` points of accuracy. A file that fails is
kept and marked invalid in `model.json`; a conversion that crashes leaves no file and is marked
the same way, so one bad format does not lose the others.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from edgenas import __version__
from edgenas.errors import EdgeNASError, MissingDependencyError, require
from edgenas.export.card import CARD_FORMAT, CARD_NAME, CARD_VERSION, sha256_file, write_card
from edgenas.export.formats import FORMATS as _FORMATS
from edgenas.export.validate import (
    ATOL, MAX_DROP_PP, MIN_AGREEMENT, ExportValidationError, ParityError, accuracy_pct, check_parity,
    check_quantized, quantized_stats,
)
from edgenas.train.bn import resize

log = logging.getLogger(__name__)

FORMATS = tuple(_FORMATS)  # names; edgenas.export.formats owns what each is and how it is written
FILE_NAMES = {name: f.file_name for name, f in _FORMATS.items()}
FP16_REL = 1e-2  # tflite-fp16 matches PyTorch within this share of the largest |logit|
# With `export_subnet(..., dataset=)`: training images for int8 calibration, test images for the checks.
CALIB_IMAGES, EVAL_IMAGES = 256, 1000
PREPROCESS = "RGB, pixel/255, bilinear resize to resolution x resolution, then (x - mean) / std per channel"


@dataclass
class ExportMetadata:
    """What the model card and the ONNX properties say beyond the network itself."""

    # Dataset name, e.g. "digits".
    dataset: str = ""
    # Name of every class, indexed by label; None = "0", "1", ...
    class_names: Sequence[str] | None = None
    # Per-channel mean and std of pixel/255 the input is normalised with.
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    # The search space object (for its hash and the cost model); None = the preset named by net.space.
    space: Any = None
    # Latency tables (anything with .predict(arch) -> ms, and ideally .name and .header).
    latency_tables: Sequence[Any] = ()
    # Predicted latencies already known (table name -> ms), e.g. from a search results file.
    predicted_latency_ms: Mapping[str, float] = field(default_factory=dict)
    # The search's latency budget (ms), checked against measured latency.
    budget_ms: float | None = None
    # Where the model came from: {"checkpoint": ..., "results": ..., "rank": ...}.
    source: Mapping[str, Any] = field(default_factory=dict)
    # A fine-tuned subnet's record (CheckpointInfo.finetune: epochs, teacher, accuracy before and
    # after, ...), copied to the card's "finetune"; None: the subnet's weights are the supernet's.
    finetune: Mapping[str, Any] | None = None


@dataclass
class FormatResult:
    """One exported file and the outcome of its checks."""

    format: str
    path: Path | None  # None when the conversion itself failed
    valid: bool = True
    error: str | None = None  # why it is invalid
    exception: Exception | None = field(default=None, repr=False)  # the typed error, when there is one
    seconds: float = 0.0  # conversion time
    sha256: str | None = None
    bytes: int | None = None
    layout: str | None = None  # "NCHW" or "NHWC"
    io: dict = field(default_factory=dict)  # input/output shape, dtype, quantization
    max_abs_diff: float | None = None  # float formats
    atol: float | None = None
    accuracy: float | None = None  # top-1 % on the evaluation images, in the runtime
    agreement: float | None = None  # int8: share of images with PyTorch's top-1 class
    min_agreement: float | None = None  # int8: the limit it was checked against
    accuracy_drop_pp: float | None = None  # int8: PyTorch accuracy - this accuracy
    max_drop_pp: float | None = None  # int8: the limit it was checked against
    images: int = 0  # evaluation images

    def to_dict(self) -> dict[str, Any]:
        skip = ("exception", "path", "format", "io")
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {"file": self.path.name if self.path else None, **d, **self.io}

    def line(self) -> str:
        """One line for the terminal, e.g. `[ok] onnx  model.onnx  max |diff| 2.1e-07 <= 1e-04, accuracy 95.28%`."""
        name = self.path.name if self.path else "-"
        checks = []
        if self.max_abs_diff is not None:
            op = "<=" if self.max_abs_diff <= (self.atol or 0) else ">"
            checks.append(f"max |diff| {self.max_abs_diff:.2e} {op} {self.atol:.0e}")
        if self.agreement is not None:
            checks.append(f"top-1 agreement {100 * self.agreement:.2f}% (min {100 * self.min_agreement:.2f}%)")
        if self.accuracy_drop_pp is not None:
            checks.append(f"accuracy drop {self.accuracy_drop_pp:.2f} pp (max {self.max_drop_pp:.2f})")
        if self.accuracy is not None:
            checks.append(f"accuracy {self.accuracy:.2f}%")
        status = "[ok]    " if self.valid else "[FAILED]"
        text = f"{status} {self.format:<11} {name:<18} " + ", ".join(checks)
        if self.seconds:
            text += f"  ({self.seconds:.1f} s)"
        if not self.valid:
            text += f"\n         {self.error}"
        return text


@dataclass
class ExportReport:
    out_dir: Path
    card_path: Path
    card: dict[str, Any]
    results: dict[str, FormatResult]

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results.values())

    @property
    def failures(self) -> list[FormatResult]:
        return [r for r in self.results.values() if not r.valid]

    def raise_for_failures(self) -> None:
        """Raise the first failure's typed error (ParityError, QuantizationError, ...)."""
        for r in self.failures:
            if isinstance(r.exception, ExportValidationError):
                raise r.exception
            raise EdgeNASError(f"{r.format}: {r.error}")


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """"onnx,tflite" or a list -> validated list in the given order, without repeats."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in (str(x).strip().lower() for x in items):
        if not f:
            continue
        if f not in FORMATS:
            raise EdgeNASError(f"unknown export format {f!r}; choose from {', '.join(FORMATS)} (comma separated)")
        if f not in out:
            out.append(f)
    if not out:
        raise EdgeNASError(f"no export format given; choose from {', '.join(FORMATS)}")
    return out


def check_dependencies(formats: Iterable[str]) -> None:
    """Raise MissingDependencyError before any work if a requested format cannot be produced or checked."""
    formats = list(formats)
    if any(_FORMATS[f].runtime == "onnxruntime" for f in formats):
        require("onnx", "onnx")
        require("onnxruntime", "onnx")
    if any(_FORMATS[f].runtime == "tflite" for f in formats):
        from edgenas.export.tflite_export import interpreter_class, require_litert

        require_litert()
        interpreter_class()


def export_subnet(
    net: nn.Module,
    formats: str | Iterable[str],
    out_dir: str | Path,
    calib_images: torch.Tensor | None = None,
    test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    metadata: ExportMetadata | Mapping[str, Any] | None = None,
    *,
    atol: float = ATOL,
    min_agreement: float = MIN_AGREEMENT,
    max_drop_pp: float = MAX_DROP_PP,
    threads: int = 1,
    on_result: Callable[[FormatResult], None] | None = None,
    dataset: Any = None,
) -> ExportReport:
    """Export `net` to each format in `out_dir`, validate every file, write `model.json`.

    calib_images: normalised training images [N, 3, H, W] (int8 calibration; also the check
        images when there is no test data).
    test_data: (normalised images [N, 3, H, W], labels [N]): parity and accuracy are measured on them.
    dataset: an `ImageDataset` that fills what is not given: `CALIB_IMAGES` seeded training images
        for calibration, the first `EVAL_IMAGES` test images, and the card's dataset, class
        names, mean and std.
    Raises MissingDependencyError (before writing anything) when a format's package is missing.
    """
    formats = parse_formats(formats)
    check_dependencies(formats)
    meta = metadata if isinstance(metadata, ExportMetadata) else ExportMetadata(**dict(metadata or {}))
    if dataset is not None:
        if calib_images is None and any(_FORMATS[f].needs_calibration for f in formats):
            calib_images = dataset.sample_images("train", CALIB_IMAGES, torch.Generator().manual_seed(0))
        if test_data is None:
            test_data = first_images(dataset.test, EVAL_IMAGES)
        if not meta.dataset:
            meta = replace(meta, dataset=dataset.name, class_names=dataset.class_names, mean=dataset.mean,
                           std=dataset.std)
    if any(_FORMATS[f].needs_calibration for f in formats) and (calib_images is None or len(calib_images) == 0):
        raise EdgeNASError("int8 export needs calibration images (training images, e.g. 256 of them)")
    if test_data is None and calib_images is None:
        raise EdgeNASError("export needs test images or calibration images to check the exported files on")
    was_training = net.training
    try:
        return _export(net.eval(), formats, Path(out_dir), calib_images, test_data, meta, atol, min_agreement,
                       max_drop_pp, threads, on_result)
    finally:
        net.train(was_training)


def first_images(split, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n normalised images of a dataset split with their labels (all of them for n = 0)."""
    count = len(split) if n <= 0 else min(n, len(split))
    if hasattr(split, "batch"):
        return split.batch(torch.arange(count))
    images, labels = zip(*(split[i] for i in range(count)))
    return torch.stack(images), torch.tensor(labels)


def _export(net, formats, out_dir, calib_images, test_data, meta, atol, min_agreement, max_drop_pp, threads,
            on_result) -> ExportReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    resolution = int(getattr(net, "resolution"))

    if test_data is not None:
        images, labels = resize(test_data[0].float(), resolution), np.asarray(test_data[1])
    else:
        images, labels = resize(calib_images[:32].float(), resolution), None
    reference = _torch_logits(net, images)
    ref_accuracy = accuracy_pct(reference, labels) if labels is not None else None

    card = _card(net, meta, ref_accuracy, len(images))
    calib = resize(calib_images.float(), resolution) if calib_images is not None else None
    results: dict[str, FormatResult] = {}
    for fmt in formats:
        result = _export_one(fmt, net, out_dir / FILE_NAMES[fmt], resolution, calib, _onnx_metadata(card),
                             images, reference, labels, ref_accuracy, atol, min_agreement, max_drop_pp, threads)
        results[fmt] = result
        card["files"][fmt] = result.to_dict()
        if on_result is not None:
            on_result(result)
    for name, r in results.items():
        if _FORMATS[name].precision == "int8":
            card["accuracy"]["int8"] = r.accuracy
    card["valid"] = all(r.valid for r in results.values())
    card_path = write_card(out_dir / CARD_NAME, card)
    return ExportReport(out_dir, card_path, card, results)


@torch.no_grad()
def _torch_logits(net: nn.Module, images: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    return torch.cat([net(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).numpy()


def _export_one(fmt, net, path, resolution, calib, onnx_meta, images, reference, labels, ref_accuracy,
                atol, min_agreement, max_drop_pp, threads) -> FormatResult:
    start = time.perf_counter()
    spec = _FORMATS[fmt]
    try:
        spec.write(net, resolution, path, calib_images=calib, metadata=onnx_meta if spec.runtime == "onnxruntime" else None)
        runner = spec.runner(path, threads)
    except MissingDependencyError:
        raise
    except Exception as exc:  # a converter crash is this format's failure, not the whole export's
        log.debug("%s conversion failed", fmt, exc_info=True)
        return FormatResult(fmt, None, valid=False, error=f"conversion failed: {type(exc).__name__}: {exc}",
                            exception=exc, seconds=time.perf_counter() - start)
    result = FormatResult(fmt, path, seconds=time.perf_counter() - start, sha256=sha256_file(path),
                          bytes=path.stat().st_size, images=len(images))
    result.layout = runner.layout
    result.io = runner.io_details()
    try:
        output = runner(images)
        if labels is not None and output.shape == reference.shape:
            result.accuracy = accuracy_pct(output, labels)
        if spec.precision == "int8":
            stats = quantized_stats(reference, output, labels, ref_accuracy)
            result.agreement, result.accuracy_drop_pp = stats.agreement, stats.drop_pp
            result.min_agreement, result.max_drop_pp = min_agreement, max_drop_pp
            check_quantized(fmt, stats, min_agreement, max_drop_pp)
        else:  # float16 weights round each weight by up to 2^-11: a tolerance relative to the logits
            result.atol = atol if spec.precision == "fp32" else max(atol, FP16_REL * float(np.abs(reference).max()))
            result.max_abs_diff = check_parity(fmt, reference, output, result.atol)
    except ExportValidationError as exc:
        result.valid, result.error, result.exception = False, str(exc), exc
        if isinstance(exc, ParityError):
            result.max_abs_diff = exc.max_diff
    return result


def _card(net: nn.Module, meta: ExportMetadata, ref_accuracy: float | None, n_images: int) -> dict[str, Any]:
    """The model card without its per-file entries."""
    from edgenas.space import Arch, arch_cost, load_space

    arch_text, num_classes = str(getattr(net, "arch", "")), int(getattr(net, "num_classes", 0))
    space = meta.space
    cost: dict[str, Any] = {}
    if space is None and getattr(net, "space", ""):
        try:
            space = load_space(net.space)
        except EdgeNASError:
            space = None  # a custom space not passed in: no hash and no cost model
    predicted = {str(k): float(v) for k, v in meta.predicted_latency_ms.items()}
    tables: dict[str, Any] = {}
    if space is not None and arch_text:
        arch = Arch.parse(arch_text, space)
        c = arch_cost(space, arch)
        cost = {"macs": int(c.macs), "params": int(c.params), "peak_activation_bytes": int(c.peak_activation_bytes)}
        for i, table in enumerate(meta.latency_tables):
            name = str(getattr(table, "name", f"table{i + 1}"))
            try:
                predicted[name] = float(table.predict(arch))
            except EdgeNASError as exc:
                log.warning("no predicted latency from %s: %s", name, exc)
                continue
            tables[name] = (getattr(table, "header", {}).get("device") or {}).get("profile_key")
    else:
        cost = {"params": int(sum(p.numel() for p in net.parameters()))}
    names = list(meta.class_names) if meta.class_names is not None else [str(i) for i in range(num_classes)]
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "edgenas_version": __version__,
        "valid": True,
        "arch": arch_text,
        "space": {"name": getattr(space, "name", getattr(net, "space", "")), "hash": getattr(space, "hash", None)},
        "dataset": {"name": meta.dataset, "num_classes": num_classes, "class_names": names},
        "input": {"resolution": int(net.resolution), "channels": int(getattr(net, "in_channels", 3)),
                  "mean": [float(v) for v in meta.mean], "std": [float(v) for v in meta.std],
                  "preprocess": PREPROCESS},
        **cost,
        "accuracy": {"fp32": ref_accuracy, "int8": None, "split": "test" if ref_accuracy is not None else None,
                     "images": n_images},
        "latency": {"predicted_ms": predicted, "tables": tables, "budget_ms": meta.budget_ms, "measured": []},
        "files": {},
        "source": dict(meta.source),
        "finetune": _finetune_entry(meta.finetune),
    }


def _finetune_entry(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The card's "finetune": what a reader of the card needs from a fine-tune's record."""
    if not record:
        return None
    teacher = record.get("teacher") or {}
    return {"epochs": record.get("epochs"), "supernet": record.get("supernet"),
            "teacher": {k: teacher.get(k) for k in ("what", "arch", "checkpoint")},
            "kd_ratio": record.get("kd_ratio"), "lr": record.get("lr"),
            "accuracy_before": record.get("accuracy_before"), "accuracy_after": record.get("accuracy_after"),
            "split": record.get("split"), "images": record.get("images"), "seconds": record.get("seconds")}


def _onnx_metadata(card: Mapping[str, Any]) -> dict[str, Any]:
    """The ONNX metadata properties: what a deployment needs without the sidecar."""
    inp = card["input"]
    return {
        "edgenas_version": card["edgenas_version"],
        "arch": card["arch"],
        "space": card["space"]["name"],
        "space_hash": card["space"]["hash"] or "",
        "dataset": card["dataset"]["name"],
        "input_size": [1, inp["channels"], inp["resolution"], inp["resolution"]],
        "input_layout": "NCHW",
        "mean": inp["mean"],
        "std": inp["std"],
        "preprocess": inp["preprocess"],
        "class_names": card["dataset"]["class_names"],
        "accuracy": card["accuracy"]["fp32"],
        "predicted_latency_ms": card["latency"]["predicted_ms"],
    }
