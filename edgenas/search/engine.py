"""`search()`: one entry point for every strategy.

    from edgenas.search import Constraint, cost_metric, latency_metric, predictor_metric, search
    lat = latency_metric(table)                               # any object with predict_genomes
    result = search(space, predictor_metric(predictor), [Constraint(lat, 25.0)],
                    strategy="evolution", seed=0, report=[lat])
    print(result.best["arch"], result.best["accuracy"])

Strategies share the budget check, the feasibility machinery and the evaluation archive; the
result ranks every feasible architecture the strategy evaluated (top-k) and gives the Pareto
front of accuracy against the cost objectives.
"""
from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from edgenas.errors import ConfigError
from edgenas.search.constraints import Constraint, Constraints
from edgenas.search.differentiable import differentiable
from edgenas.search.evolution import evolution
from edgenas.search.nsga2 import nsga2
from edgenas.search.objectives import (
    COSTS, ArchBatch, Metric, cost_metric, latency_table_of, predictor_metric, spread_metric,
)
from edgenas.search.pareto import non_dominated
from edgenas.search.problem import Evaluator, Problem
from edgenas.search.random_search import random_search
from edgenas.search.rl import rl
from edgenas.search.tpe import tpe
from edgenas.search.results import SearchResult
from edgenas.space import SearchSpace, decode

log = logging.getLogger(__name__)

# name -> strategy(problem, rng, **options); each option is a keyword argument with a default,
# which `strategy_options` reads to check a caller's options and to record them in the result.
STRATEGIES: dict[str, Callable[..., None]] = {
    "evolution": evolution, "nsga2": nsga2, "random": random_search, "rl": rl, "tpe": tpe,
    "differentiable": differentiable,
}
HISTORY_POINTS = 200  # at most this many (evaluations, best so far) points in a result's history


def strategy_options(strategy: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options `strategy` runs with: its defaults, overridden by `given`. An option the strategy
    does not take is a `ConfigError` naming the ones it does."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown search strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    params = list(inspect.signature(STRATEGIES[strategy]).parameters.values())[2:]  # after (problem, rng)
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                          f"search strategy {strategy!r}; it takes {', '.join(defaults) or 'none'}")
    return defaults | dict(given or {})


def search(
    space: SearchSpace,
    accuracy: Metric,
    constraints: Sequence[Constraint] = (),
    strategy: str = "evolution",
    *,
    objectives: Sequence[Metric] | None = None,
    report: Sequence[Metric] = (),
    seed: int = 0,
    top_k: int = 10,
    max_evals: int | None = None,
    resolutions: Sequence[int] | None = None,
    spread_penalty: float = 0.0,
    **options: Any,
) -> SearchResult:
    """Find architectures of `space` that maximise `accuracy` within `constraints`.

    accuracy     the objective (a `Metric`; goal "max", or "min" to minimise, e.g. an error), or an
                 `AccuracyPredictor` (anything with predict_genomes), as `predictor_metric(accuracy)`;
                 for a predictor with `predict_spread` (an ensemble) the results also report each
                 architecture's spread, "accuracy_sd" (pp)
    constraints  `Constraint(metric, limit)`: feasible when metric <= limit; checked first
                 (`InfeasibleBudgetError` names the smallest achievable value)
    strategy     a name in STRATEGIES ("evolution", "nsga2", "random", "rl", "tpe",
                 "differentiable": supernet=, dataset=, steps, freeze_weights, ...); `options`
                 go to it as keyword arguments (see each strategy's signature, or
                 `strategy_options(name)` for its defaults); an option it does not take is a
                 ConfigError; the result records them all (`SearchResult.options`)
    objectives   NSGA-II's cost objectives (default: the additive constraint metrics, i.e.
                 latency tables, else MFLOPs); also the axes of the result's Pareto front
    report       extra metrics to compute for the top-k and the front (e.g. every latency table)
    max_evals    stop once this many distinct architectures have been evaluated
    resolutions  only subnets at these input resolutions (default: all of the space's), e.g. the
                 ones the supernet was trained at
    spread_penalty  with a predictor as `accuracy`: rank by its mean less this many standard
                 deviations of its ensemble ("accuracy_lower", `AccuracyPredictor.predict_lower`),
                 so that a winner the members disagree on loses to a surer one; the mean
                 ("accuracy") is reported beside it. 0 (the default) ranks by the mean.
    """
    # Recorded in the results file: the options that are plain values (not a supernet, a dataset
    # or a progress callback, which the differentiable strategy takes).
    recorded = {k: v for k, v in strategy_options(strategy, options).items()
                if v is None or isinstance(v, (bool, int, float, str, list, tuple))}
    if top_k < 1 or (max_evals is not None and max_evals < 1):
        raise ConfigError("top_k and max_evals must be at least 1")
    if not spread_penalty >= 0:
        raise ConfigError(f"spread_penalty must be a number >= 0, got {spread_penalty}")
    if not isinstance(accuracy, Metric) and hasattr(accuracy, "predict_genomes"):
        predictor = accuracy
        accuracy = predictor_metric(predictor, penalty=spread_penalty)
        extra = [predictor_metric(predictor)] if spread_penalty > 0 else []
        spread = spread_metric(predictor)
        report = [*extra, *([spread] if spread is not None else []), *report]
    elif spread_penalty:
        raise ConfigError("spread_penalty needs a predictor with an ensemble as the accuracy, not a Metric")
    started = time.perf_counter()
    cons = Constraints(space, constraints, resolutions)
    cons.check()
    if objectives is None:
        objectives = [c.metric for c in cons.items if c.metric.structure == "additive"] or [cost_metric("mflops")]
    evaluate = Evaluator(space, accuracy, max_evals)
    problem = Problem(space, evaluate, cons, list(objectives))
    rng = np.random.default_rng(seed)
    note = ""
    if cons.slack and cons.items:
        note = ("every budget is above the largest subnet (" + ", ".join(
            f"{c.metric.label} {v:g} {c.metric.unit}" for c, v in zip(cons.items, cons.values(cons.largest()[None])[0])
        ) + "), so every subnet fits; returning the largest")
        log.warning("note: %s", note)
        evaluate(cons.largest()[None])
        if strategy == "nsga2":  # the front is still worth having
            nsga2(problem, rng, **options)
    else:
        STRATEGIES[strategy](problem, rng, **options)
    result = _collect(problem, strategy, seed, top_k, report, note, time.perf_counter() - started,
                      force_largest=bool(note))
    result.options = recorded
    result.note = "; ".join(n for n in (result.note, problem.extra.pop("note", "")) if n)
    result.extra.update(problem.extra)
    return result


