"""Constraints (metric <= limit), their exact range over a space, and feasibility without rejection loops.

Honest budgets: before a search, every constraint's smallest achievable value over the whole
space is computed exactly (for a lookup-table latency, from the table's per-block terms; for
MACs, params and peak memory, the smallest subnet). A budget below it is an
`InfeasibleBudgetError` naming that minimum; a budget the largest subnet already meets is
reported as such.

Feasibility: search operators may produce children over budget. They are redone a bounded
number of times, then repaired by shrinking random choices one step at a time (at most the
number of genes; each step makes the arch smaller), and a child that is still over budget is
replaced by a known feasible genome. Nothing loops until it happens to succeed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edgenas.errors import EdgeNASError
from edgenas.search.objectives import ArchBatch, Metric
from edgenas.space import (
    SearchSpace, decode, encode, genome_of, largest, redraw_resolutions, resolution_indices, sample_genomes, smallest,
)


class InfeasibleBudgetError(EdgeNASError):
    """No architecture of the space meets a budget."""


@dataclass
class Constraint:
    metric: Metric  # smaller is better
    limit: float  # feasible when metric <= limit

    @property
    def name(self) -> str:
        return self.metric.name


@dataclass
class MetricRange:
    """The smallest and largest value of a metric over a whole space."""

    minimum: float
    argmin: np.ndarray  # genome (1-D) achieving the minimum
    maximum: float
    exact: bool  # False when estimated from samples (a metric of unknown structure)


def metric_range(space: SearchSpace, metric: Metric, rng: np.random.Generator | None = None,
                 resolutions: Sequence[int] | None = None) -> MetricRange:
    """Exact range for additive and monotone metrics, a sampled estimate otherwise; over the
    subnets at `resolutions` only when given (default: all of the space's)."""
    allowed = resolution_indices(space, resolutions)
    ends = encode(space, [smallest(space, space.resolutions[allowed[0]]), largest(space, space.resolutions[allowed[-1]])])
    if metric.structure == "additive":
        found = _additive_range(space, metric, rng or np.random.default_rng(0), allowed)
        if found is not None:
            return found
    if metric.structure in ("additive", "monotone"):
        v = metric(ArchBatch(space, ends))
        if metric.structure == "monotone":
            return MetricRange(float(v[0]), ends[0], float(v[1]), True)
    # Unknown structure: the best of the extremes and a large sample (a bound, not exact).
    rng = rng or np.random.default_rng(0)
    genomes = np.concatenate([ends, redraw_resolutions(sample_genomes(space, rng, 4096), allowed, rng)])
    v = metric(ArchBatch(space, genomes))
    return MetricRange(float(v.min()), genomes[int(v.argmin())], float(v.max()), False)


def _additive_probe(space: SearchSpace, metric: Metric, allowed: np.ndarray):
    """(base (R,), A (R, U, D), delta (R, U, J, K*E), model) of an additive metric, by probing it
    (see `_additive_range`); `model(genomes)` recomputes the metric from them."""
    g = genome_of(space)
    R, U, D = len(allowed), len(space.units), len(space.depths)
    J, K, E = space.max_depth, len(space.kernel_sizes), len(space.expand_ratios)
    rows = []
    base = np.zeros((R, g.length), np.int64)
    base[:, 0] = allowed
    rows.append(base)
    depth_rows = np.repeat(base, U * D, axis=0).reshape(R, U, D, g.length).copy()
    for u in range(U):
        depth_rows[:, u, :, 1 + u] = np.arange(D)
    rows.append(depth_rows.reshape(-1, g.length))
    slot_rows = np.repeat(base, U * J * K * E, axis=0).reshape(R, U, J, K, E, g.length).copy()
    for u in range(U):
        slot_rows[:, u, :, :, :, 1 + u] = D - 1
        for j in range(J):
            slot_rows[:, u, j, :, :, g.kernel.start + u * J + j] = np.arange(K)[:, None]
            slot_rows[:, u, j, :, :, g.expand.start + u * J + j] = np.arange(E)[None, :]
    rows.append(slot_rows.reshape(-1, g.length))
    values = metric(ArchBatch(space, np.concatenate(rows)))
    f_base = values[:R]
    A = values[R:R + R * U * D].reshape(R, U, D) - f_base[:, None, None]
    full = A[:, :, D - 1] + f_base[:, None]  # unit u at full depth, smallest choices
    delta = values[R + R * U * D:].reshape(R, U, J, K * E) - full[:, :, None, None]

    def model(genomes: np.ndarray) -> np.ndarray:
        r = np.searchsorted(allowed, genomes[:, 0])  # position among the allowed resolutions
        total = f_base[r].copy()
        active = g.active_mask(genomes).reshape(len(genomes), U, J)
        ke = (genomes[:, g.kernel] * E + genomes[:, g.expand]).reshape(len(genomes), U, J)
        for u in range(U):
            total += A[r, u, genomes[:, 1 + u]]
            total += np.where(active[:, u], delta[r[:, None], u, np.arange(J)[None, :], ke[:, u]], 0.0).sum(1)
        return total

    return f_base, A, delta, model


def additive_terms(space: SearchSpace, metric: Metric, resolutions: Sequence[int] | None = None,
                   rng: np.random.Generator | None = None):
    """The per-resolution, per-unit and per-block terms of an additive metric (a latency table's):
    (allowed resolution indices, base (R,), A (R, U, D), delta (R, U, J, K*E)) with

        metric = base[r] + sum_u A[r, u, depth index] + sum over active blocks delta[r, u, j, k * E + e]

    checked against direct evaluation on random genomes; None when the metric is not additive.
    The differentiable search takes the expectation of this sum under its architecture distribution."""
    allowed = resolution_indices(space, resolutions)
    f_base, A, delta, model = _additive_probe(space, metric, allowed)
    rng = rng or np.random.default_rng(0)
    check = redraw_resolutions(sample_genomes(space, rng, 64), allowed, rng)
    if not np.allclose(model(check), metric(ArchBatch(space, check)), rtol=1e-6, atol=1e-9):
        return None
    return allowed, f_base, A, delta


def _additive_range(space: SearchSpace, metric: Metric, rng: np.random.Generator,
                    allowed: np.ndarray) -> MetricRange | None:
    """Decompose an additive metric by probing it, then minimise it slot by slot.

    With f(arch) = fixed(r) + sum over active blocks of t(r, slot, k, e), probing a few hundred
    genomes gives, per allowed resolution r (only those are probed: a latency table may
    have been measured at some resolutions only): base(r) (every unit at its smallest depth, smallest
    choices); A(r, u, d) = the change when unit u alone goes to depth d; and delta(r, u, j, k, e) =
    the change when block j of unit u (at full depth) takes (k, e). Then
        min f = min_r [ base(r) + sum_u min_d ( A(r, u, d) + sum_{j<d} min_{k,e} delta(r, u, j) ) ]
    exactly, because units and blocks add independently. The decomposition is checked against
    direct evaluation on random genomes; None when the metric is not additive after all.
    """
    g = genome_of(space)
    R, U, D = len(allowed), len(space.units), len(space.depths)
    J, K, E = space.max_depth, len(space.kernel_sizes), len(space.expand_ratios)
    f_base, A, delta, model = _additive_probe(space, metric, allowed)
    depths = np.array(space.depths)
    prefix_min = np.cumsum(delta.min(-1), axis=2)  # (R, U, J): sum of the j+1 first blocks' minima
    prefix_max = np.cumsum(delta.max(-1), axis=2)
    unit_min = A + prefix_min[:, :, depths - 1]  # (R, U, D)
    unit_max = A + prefix_max[:, :, depths - 1]
    per_res_min = f_base + unit_min.min(-1).sum(-1)
    r = int(per_res_min.argmin())
    argmin = np.zeros(g.length, np.int64)
    argmin[0] = allowed[r]
    for u in range(U):
        d = int(unit_min[r, u].argmin())
        argmin[1 + u] = d
        for j in range(depths[d]):
            best = int(delta[r, u, j].argmin())
            argmin[g.kernel.start + u * J + j], argmin[g.expand.start + u * J + j] = divmod(best, E)
    check = np.concatenate([argmin[None], redraw_resolutions(sample_genomes(space, rng, 64), allowed, rng)])
    direct = metric(ArchBatch(space, check))
    if not np.allclose(model(check), direct, rtol=1e-6, atol=1e-9):
        return None
    maximum = float((f_base + unit_max.max(-1).sum(-1)).max())
    return MetricRange(float(direct[0]), argmin, maximum, True)


class Constraints:
    """A set of constraints on one space, with the feasibility machinery the strategies share.

    `resolutions` limits the subnets to those input resolutions (the ones a supernet was trained
    at, or the one a camera pipeline gives): every genome that leaves `enforce` or `sample` has
    one of them, and the budget check and the fallbacks consider only them."""

    def __init__(self, space: SearchSpace, constraints: Sequence[Constraint] = (),
                 resolutions: Sequence[int] | None = None):
        self.space = space
        self.items = list(constraints)
        self.allowed = resolution_indices(space, resolutions)  # indices into space.resolutions
        self.resolutions = tuple(space.resolutions[i] for i in self.allowed)
        self.limits = np.array([c.limit for c in self.items], np.float64)
        self.ranges: list[MetricRange] = []
        self.seed: np.ndarray | None = None  # a feasible genome, set by check()
        self.slack = False  # True when the largest subnet meets every budget (set by check())
        self._genome = genome_of(space)

    # ---- values and feasibility ----------------------------------------------------------
    def values(self, genomes: np.ndarray) -> np.ndarray:
        """(n, constraints) metric values."""
        batch = ArchBatch(self.space, genomes)
        if not self.items:
            return np.zeros((len(genomes), 0))
        return np.stack([c.metric(batch) for c in self.items], axis=1)

    def feasible(self, genomes: np.ndarray) -> np.ndarray:
        if not self.items or len(genomes) == 0:
            return np.ones(len(genomes), bool)
        return (self.values(genomes) <= self.limits).all(1)

    # ---- the allowed resolutions --------------------------------------------------------------
    def largest(self) -> np.ndarray:
        """Genome of the largest subnet at the largest allowed resolution."""
        return encode(self.space, [largest(self.space, self.resolutions[-1])])[0]

    def smallest(self) -> np.ndarray:
        return encode(self.space, [smallest(self.space, self.resolutions[0])])[0]

    def restrict(self, genomes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`genomes` (in place) at the allowed resolutions (see `redraw_resolutions`)."""
        return redraw_resolutions(genomes, self.allowed, rng)

    # ---- the budget against the space --------------------------------------------------------
    def check(self) -> None:
        """Raise InfeasibleBudgetError for a budget below a metric's minimum; find a feasible
        genome to fall back on; note whether the largest subnet already meets every budget."""
        space = self.space
        self.ranges = [metric_range(space, c.metric, resolutions=self.resolutions) for c in self.items]
        for c, found in zip(self.items, self.ranges):
            if found.exact and c.limit < found.minimum:
                raise InfeasibleBudgetError(self._below(c, found, "the smallest achievable"))
        candidates = np.stack([self.smallest()] + [r.argmin for r in self.ranges])
        ok = self.feasible(candidates)
        if not ok.any():  # the extremes fail together: try repairing a seeded sample
            rng = np.random.default_rng(0)
            candidates, still = self.repair(self.restrict(sample_genomes(space, rng, 256), rng), rng)
            ok = ~still
        if not ok.any():
            for c, found in zip(self.items, self.ranges):
                if c.limit < found.minimum:  # an estimate: the best of a large sample
                    raise InfeasibleBudgetError(self._below(c, found, "the smallest found (in 4096 samples)"))
            names = ", ".join(f"{c.metric.label} <= {_fmt(c.limit)} {c.metric.unit}" for c in self.items)
            raise InfeasibleBudgetError(
                f"each budget can be met alone, but no subnet of {space.name} found meets all of them together "
                f"({names}); loosen one of them"
            )
        self.seed = candidates[int(np.argmax(ok))]
        self.slack = bool(self.feasible(self.largest()[None])[0])

    def _below(self, c: Constraint, found: MetricRange, what: str) -> str:
        arch = decode(self.space, found.argmin[None])[0]
        m = c.metric
        return (f"no subnet of {self.space.name} has {m.label} <= {_fmt(c.limit)} {m.unit}: {what} is "
                f"{_fmt_up(found.minimum)} {m.unit} ({arch}); raise the budget to at least "
                f"{_fmt_up(found.minimum)} {m.unit}").replace(" %", "%")

    # ---- making genomes feasible ----------------------------------------------------------------
    def enforce(
        self,
        genomes: np.ndarray,
        rng: np.random.Generator,
        regenerate: Callable[[np.ndarray], np.ndarray] | None = None,
        retries: int = 8,
        fallback: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return `genomes` at allowed resolutions with every over-budget row replaced: first by
        `regenerate(rows)` (a fresh attempt of the operator that made them, at most `retries`
        times), then by repair, and finally by the matching row of `fallback` (or the known
        feasible seed)."""
        genomes = self.restrict(genomes.copy(), rng)
        if not self.items:
            return genomes
        bad = np.nonzero(~self.feasible(genomes))[0]
        if regenerate is not None:
            make = regenerate
            regenerate = lambda rows: self.restrict(make(rows), rng)  # noqa: E731
            # Retries in batches of 1, 2, 4, ... fresh attempts per row still over budget (at
            # most `retries` in all), keeping each row's first feasible attempt: most rows need
            # one, so the batches stay small.
            used, batch = 0, 1
            while len(bad) and used < retries:
                batch = min(batch, retries - used)
                attempts = regenerate(np.repeat(bad, batch))
                ok = self.feasible(attempts).reshape(len(bad), batch)
                found = ok.any(1)
                first = ok.argmax(1)
                genomes[bad[found]] = attempts.reshape(len(bad), batch, -1)[found, first[found]]
                bad = bad[~found]
                used, batch = used + batch, 2 * batch
        if len(bad) == 0:
            return genomes
        repaired, still = self.repair(genomes[bad], rng)
        genomes[bad] = repaired
        if still.any():
            rows = bad[still]
            if fallback is not None:
                fixed = fallback[rows]
                ok = self.feasible(fixed)
                genomes[rows[ok]] = fixed[ok]
                rows = rows[~ok]
            genomes[rows] = self.seed
        return genomes

    def repair(self, genomes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Shrink random choices until every row is feasible or has nothing left to shrink.

        Each step moves a few random genes of each over-budget row one choice down (a smaller
        resolution, depth, kernel or expand ratio), about as many as the row's relative excess
        times its number of shrinkable genes, so a row far over budget shrinks faster. Every step
        shrinks every row, so the loop ends within `sum(choices - 1)` steps.
        Returns (genomes, mask of rows still infeasible)."""
        g = self._genome
        genomes = genomes.copy()
        bad = np.arange(len(genomes))
        scale = np.maximum(np.abs(self.limits), 1e-12)
        for _ in range(int((g.choices - 1).sum()) + 1):
            if len(bad) == 0:
                break
            sub = genomes[bad]
            excess = ((self.values(sub) - self.limits) / scale).max(1)
            over = excess > 0
            bad, sub, excess = bad[over], sub[over], excess[over]
            can = sub > 0
            can[:, 0] = sub[:, 0] > self.allowed[0]  # a smaller allowed resolution exists
            can[:, g.kernel.start:] &= np.tile(g.active_mask(sub), 2)
            n_can = can.sum(1)
            bad, sub, excess, can, n_can = bad[n_can > 0], sub[n_can > 0], excess[n_can > 0], can[n_can > 0], n_can[n_can > 0]
            count = np.clip(np.ceil(excess * n_can / 2), 1, n_can)
            # The `count` shrinkable genes with the highest random scores move down one choice.
            scores = np.where(can, rng.random(can.shape), -1.0)
            rank = np.argsort(np.argsort(-scores, axis=1), axis=1)
            sub -= (rank < count[:, None]) & can
            # A resolution moved down to one that is not allowed goes on to the next allowed one below.
            sub[:, 0] = self.allowed[np.searchsorted(self.allowed, sub[:, 0], side="right") - 1]
            genomes[bad] = sub
        return genomes, ~self.feasible(genomes)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n feasible genomes: uniform samples, over-budget ones redrawn a few times, then repaired."""
        genomes = sample_genomes(self.space, rng, n)  # enforce moves them to the allowed resolutions
        return self.enforce(genomes, rng, regenerate=lambda rows: sample_genomes(self.space, rng, len(rows)))


def _fmt(value: float) -> str:
    return f"{value:g}"


def _fmt_up(value: float) -> str:
    """Rounded up to 3 decimals, so "at least X" is always enough."""
    return f"{math.ceil(value * 1000 - 1e-9) / 1000:.3f}"
