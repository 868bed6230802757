"""Pick an architecture out of a search results file (`edgenas search --out results.json`).

The search writes {"format": "edgenas-search-results", "space": {"name", "hash"}, "objective":
"accuracy", "budget": {"latency_ms[TABLE]": ms, ...}, "top": [{"arch", "accuracy", "latency_ms":
{TABLE: ms}, ...}, ...]} with the best architecture first. A plain {"results": [...]} or a bare
list of entries with an "arch" string is read the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenas.errors import EdgeNASError


@dataclass(frozen=True)
class ResultsEntry:
    arch: str  # the architecture string
    rank: int  # 1 = best
    accuracy: float | None  # the search's accuracy estimate (its objective), when present
    predicted_latency_ms: dict[str, float]  # table name -> ms, as the search predicted
    budget_ms: dict[str, float]  # table name -> latency budget of the search
    space_name: str | None
    space_hash: str | None
    entry: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole entry

    def budget_for(self, tables: list[str] | None = None) -> float | None:
        """The latency budget for one of `tables` (by name), else the only latency budget there is."""
        for name in tables or []:
            if name in self.budget_ms:
                return self.budget_ms[name]
        return next(iter(self.budget_ms.values())) if len(self.budget_ms) == 1 else None


def read_results(path: str | Path, rank: int = 1) -> ResultsEntry:
    """The `rank`-th entry (1 = best) of a results file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeNASError(f"results file {path} not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgeNASError(f"cannot read results file {path}: {exc}") from None
    entries = data if isinstance(data, list) else (data.get("top") or data.get("results")) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise EdgeNASError(f"{path} has no ranked architectures (expected a \"top\" or \"results\" list)")
    if not 1 <= rank <= len(entries):
        raise EdgeNASError(f"--rank {rank} is out of range: {path} ranks {len(entries)} architecture(s), 1 to {len(entries)}")
    entry = entries[rank - 1]
    if not isinstance(entry, dict) or not isinstance(entry.get("arch"), str):
        raise EdgeNASError(f"entry {rank} of {path} has no \"arch\" string")
    meta = data if isinstance(data, dict) else {}
    objective = meta.get("objective", "accuracy")
    latency = entry.get("latency_ms")
    predicted = {str(k): float(v) for k, v in latency.items()} if isinstance(latency, dict) else (
        {"search": float(latency)} if isinstance(latency, (int, float)) else {})
    budget = {}
    for key, value in (meta.get("budget") or {}).items():
        if key.startswith("latency_ms[") and key.endswith("]"):
            budget[key[len("latency_ms["):-1]] = float(value)
        elif key in ("latency_ms", "budget_ms"):
            budget["search"] = float(value)
    space = meta.get("space") if isinstance(meta.get("space"), dict) else {}
    acc = entry.get(objective, entry.get("accuracy"))
    return ResultsEntry(
        arch=entry["arch"], rank=rank, accuracy=float(acc) if isinstance(acc, (int, float)) else None,
        predicted_latency_ms=predicted, budget_ms=budget, space_name=space.get("name"),
        space_hash=space.get("hash"), entry=entry,
    )
