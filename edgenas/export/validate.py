"""Checks an exported model must pass, and the typed errors they raise.

Every export is validated against the PyTorch network it came from:
- a float model (ONNX, fp32 TFLite) must give the same logits: max |diff| <= atol on real images;
- an int8 model must pick the same class as PyTorch on almost every test image (top-1 agreement)
  and lose at most `max_drop_pp` percentage points of test accuracy.
A failure is an `ExportValidationError` whose message carries the numbers and the limit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenas.errors import EdgeNASError

# Defaults; tests and callers may pass their own.
ATOL = 1e-4  # max |logit difference| between a float export and PyTorch
MIN_AGREEMENT = 0.98  # share of images where int8 and PyTorch pick the same class
MAX_DROP_PP = 1.0  # int8 test accuracy may be at most this many percentage points below PyTorch's


class ExportValidationError(EdgeNASError):
    """An exported file does not compute what the PyTorch network computes."""

    def __init__(self, fmt: str, message: str):
        super().__init__(f"{fmt}: {message}")
        self.format = fmt


class ParityError(ExportValidationError):
    """A float export's outputs differ from PyTorch's by more than the tolerance."""

    def __init__(self, fmt: str, max_diff: float, atol: float, detail: str = ""):
        super().__init__(fmt, f"outputs differ from PyTorch by up to {max_diff:.3g}, more than the tolerance "
                              f"{atol:.3g}{detail}; the file is kept but marked invalid")
        self.max_diff, self.atol = max_diff, atol


class ShapeError(ExportValidationError):
    """An export's output shape is not PyTorch's."""

    def __init__(self, fmt: str, got: tuple, expected: tuple):
        super().__init__(fmt, f"output shape {got} differs from PyTorch's {expected}")
        self.got, self.expected = got, expected


class QuantizationError(ExportValidationError):
    """An int8 export disagrees with PyTorch too often or loses too much accuracy."""

    def __init__(self, fmt: str, agreement: float, min_agreement: float, drop_pp: float | None, max_drop_pp: float):
        parts = []
        if agreement < min_agreement:
            parts.append(f"top-1 agreement with fp32 is {100 * agreement:.2f}%, below {100 * min_agreement:.2f}%")
        if drop_pp is not None and drop_pp > max_drop_pp:
            parts.append(f"test accuracy drops by {drop_pp:.2f} pp, more than {max_drop_pp:.2f} pp")
        super().__init__(fmt, " and ".join(parts) + "; the file is kept but marked invalid "
                              "(try more --calib-images, or use the float export)")
        self.agreement, self.min_agreement = agreement, min_agreement
        self.drop_pp, self.max_drop_pp = drop_pp, max_drop_pp


def check_parity(fmt: str, reference: np.ndarray, output: np.ndarray, atol: float = ATOL) -> float:
    """The max |difference|; raises ShapeError or ParityError (also for NaN outputs)."""
    reference, output = np.asarray(reference), np.asarray(output)
    if reference.shape != output.shape:
        raise ShapeError(fmt, tuple(output.shape), tuple(reference.shape))
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    max_diff = float(np.nanmax(diff)) if diff.size else 0.0
    if not np.isfinite(output).all():
        raise ParityError(fmt, float("inf"), atol, " (the export produced NaN or infinite values)")
    if max_diff > atol:
        raise ParityError(fmt, max_diff, atol)
    return max_diff


@dataclass(frozen=True)
class QuantizedStats:
    agreement: float  # share of images where int8 and PyTorch pick the same class
    accuracy: float | None  # int8 top-1 accuracy (%) when labels are given
    drop_pp: float | None  # PyTorch accuracy minus int8 accuracy, in percentage points


def quantized_stats(reference: np.ndarray, output: np.ndarray, labels: np.ndarray | None,
                    reference_accuracy: float | None) -> QuantizedStats:
    ref_top1, out_top1 = np.argmax(reference, axis=1), np.argmax(output, axis=1)
    agreement = float(np.mean(ref_top1 == out_top1))
    if labels is None or reference_accuracy is None:
        return QuantizedStats(agreement, None, None)
    accuracy = accuracy_pct(output, labels)
    return QuantizedStats(agreement, accuracy, reference_accuracy - accuracy)


def check_quantized(fmt: str, stats: QuantizedStats, min_agreement: float = MIN_AGREEMENT,
                    max_drop_pp: float = MAX_DROP_PP) -> None:
    if stats.agreement < min_agreement or (stats.drop_pp is not None and stats.drop_pp > max_drop_pp):
        raise QuantizationError(fmt, stats.agreement, min_agreement, stats.drop_pp, max_drop_pp)


def accuracy_pct(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))