def _collect(problem: Problem, strategy: str, seed: int, top_k: int, report: Sequence[Metric], note: str,
             seconds: float, force_largest: bool) -> SearchResult:
    space, cons, evaluate = problem.space, problem.constraints, problem.evaluate
    genomes, values = evaluate.genomes, evaluate.values
    ok = cons.feasible(genomes)
    history = _history(values * evaluate.sign, ok, evaluate.sign)
    genomes, values = genomes[ok], values[ok]
    fitness = values * evaluate.sign
    order = np.argsort(-fitness, kind="stable")[:top_k]
    if force_largest:
        big = cons.largest()[None]
        order = np.concatenate([np.nonzero((genomes == big).all(1))[0][:1], order])
        order = order[np.sort(np.unique(order, return_index=True)[1])][:top_k]
    batch = ArchBatch(space, genomes)
    metrics = _unique([c.metric for c in cons.items] + list(problem.objectives) + list(report))
    archive = {m.name: m(batch) for m in metrics if m.name != evaluate.metric.name} | {evaluate.metric.name: values}
    # The front: accuracy (maximised) against each cost objective, over all feasible evaluations.
    F = np.column_stack([-fitness] + [archive[m.name] * (1 if m.goal == "min" else -1) for m in problem.objectives])
    front = np.nonzero(non_dominated(F))[0]
    front = front[np.argsort(F[front, 1], kind="stable")]
    rows = np.concatenate([order, front])
    table = _metric_table(space, genomes[rows], {name: v[rows] for name, v in archive.items()})
    return SearchResult(
        space=space, strategy=strategy, seed=seed, accuracy_name=evaluate.metric.name,
        budget={c.name: c.limit for c in cons.items}, top=table[:len(order)], front=table[len(order):],
        evaluations=evaluate.count, seconds=seconds, note=note, archive=archive,
        objective_names=[m.name for m in problem.objectives], resolutions=list(cons.resolutions), history=history,
    )


def _history(fitness: np.ndarray, feasible: np.ndarray, sign: float) -> dict[str, list]:
    """Best feasible objective value so far against the number of distinct architectures
    evaluated, in evaluation order: at most HISTORY_POINTS points, spaced geometrically (so the
    early climb shows), from the first feasible evaluation on, always ending at the last one."""
    n = len(fitness)
    if n == 0 or not feasible.any():
        return {"evaluations": [], "best": []}
    best = np.maximum.accumulate(np.where(feasible, fitness, -np.inf))
    first = int(np.argmax(feasible)) + 1
    at = np.unique(np.geomspace(first, n, HISTORY_POINTS).round().astype(np.int64).clip(first, n))
    at = np.union1d(at, [n])
    return {"evaluations": at.tolist(), "best": (sign * best[at - 1]).tolist()}


def _unique(metrics: list[Metric]) -> list[Metric]:
    seen, out = set(), []
    for m in metrics:
        if m.name not in seen:
            seen.add(m.name)
            out.append(m)
    return out


def _metric_table(space: SearchSpace, genomes: np.ndarray, values: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One entry per genome: the arch string, every metric's value, MACs, params and peak memory."""
    costs = ArchBatch(space, genomes).costs()
    entries = []
    for i, arch in enumerate(decode(space, genomes)):
        entry: dict[str, Any] = {"arch": str(arch)}
        for name, v in values.items():
            if name in COSTS:  # macs, params and peak memory are always there, unscaled
                continue
            table = latency_table_of(name)
            if table is None:
                entry[name] = float(v[i])
            else:
                entry.setdefault("latency_ms", {})[table] = float(v[i])
        entry["macs"] = int(costs["macs"][i])
        entry["params"] = int(costs["params"][i])
        entry["peak_activation_bytes"] = int(costs["peak_activation_bytes"][i])
        entries.append(entry)
    return entries
