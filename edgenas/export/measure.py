"""Measured, not only predicted: run exported files on a device and compare with the prediction.

    comparisons = measure_exports(report, "device_profiles/local-cpu.yaml", budget_ms=10)
    for c in comparisons:
        print(c.line())
        if c.over_budget: print("warning:", c.warning())

The files whose format the profile's runtime runs (.onnx for onnxruntime, .tflite for tflite) are
measured through the device agent; each result goes into the model card (rewritten atomically).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgenas.errors import EdgeNASError
from edgenas.export.card import CARD_NAME, load_card, write_card
from edgenas.export.formats import formats_for

log = logging.getLogger(__name__)



def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value >= 0.01 else f"{value:.3g} ms"


@dataclass(frozen=True)
class LatencyComparison:
    format: str
    file: str
    device: str  # the profile's name
    measured_ms: float | None  # median; None when the measurement failed
    predicted_ms: float | None  # from the latency table for this device, when there is one
    table: str | None  # that table's name
    budget_ms: float | None
    error: str | None = None

    @property
    def over_budget(self) -> bool:
        return self.measured_ms is not None and self.budget_ms is not None and self.measured_ms > self.budget_ms

    def line(self) -> str:
        if self.error:
            return f"{self.format:<11} {self.file:<18} on {self.device}: measurement FAILED: {self.error}"
        text = f"{self.format:<11} {self.file:<18} on {self.device}: measured {_ms(self.measured_ms)}"
        if self.predicted_ms is not None:
            ratio = self.measured_ms / self.predicted_ms if self.predicted_ms else float("inf")
            text += f", predicted {_ms(self.predicted_ms)} ({self.table}; measured/predicted {ratio:.2f})"
        if self.budget_ms is not None:
            text += f", budget {self.budget_ms:g} ms"
        return text

    def warning(self) -> str:
        predicted = f" (predicted {_ms(self.predicted_ms)})" if self.predicted_ms is not None else ""
        return (f"measured latency of {self.file} on {self.device} is {_ms(self.measured_ms)}{predicted}, "
                f"over the search budget of {self.budget_ms:g} ms")


def check_measurable(profile, formats) -> None:
    """EdgeNASError unless one of `formats` is a file the profile measures: its runtime and precision."""
    wanted = formats_for(profile.runtime, getattr(profile, "precision", "fp32"))
    if not set(formats) & set(wanted):
        wanted = " or ".join(wanted) or "another format"
        what = profile.runtime if profile.precision == "fp32" else f"{profile.precision} {profile.runtime}"
        raise EdgeNASError(f"device profile {profile.name} runs {what} models, but the export has no "
                           f"file for it; add --format {wanted} or pick a profile for another runtime")


def _measures(profile, fmt: str) -> bool:
    """Whether a profile measures files of format `fmt` (same runtime, same precision)."""
    return fmt in formats_for(profile.runtime, getattr(profile, "precision", "fp32"))


def _predicted_for(card: dict, profile) -> tuple[str | None, float | None]:
    """The predicted latency from the table built on this profile (by key), else the only one there is."""
    latency = card.get("latency") or {}
    predicted: dict = latency.get("predicted_ms") or {}
    tables: dict = latency.get("tables") or {}
    for name, key in tables.items():
        if key == profile.key() and name in predicted:
            return name, float(predicted[name])
    for name in predicted:
        if name == profile.key() or name.startswith(profile.key()):
            return name, float(predicted[name])
    if len(predicted) == 1:
        name = next(iter(predicted))
        return name, float(predicted[name])
    return None, None


def measure_exports(
    export: Any,
    profile: Any,
    budget_ms: float | None = None,
    on_result: Callable[[LatencyComparison], None] | None = None,
) -> list[LatencyComparison]:
    """Measure the exported files a device profile can run; record them in the model card.

    export: an `ExportReport`, or the export directory / its model.json.
    profile: a `DeviceProfile` or a profile path/name.
    budget_ms: the latency budget; default the one recorded in the card.
    """
    from edgenas.device import load_profile
    from edgenas.device.runner import measure_written

    if hasattr(export, "card_path"):
        card_path, card = Path(export.card_path), export.card
    else:
        card_path = Path(export) / CARD_NAME if Path(export).is_dir() else Path(export)
        card = load_card(card_path)
    if not hasattr(profile, "runtime"):
        profile = load_profile(profile)
    check_measurable(profile, list(card.get("files", {})))
    files = {fmt: card_path.parent / entry["file"] for fmt, entry in card.get("files", {}).items()
             if entry.get("file") and _measures(profile, fmt)}
    if not files:
        raise EdgeNASError(f"the export in {card_path.parent} has no {profile.precision} {profile.runtime} file to "
                           "measure: its conversion failed")
    budget = budget_ms if budget_ms is not None else (card.get("latency") or {}).get("budget_ms")
    table, predicted = _predicted_for(card, profile)
    fmt_of = {path.name: fmt for fmt, path in files.items()}
    comparisons: list[LatencyComparison] = []
    measured = card.setdefault("latency", {}).setdefault("measured", [])

    def record(r) -> None:
        fmt = fmt_of[r.model]
        c = LatencyComparison(fmt, r.model, profile.name, r.median_ms if r.ok else None, predicted, table,
                              budget, r.error)
        comparisons.append(c)
        entry = {"format": fmt, "file": r.model, "device": profile.name, "profile_key": profile.key(),
                 "median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms, "count": r.count,
                 "error": r.error, "predicted_ms": predicted, "table": table, "budget_ms": budget,
                 "over_budget": c.over_budget}
        measured[:] = [m for m in measured if not (m.get("file") == r.model and m.get("profile_key") == profile.key())]
        measured.append(entry)
        card["files"][fmt]["measured"] = entry
        if c.over_budget:
            log.warning("warning: %s", c.warning())
        if on_result is not None:
            on_result(c)

    measure_written(profile, list(files.values()), None, on_result=lambda _path, r: record(r))
    write_card(card_path, card)
    return comparisons
