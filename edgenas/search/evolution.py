"""Constrained regularised evolution (the search OFA uses), vectorised over genome arrays.

Each generation keeps the best `parent_ratio` of the population as parents and fills the rest of
the population with children, as OFA does: `mutation_ratio * population` by mutating a random
parent (each gene resampled with probability `mutate_prob`), the others by uniform crossover of
two random parents. A child over budget is remade from the same parent(s) a few times, then
repaired (see `edgenas.search.constraints`), so every member is feasible and no loop is unbounded.

As in OFA, members keep genes for the blocks their depth leaves out, so a mutation that deepens
a unit brings back blocks with inherited or random choices rather than the smallest ones. The
evaluator sees canonical genomes (those genes zeroed), one per architecture.
"""
from __future__ import annotations

import numpy as np

from edgenas.errors import ConfigError
from edgenas.search.problem import Problem
from edgenas.space import genome_of


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
    cons, evaluate = problem.constraints, problem.evaluate
    genome = genome_of(problem.space)
    choices = genome.choices
    n_parents = max(1, int(round(parent_ratio * population)))
    n_children = max(1, population - n_parents)
    n_mutants = min(int(round(mutation_ratio * population)), n_children)
    is_mutant = (np.arange(n_children) < n_mutants)[:, None]

    def draw(rows: np.ndarray) -> np.ndarray:
        return genome.random(rng, len(rows))

    pop = cons.enforce(draw(np.arange(population)), rng, regenerate=draw, retries=retries)
    fit = evaluate(pop)
    for _ in range(generations):
        if evaluate.exhausted:
            break
        best = np.argsort(-fit, kind="stable")[:n_parents]
        parents, parent_fit = pop[best], fit[best]
        picks = parents[rng.integers(len(parents), size=2 * n_children)]
        first, second = picks[:n_children], picks[n_children:]

        def make(rows: np.ndarray) -> np.ndarray:
            """Children `rows` (0..n_children-1): mutants first, then crossovers. One uniform draw
            per gene decides both: a mutant's gene is resampled when u < mutate_prob (u / mutate_prob
            is then uniform, and picks the new choice); a crossover takes the first parent's gene
            when u < 0.5."""
            u = rng.random((len(rows), len(choices)))
            a = first[rows]
            flip = u < mutate_prob
            fresh = np.minimum((u * (1.0 / max(mutate_prob, 1e-300)) * choices).astype(np.int64), choices - 1)
            mutated = np.where(flip, fresh, a)
            crossed = np.where(u < 0.5, a, second[rows])
            return np.where(is_mutant[rows], mutated, crossed)

        children = cons.enforce(make(np.arange(n_children)), rng, regenerate=make, retries=retries, fallback=first)
        pop = np.concatenate([parents, children])
        fit = np.concatenate([parent_fit, evaluate(children)])
