"""What a search measures: `ArchBatch`, `Metric`, and the built-in metrics.

The objective interface
-----------------------
A metric is any callable that takes a batch of architectures and returns one number per
architecture:

    def my_metric(archs: Sequence[Arch]) -> array-like of float, len(archs)

The search calls it with an `ArchBatch`, which is a read-only sequence of `Arch` (index it,
iterate it, take `len`; `list(archs)` gives a plain list) that also carries the same batch in
vectorised form, so fast metrics never touch Python objects:

    archs.space       the SearchSpace
    archs.genomes     int64 array (n, genome length), see `edgenas.space.encode`
    archs.features()  float32 one-hot predictor features, `edgenas.space.features` (cached)
    archs.costs()     {'macs', 'params', 'peak_activation_bytes'} int64 arrays (cached)

Wrap it in `Metric(name, fn, goal="max"|"min", unit=...)` to use it as the accuracy objective, a
constraint (`Constraint(metric, limit)`: feasible when value <= limit) or an NSGA-II objective.
A metric must be deterministic: the search memoises values per architecture. Example, an
accuracy predictor trained elsewhere:

    acc = Metric("accuracy", lambda archs: my_model.predict([str(a) for a in archs]), goal="max", unit="%")
    result = search(space, acc, constraints=[Constraint(latency_metric(table), 25.0)])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edgenas.space import Arch, CostTable, SearchSpace, decode, features

MetricFn = Callable[[Sequence[Arch]], Any]


class ArchBatch(Sequence[Arch]):
    """A batch of architectures as genomes, decoded to `Arch` objects only when indexed."""

    def __init__(self, space: SearchSpace, genomes: np.ndarray, cost_table: CostTable | None = None):
        self.space = space
        self.genomes = np.asarray(genomes, dtype=np.int64)
        self._cost_table = cost_table
        self._features: np.ndarray | None = None
        self._costs: dict[str, np.ndarray] | None = None

    @cached_property
    def archs(self) -> list[Arch]:
        return decode(self.space, self.genomes)

    def __len__(self) -> int:
        return len(self.genomes)

    def __getitem__(self, i):
        return self.archs[i]

    def __iter__(self) -> Iterator[Arch]:
        return iter(self.archs)

    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = features(self.space, self.genomes)
        return self._features

    def costs(self) -> dict[str, np.ndarray]:
        if self._costs is None:
            table = self._cost_table or cost_table(self.space)
            self._costs = table(self.genomes)
        return self._costs


@dataclass
class Metric:
    """A named batch metric (see the module docstring for the interface `fn` follows)."""

    name: str  # shown in results and plots, e.g. "accuracy", "latency_ms[note10]", "macs"
    fn: MetricFn  # archs -> one value per arch
    goal: str = "min"  # "max" (accuracy) or "min" (latency, cost)
    unit: str = ""  # for messages: "%", "ms", "MACs", ...
    # How the metric is built from per-layer terms, which lets the search compute its exact
    # range over the space: "additive" (a sum of per-block terms that depend only on the
    # resolution, the block position and its kernel and expand ratio: a latency lookup table),
    # "monotone" (never grows when any choice gets smaller: MACs, params, peak memory), or None.
    structure: str | None = None
    label: str = field(default="")  # short name for messages ("latency on note10"); defaults to name

    def __post_init__(self) -> None:
        if self.goal not in ("max", "min"):
            raise ValueError(f"goal must be 'max' or 'min', got {self.goal!r}")
        self.label = self.label or self.name

    def __call__(self, batch: ArchBatch) -> np.ndarray:
        values = np.asarray(self.fn(batch), dtype=np.float64).reshape(-1)
        if len(values) != len(batch):
            raise ValueError(f"metric {self.name} returned {len(values)} values for {len(batch)} architectures")
        return values


# ---- built-in metrics -----------------------------------------------------------------------

def cost_table(space: SearchSpace) -> CostTable:
    """One CostTable per space (built once; it is a few small arrays)."""
    cache = space.__dict__.setdefault("_search_cache", {})
    if "cost_table" not in cache:
        cache["cost_table"] = CostTable(space)
    return cache["cost_table"]


COSTS = {  # metric name -> (CostTable key, unit, scale to the unit, label)
    "mflops": ("macs", "M", 1e-6, "MFLOPs (millions of MACs)"),
    "mparams": ("params", "M", 1e-6, "parameters"),
    "peak_kb": ("peak_activation_bytes", "KB", 1 / 1024, "peak activation memory"),
}


def cost_metric(name: str) -> Metric:
    """"mflops" (millions of MACs), "mparams" (millions of parameters) or "peak_kb" (peak fp32
    activation memory in KB), from `CostTable`."""
    key, unit, scale, label = COSTS[name]
    return Metric(name, lambda batch: batch.costs()[key] * scale, goal="min", unit=unit, structure="monotone",
                  label=label)


def latency_fn(table: Any, space: SearchSpace | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The vectorised `genomes -> ms` function of a latency table.

    Accepts `edgenas.latency.LatencyTable` (its `predictor(space)`, which also checks that the
    table was built for `space`) or any object with `predict_genomes(genomes) -> ms`.
    """
    if callable(getattr(table, "predictor", None)):
        return table.predictor(space)
    if callable(getattr(table, "predict_genomes", None)):
        return table.predict_genomes
    raise TypeError(f"{type(table).__name__} has neither predictor(space) nor predict_genomes(genomes)")


