"""NSGA-II through optuna's NSGAIISampler, as a reference for edgenas's own NSGA-II (benchmark only).
Registered as the strategy "nsga2-optuna" by bench_search.py.

optuna does selection, crossover and mutation on its own parameters (one integer per gene, through
edgenas.search.tpe.run_optuna), with the budgets as optuna constraints; edgenas only evaluates.
"""
from __future__ import annotations

import numpy as np

from edgenas.search.problem import Problem
from edgenas.search.tpe import run_optuna


def nsga2_optuna(problem: Problem, rng: np.random.Generator, population: int = 100, generations: int = 500,
                 evaluations: int = 1000) -> None:
    import optuna

    def sampler(constraints, seed):
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=constraints)

    run_optuna(problem, rng, sampler, evaluations, startup=population, multi_objective=True)
