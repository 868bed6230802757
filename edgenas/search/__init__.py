"""Hardware-aware search: objectives, constraints, the accuracy predictor, and three strategies.

    search(space, accuracy, constraints, strategy="evolution"|"nsga2"|"random") -> SearchResult

Zero-cost proxies (synflow, grad_norm, snip, naswot, zico) of subnets are in
`edgenas.search.proxies`; `proxy_metric(supernet, name, batches)` makes one the objective.

See `edgenas.search.objectives` for the metric interface a plugged-in predictor follows.
"""
from edgenas.search.constraints import Constraint, Constraints, InfeasibleBudgetError, MetricRange, metric_range
from edgenas.search.engine import STRATEGIES, search
from edgenas.search.objectives import (
    ArchBatch, Metric, cost_metric, latency_fn, latency_metric, latency_metric_name, latency_table_of, predictor_metric,
    spread_metric, table_name,
)
from edgenas.search.pareto import hypervolume_2d, non_dominated
from edgenas.search.results import ResultsEntry, ResultsFile, SearchResult, load_results, read_results

__all__ = [
    "ArchBatch", "Constraint", "Constraints", "InfeasibleBudgetError", "Metric", "MetricRange", "ResultsEntry",
    "ResultsFile", "STRATEGIES", "SearchResult", "cost_metric", "hypervolume_2d", "latency_fn", "latency_metric",
    "latency_metric_name", "latency_table_of", "load_results", "metric_range", "non_dominated", "predictor_metric",
    "read_results", "search", "spread_metric", "table_name",
]