def table_name(table: Any, default: str = "latency") -> str:
    for attr in ("name", "device", "device_name"):
        value = getattr(table, attr, None)
        if isinstance(value, str) and value:
            return value
    return default


def latency_metric(table: Any, name: str | None = None, space: SearchSpace | None = None) -> Metric:
    """Predicted latency (ms) from a lookup table: a sum of per-layer terms."""
    name = name or table_name(table)
    predict = latency_fn(table, space)
    return Metric(latency_metric_name(name), lambda batch: predict(batch.genomes), goal="min", unit="ms",
                  structure="additive", label=f"latency on {name}")


def latency_metric_name(table: str) -> str:
    """"latency_ms[note10]", the metric name of table "note10"'s latency (inverse of latency_table_of)."""
    return f"latency_ms[{table}]"


def latency_table_of(metric_name: str) -> str | None:
    """"note10" for "latency_ms[note10]", None for other metric names. The one place that parses
    the name (results files, plots and summaries all go through it)."""
    if metric_name.startswith("latency_ms[") and metric_name.endswith("]") and len(metric_name) > len("latency_ms[]"):
        return metric_name[len("latency_ms["):-1]
    return None


def predictor_metric(predictor: Any, name: str | None = None, penalty: float = 0.0) -> Metric:
    """Accuracy (%) from an `AccuracyPredictor` (or anything with predict_genomes), named
    "accuracy". With `penalty` k > 0, the cautious accuracy the search then ranks by, named
    "accuracy_lower": `predictor.predict_lower(genomes, k)`, the ensemble's mean less k standard
    deviations (in logit space, so it stays in [0, 100])."""
    if penalty < 0 or penalty != penalty:
        raise ValueError(f"penalty must be a number >= 0, got {penalty}")
    if penalty == 0:
        return Metric(name or "accuracy", lambda batch: predictor.predict_genomes(batch.genomes), goal="max", unit="%")
    if not callable(getattr(predictor, "predict_lower", None)):
        raise TypeError(f"{type(predictor).__name__} has no predict_lower(genomes, k): it cannot be ranked by spread")
    return Metric(name or "accuracy_lower", lambda batch: predictor.predict_lower(batch.genomes, penalty), goal="max",
                  unit="%", label=f"accuracy - {penalty:g} sd")


SPREAD = "accuracy_sd"  # the name of an ensemble predictor's spread in results


def spread_metric(predictor: Any, name: str = SPREAD) -> Metric | None:
    """The spread (pp, the standard deviation over an ensemble's members) of a predictor's
    accuracy, from its `predict_spread(genomes) -> (mean, sd)`; None for a predictor without one."""
    if not callable(getattr(predictor, "predict_spread", None)):
        return None
    return Metric(name, lambda batch: predictor.predict_spread(batch.genomes)[1], goal="min", unit="pp",
                  label="predictor spread")
