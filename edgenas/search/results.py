"""`SearchResult`: the ranked architectures, the Pareto front, the JSON file and the plot."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.io import atomic_write, atomic_write_json
from edgenas.search.objectives import latency_table_of
from edgenas.space import SearchSpace

FORMAT = "edgenas-search-results"
FORMAT_VERSION = 1


@dataclass
class SearchResult:
    space: SearchSpace
    strategy: str
    seed: int
    accuracy_name: str  # the objective's metric name, a key of every entry
    budget: dict[str, float]  # constraint metric name -> limit
    top: list[dict[str, Any]]  # best first: {"arch", accuracy_name, "latency_ms": {table: ms}, "macs", "params", ...}
    front: list[dict[str, Any]]  # Pareto front of accuracy against the objectives, cheapest first
    evaluations: int  # distinct architectures evaluated
    seconds: float
    note: str = ""  # e.g. that every budget is above the largest subnet
    archive: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # metric -> value per feasible evaluation
    objective_names: list[str] = field(default_factory=list)  # the cost axes of the front
    resolutions: list[int] = field(default_factory=list)  # the input resolutions searched
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "tables": {name: path}, "verify": [...]

    @property
    def best(self) -> dict[str, Any]:
        return self.top[0]

    @property
    def tables(self) -> list[str]:
        return [t for t in (latency_table_of(n) for n in self.archive) if t is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": {"name": self.space.name, "hash": self.space.hash},
            "strategy": self.strategy,
            "seed": self.seed,
            "objective": self.accuracy_name,
            "resolutions": self.resolutions or list(self.space.resolutions),
            "budget": _grouped(self.budget),
            "latency_tables": self.extra.get("tables", {t: None for t in self.tables}),
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "note": self.note,
            "top": self.top,
            "front": self.front,
            **{k: v for k, v in self.extra.items() if k != "tables"},
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def summary(self) -> str:
        """A few lines for the terminal: the best architecture and what it costs."""
        b = self.best
        lines = [f"best architecture ({self.strategy}, {self.evaluations} evaluated, {self.seconds:.2f} s):",
                 f"  {b['arch']}",
                 f"  {self.accuracy_name}: {b[self.accuracy_name]:.2f}"]
        for table, ms in b.get("latency_ms", {}).items():
            lines.append(f"  latency on {table}: {ms:.2f} ms" + _limit(self.budget.get(f"latency_ms[{table}]"), "ms"))
        lines.append(f"  MACs: {b['macs'] / 1e6:.1f} M" + _limit(self.budget.get("mflops"), "M"))
        lines.append(f"  params: {b['params'] / 1e6:.2f} M" + _limit(self.budget.get("mparams"), "M"))
        if "peak_kb" in self.budget:
            lines.append(f"  peak activations: {b['peak_activation_bytes'] / 1024:.0f} KB" + _limit(self.budget["peak_kb"], "KB"))
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """PNG of accuracy against each cost axis: every evaluated architecture (faint), the
        Pareto front (line) and the best one (star); one colour per latency table."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from edgenas.search.pareto import non_dominated

        axes = [n for n in self.archive if latency_table_of(n) is not None] or list(self.objective_names)
        acc = np.asarray(self.archive[self.accuracy_name])
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, name in enumerate(axes):
            x = np.asarray(self.archive[name])
            color = f"C{i}"
            label = latency_table_of(name) or name
            ax.scatter(x, acc, s=4, alpha=0.15, color=color, linewidths=0)
            on = non_dominated(np.column_stack([x, -acc]))
            order = np.argsort(x[on])
            ax.plot(x[on][order], acc[on][order], "-o", ms=3, color=color, label=f"{label}: front")
            best = self.best.get("latency_ms", {}).get(label, self.best.get(name))
            if best is not None:
                ax.scatter([best], [self.best[self.accuracy_name]], marker="*", s=160, color=color,
                           edgecolors="black", zorder=5, label=f"{label}: best")
            if name in self.budget:
                ax.axvline(self.budget[name], color=color, ls="--", lw=1, label=f"{label}: budget")
        unit = "latency (ms)" if latency_table_of(axes[0]) else axes[0]
        ax.set_xlabel(unit)
        ax.set_ylabel(self.accuracy_name)
        ax.set_title(f"{self.space.name}: {self.strategy}, seed {self.seed}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()

        def write(f):
            fig.savefig(f, format="png", dpi=120)

        try:
            return atomic_write(path, write)
        finally:
            plt.close(fig)


def _grouped(values: dict[str, float]) -> dict[str, Any]:
    """{"latency_ms[a]": x, "mflops": y} -> {"latency_ms": {"a": x}, "mflops": y}."""
    out: dict[str, Any] = {}
    for name, v in values.items():
        table = latency_table_of(name)
        if table is None:
            out[name] = v
        else:
            out.setdefault("latency_ms", {})[table] = v
    return out


def _limit(limit: float | None, unit: str) -> str:
    return "" if limit is None else f" (budget {limit:g} {unit})"
