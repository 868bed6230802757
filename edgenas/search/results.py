"""Search results: `SearchResult` (the ranked architectures, the Pareto front, the plot) and the
results file format, which this module alone writes (`SearchResult.save`) and reads
(`load_results`, `read_results`).

The file (format "edgenas-search-results", format_version 2) is JSON:

    {"format": "edgenas-search-results", "format_version": 2,
     "space": {"name": "mbv3-tiny", "hash": "3dfe2e7da733"},
     "strategy": "evolution", "seed": 0, "objective": "accuracy", "resolutions": [24, 28, 32],
     "budget": {"latency_ms": {TABLE: ms, ...}, "mflops": 8.0, "mparams": ..., "peak_kb": ...},
     "latency_tables": {TABLE: path or null}, "evaluations": 123, "seconds": 0.5, "note": "",
     "options": {"population": 100, ...},   the strategy's options, defaults included
     "history": {"evaluations": [1, 2, ...], "best": [70.1, 70.4, ...]},
                              best feasible objective value so far after that many evaluations
     "top": [ENTRY, ...],     best first
     "front": [ENTRY, ...],   the Pareto front, cheapest first
     ...}                     extra records (predictor, supernet, verify)
    ENTRY = {"arch": "r28_...", "accuracy": 91.2, "latency_ms": {TABLE: ms}, "macs": 7223440,
             "params": 1184490, "peak_activation_bytes": 169344, OTHER_METRIC: value, ...}

An ensemble predictor adds "accuracy_sd" to each entry: the spread of its members (pp, one
standard deviation). Ranked with `search --spread-penalty K`, the objective is "accuracy_lower"
(the mean less K of them, in logit space) and "accuracy" is the mean beside it.

Version 1 files hold the same keys; the first edgenas releases wrote their budget flat
({"latency_ms[TABLE]": ms}), later ones grouped as above. Both are read. Anything else (no format,
another format, a newer version) is refused with a message saying to run `edgenas search` again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from edgenas.errors import ConfigError
from edgenas.io import atomic_write, atomic_write_json
from edgenas.plotting import fit_title
from edgenas.search.objectives import SPREAD, latency_metric_name, latency_table_of
from edgenas.space import SearchSpace
from edgenas.validate import Invalid, echo, message, read_json, section_of, spec, value_of

FORMAT = "edgenas-search-results"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REGENERATE = "run edgenas search --out again to write a current results file"


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
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's options, defaults included
    history: dict[str, list] = field(default_factory=dict)  # {"evaluations": [...], "best": [...]}, see _history

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
            "options": self.options,
            "history": self.history or {"evaluations": [], "best": []},
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
        if SPREAD in b:  # an ensemble predictor: how sure it is of the winners
            if "accuracy" in b and self.accuracy_name != "accuracy":
                lines.append(f"  accuracy: {b['accuracy']:.2f} (the ensemble's mean)")
            spreads = [e[SPREAD] for e in self.top if SPREAD in e]
            lines[-1] += f" ± {b[SPREAD]:.2f} pp (predictor spread, 1 sd"
            lines[-1] += (f"; {min(spreads):.2f} to {max(spreads):.2f} pp over the top {len(spreads)})"
                          if len(spreads) > 1 else ")")
        for table, ms in b.get("latency_ms", {}).items():
            lines.append(f"  latency on {table}: {ms:.2f} ms" + _limit(self.budget.get(latency_metric_name(table)), "ms"))
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
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fit_title(ax, f"{self.space.name}: {self.strategy}, seed {self.seed}")

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


# ---- reading results files -----------------------------------------------------------------------

# Entry keys with a fixed meaning; any other key of an entry is a reported metric's value (a number).
_COUNTS = ("macs", "params", "peak_activation_bytes")
_MAX_MS = 1e9  # a latency in milliseconds (about 11 days) beyond which a value is a corrupt file


@dataclass(frozen=True)
class ResultsEntry:
    """One ranked architecture of a results file, as `edgenas export --from` uses it."""

    arch: str  # the architecture string
    rank: int  # 1 = best
    accuracy: float  # the search's estimate of its objective (e.g. the predictor's accuracy)
    predicted_latency_ms: dict[str, float]  # table name -> ms, as the search predicted
    budget_ms: dict[str, float]  # table name -> latency budget of the search
    space_name: str
    space_hash: str | None
    entry: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole entry

    def budget_for(self, tables: list[str] | None = None) -> float | None:
        """The latency budget for one of `tables` (by name), else the only latency budget there is."""
        for name in tables or []:
            if name in self.budget_ms:
                return self.budget_ms[name]
        return next(iter(self.budget_ms.values())) if len(self.budget_ms) == 1 else None


@dataclass(frozen=True)
class ResultsFile:
    """A results file, checked: every entry of `top` and `front` has an arch string, a finite
    objective value, non-negative finite latencies and non-negative integer costs."""

    path: Path
    format_version: int
    space_name: str
    space_hash: str | None
    strategy: str | None
    objective: str  # the key of each entry holding the objective's value
    budget: dict[str, float]  # constraint metric name -> limit, as SearchResult.budget ("latency_ms[T]")
    latency_tables: dict[str, str | None]  # table name -> the file the search read
    top: list[dict[str, Any]]  # best first
    front: list[dict[str, Any]]
    data: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole file
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's options ({} in older files)
    history: dict[str, list] = field(default_factory=dict)  # best so far against evaluations ({} in older files)

    @property
    def latency_budgets(self) -> dict[str, float]:
        """Table name -> latency budget in ms."""
        return {t: v for t, v in ((latency_table_of(n), v) for n, v in self.budget.items()) if t is not None}

    def entry(self, rank: int = 1) -> ResultsEntry:
        """The `rank`-th best architecture (1 = best)."""
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(self.top):
            raise ConfigError(f"--rank {rank} is out of range: {self.path} ranks {len(self.top)} architecture(s), "
                              f"1 to {len(self.top)}")
        e = self.top[rank - 1]
        return ResultsEntry(arch=e["arch"], rank=rank, accuracy=e[self.objective],
                            predicted_latency_ms=dict(e.get("latency_ms", {})), budget_ms=self.latency_budgets,
                            space_name=self.space_name, space_hash=self.space_hash, entry=e)


def read_results(path: str | Path, rank: int = 1) -> ResultsEntry:
    """The `rank`-th entry (1 = best) of a results file written by `edgenas search --out`."""
    return load_results(path).entry(rank)


def load_results(path: str | Path) -> ResultsFile:
    """A results file written by `edgenas search --out` (or `SearchResult.save`), checked before use.
    Every problem is a `ConfigError` in the one style: `FILE: key X: got Y, expected Z`."""
    path = Path(path)
    src = str(path)
    data = read_json(path, "search results file (edgenas search --out)")

    def bad(key: str | None, value: Any, expected: str, rendered: bool = False) -> ConfigError:
        return ConfigError(message(src, key, value if rendered else echo(value), expected))

    if not isinstance(data, dict):
        raise bad(None, data, f"a mapping with format '{FORMAT}' (a results file of edgenas search; {REGENERATE})")
    if data.get("format") != FORMAT:
        got = data.get("format", "nothing (the key is missing)")
        raise bad("format", got, f"'{FORMAT}', a results file of edgenas search ({REGENERATE})",
                  rendered="format" not in data)
    version = data.get("format_version", 1)  # the first releases wrote version 1 as it is now
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise bad("format_version", version, f"one of {', '.join(map(str, READABLE_VERSIONS))} "
                  f"(this edgenas reads those; {REGENERATE})")

    try:
        space = section_of(_SpaceRef, data.get("space"), "space")
        strategy = value_of(Optional[str], data.get("strategy"), "strategy", {"max_len": 200})
        objective = value_of(str, data.get("objective", "accuracy"), "objective", _OBJECTIVE)
        if objective in ("arch", "latency_ms") + _COUNTS:
            raise Invalid("objective", objective, _OBJECTIVE["edgenas_spec"]["doc"])
        tables = value_of(dict[str, Optional[str]], data.get("latency_tables", {}), "latency_tables")
        # the search's own records: not used to pick an arch, but a file with nonsense there is damaged
        value_of(Optional[int], data.get("seed"), "seed", spec(min=0))
        value_of(list[int], data.get("resolutions", []), "resolutions", spec(each=spec(min=1, max=4096)))
        value_of(Optional[int], data.get("evaluations"), "evaluations", spec(min=0))
        value_of(Optional[float], data.get("seconds"), "seconds", spec(min=0.0))
        if "top" not in data:
            raise Invalid("top", "nothing (the key is missing)", "a non-empty list of ranked architectures", rendered=True)
        top = value_of(list, data["top"], "top", {"min_len": 1, "doc": "a non-empty list of ranked architectures"})
        front = value_of(list, data.get("front", []), "front", {"doc": "a list of architectures"})
        options = value_of(dict[str, Any], data.get("options", {}), "options")
        history = _history_of(data.get("history", {}))
    except Invalid as exc:
        raise exc.at(src) from None
    name, space_hash = space.name, space.hash
    budget = _budget(data.get("budget", {}), bad)
    for key, entries in (("top", top), ("front", front)):
        for i, e in enumerate(entries):
            _entry(e, f"{key}.{i}", objective, bad)
    return ResultsFile(path=path, format_version=version, space_name=name, space_hash=space_hash, strategy=strategy,
                       objective=objective, budget=budget, latency_tables=dict(tables), top=top, front=front,
                       data=data, options=dict(options), history=history)


def _history_of(value: Any) -> dict[str, list]:
    """{"evaluations": increasing counts >= 1, "best": one finite number each}, or {} when absent."""
    if value == {}:
        return {}
    value_of(dict[str, list], value, "history")
    if set(value) != {"evaluations", "best"}:
        raise Invalid("history", sorted(value), "the keys evaluations and best")
    counts = value_of(list[int], value["evaluations"], "history.evaluations", spec(each=spec(min=1), increasing=True))
    best = value_of(list[float], value["best"], "history.best")
    if len(best) != len(counts):
        raise Invalid("history.best", f"{len(best)} values", f"one per count in history.evaluations ({len(counts)})",
                      rendered=True)
    return {"evaluations": counts, "best": [float(b) for b in best]}


@dataclass(frozen=True)
class _SpaceRef:
    """The searched space, as a results file names it."""

    name: str = field(metadata=spec(min_len=1, max_len=200, doc="the name of the searched space, a string"))
    hash: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=64))


_OBJECTIVE = spec(min_len=1, max_len=200, doc="the name of the objective metric, a string such as 'accuracy'")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _latencies(value: Any, key: str, bad, what: str) -> dict[str, float]:
    """{table: ms}: non-negative finite milliseconds."""
    if not isinstance(value, dict):
        raise bad(key, value, f"a mapping of latency table name to {what}")
    for table, ms in value.items():
        if not table or len(table) > 200:
            raise bad(key, table, "latency table names of 1 to 200 characters")
        if not _number(ms) or not 0 <= ms <= _MAX_MS:
            raise bad(f"{key}.{table}", ms, f"{what}: a finite number from 0 to {_MAX_MS:g}")
    return {t: float(v) for t, v in value.items()}


def _budget(value: Any, bad) -> dict[str, float]:
    """The budget as constraint metric name -> limit, from the grouped ({"latency_ms": {T: ms}}) or
    the flat ({"latency_ms[T]": ms}, version 1) form."""
    if not isinstance(value, dict):
        raise bad("budget", value, "a mapping of constraint to limit, e.g. {latency_ms: {TABLE: ms}}")
    out: dict[str, float] = {}
    for name, limit in value.items():
        if name == "latency_ms":
            for table, ms in _latencies(limit, "budget.latency_ms", bad, "a latency budget in ms").items():
                out[latency_metric_name(table)] = ms
        elif latency_table_of(name) is not None:  # the flat form of version 1
            if not _number(limit) or not 0 <= limit <= _MAX_MS:
                raise bad(f"budget.{name}", limit, f"a latency budget in ms: a finite number from 0 to {_MAX_MS:g}")
            out[name] = float(limit)
        elif not _number(limit):
            raise bad(f"budget.{name}", limit, "a finite number")
        else:
            out[name] = float(limit)
    return out


def _entry(e: Any, key: str, objective: str, bad) -> None:
    if not isinstance(e, dict):
        raise bad(key, e, f"a mapping {{arch, {objective}, latency_ms, macs, ...}}")
    arch = e.get("arch")
    if not isinstance(arch, str) or not 0 < len(arch) <= 4096:
        raise bad(f"{key}.arch", "nothing (the key is missing)" if "arch" not in e else echo(arch),
                  "an architecture string", rendered=True)
    if objective not in e:
        raise bad(f"{key}.{objective}", "nothing (the key is missing)", "the objective's value, a finite number",
                  rendered=True)
    for name, v in e.items():
        if name == "arch":
            continue
        if name == "latency_ms":
            _latencies(v, f"{key}.latency_ms", bad, "a predicted latency in ms")
        elif name in _COUNTS:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"{key}.{name}", v, "an integer >= 0")
        elif not _number(v):
            raise bad(f"{key}.{name}", v, "a finite number (a metric's value)")
