"""Multi-objective search with NSGA-II (Deb et al. 2002), vectorised over genome arrays: the
Pareto front of accuracy against latency (one objective per latency table) or MACs.

Each generation: binary tournaments on (front rank, crowding distance) pick parent pairs;
children are their uniform crossover, mutated per gene and made feasible (see
`edgenas.search.constraints`); parents and children are pooled, duplicates dropped, and the best
`population` survive by non-dominated rank, ties broken by crowding distance.

Why not pymoo or optuna: at equal evaluations on mbv3-w1.2 (benchmarks/search/README.md, 2b),
this one gives the largest front hypervolume and the best accuracy of the three, in about half
pymoo's wall time and a hundredth of optuna's NSGAIISampler's.
"""
from __future__ import annotations

import numpy as np

from edgenas.search.objectives import ArchBatch
from edgenas.errors import ConfigError
from edgenas.search.problem import Problem
from edgenas.space import crossover_genomes, mutate_genomes


def nsga2(
    problem: Problem,
    rng: np.random.Generator,
    population: int = 100,
    generations: int = 500,
    mutate_prob: float = 0.1,
    retries: int = 8,
) -> None:
    """Run NSGA-II; every evaluated architecture lands in `problem.evaluate`'s archive."""
    if population < 2 or not problem.objectives:
        raise ConfigError("nsga2 needs a population of at least 2 and at least one cost objective besides accuracy")
    space, cons, evaluate = problem.space, problem.constraints, problem.evaluate

    def objectives(genomes: np.ndarray) -> np.ndarray:
        batch = ArchBatch(space, genomes)
        costs = [m(batch) * (1.0 if m.goal == "min" else -1.0) for m in problem.objectives]
        return np.column_stack([-evaluate(genomes)] + costs)

    pop = np.unique(cons.sample(rng, population), axis=0)
    F = objectives(pop)
    rank, crowd = rank_and_crowding(F)
    for _ in range(generations):
        if evaluate.exhausted:
            break
        n = len(pop)
        a, b = rng.integers(n, size=(2, 2 * population))
        a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowd[a] >= crowd[b]))
        parents = np.where(a_wins, a, b).reshape(2, population)
        crossed = crossover_genomes(space, pop[parents[0]], pop[parents[1]], rng)
        kids = cons.enforce(mutate_genomes(space, crossed, rng, mutate_prob), rng, retries=retries, fallback=pop[parents[0]],
                            regenerate=lambda rows: mutate_genomes(space, crossed[rows], rng, mutate_prob))
        union = np.concatenate([pop, kids])
        union_F = np.concatenate([F, objectives(kids)])
        _, first = np.unique(union, axis=0, return_index=True)
        first.sort()
        union, union_F = union[first], union_F[first]
        r, c = rank_and_crowding(union_F)
        keep = np.lexsort((-c, r))[:population]
        pop, F, rank, crowd = union[keep], union_F[keep], r[keep], c[keep]


def rank_and_crowding(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-dominated front index (0 = best) and crowding distance of each row of F (minimised)."""
    n = len(F)
    # dominated_by[i, j]: row j dominates row i (no worse everywhere, better somewhere).
    le = np.ones((n, n), bool)
    lt = np.zeros((n, n), bool)
    for col in F.T:
        le &= col[None, :] <= col[:, None]
        lt |= col[None, :] < col[:, None]
    dominated_by = le & lt
    count = dominated_by.sum(1)
    rank = np.full(n, -1)
    front, level = np.flatnonzero(count == 0), 0
    while len(front):  # each pass removes at least one row, so at most n passes
        rank[front] = level
        count -= dominated_by[:, front].sum(1)
        count[rank >= 0] = -1
        front, level = np.flatnonzero(count == 0), level + 1
    return rank, crowding(F, rank)


def crowding(F: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Crowding distance within each front: the sum over objectives of the normalised gap between
    a row's two neighbours; infinite at the ends of a front."""
    n, m = F.shape
    dist = np.zeros(n)
    for j in range(m):
        order = np.lexsort((F[:, j], rank))
        f, r = F[order, j], rank[order]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        ends = np.r_[starts[1:], n] - 1
        span = np.repeat(f[ends] - f[starts], ends - starts + 1)
        gap = np.full(n, np.inf)
        inner = np.ones(n, bool)
        inner[starts] = inner[ends] = False
        i = np.flatnonzero(inner)
        gap[i] = (f[i + 1] - f[i - 1]) / np.where(span[i] > 0, span[i], 1.0)
        dist[order] += gap
    return dist
