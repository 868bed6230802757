"""Constrained regularised evolution (the search OFA uses), vectorised over genome arrays.

Each generation keeps the best `parent_ratio` of the population as parents and fills the rest of
the population with children, as OFA does: `mutation_ratio * population` by mutating a random
parent (each gene resampled with probability `mutate_prob`), the others by uniform crossover of
two random parents. A child
over budget is remade from the same parent(s) a few times, then repaired (see
`edgenas.search.constraints`), so every member is feasible and no loop is unbounded.
"""
from __future__ import annotations

import numpy as np

from edgenas.errors import ConfigError
from edgenas.search.problem import Problem
from edgenas.space import crossover_genomes, mutate_genomes


def evolution(
    problem: Problem,
    rng: np.random.Generator,
    population: int = 100,
    generations: int = 500,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5,
    mutate_prob: float = 0.1,
    retries: int = 8,
) -> None:
    """Run the search; every evaluated architecture lands in `problem.evaluate`'s archive."""
    if population < 2 or not 0 < parent_ratio <= 1 or not 0 <= mutation_ratio <= 1 or not 0 <= mutate_prob <= 1:
        raise ConfigError("evolution needs a population of at least 2, parent_ratio in (0, 1] and mutation_ratio "
                          "and mutate_prob in [0, 1]")
    space, cons, evaluate = problem.space, problem.constraints, problem.evaluate
    n_parents = max(1, int(round(parent_ratio * population)))
    n_children = max(1, population - n_parents)
    n_mutants = min(int(round(mutation_ratio * population)), n_children)

    pop = cons.sample(rng, population)
    fit = evaluate(pop)
    for _ in range(generations):
        if evaluate.exhausted:
            break
        best = np.argsort(-fit, kind="stable")[:n_parents]
        parents, parent_fit = pop[best], fit[best]
        first = parents[rng.integers(len(parents), size=n_children)]
        second = parents[rng.integers(len(parents), size=n_children)]

        def make(rows: np.ndarray) -> np.ndarray:
            """Children `rows` (0..n_children-1): mutants first, then crossovers."""
            out = np.empty((len(rows), pop.shape[1]), np.int64)
            mut = rows < n_mutants
            out[mut] = mutate_genomes(space, first[rows[mut]], rng, mutate_prob)
            out[~mut] = crossover_genomes(space, first[rows[~mut]], second[rows[~mut]], rng)
            return out

        children = cons.enforce(make(np.arange(n_children)), rng, regenerate=make, retries=retries, fallback=first)
        pop = np.concatenate([parents, children])
        fit = np.concatenate([parent_fit, evaluate(children)])
