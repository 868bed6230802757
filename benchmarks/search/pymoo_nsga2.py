"""NSGA-II through pymoo, as a reference for edgenas's own vectorised NSGA-II (benchmark only;
`pip install pymoo`). Registered as the strategy "nsga2-pymoo" by bench_search.py.

pymoo supplies selection, non-dominated sorting, crowding and duplicate elimination; the
variation operators are the same as edgenas's (uniform crossover, per-gene mutation, constraint
enforcement), so the two differ only in the NSGA-II machinery.
"""
from __future__ import annotations

import numpy as np

from edgenas.search.objectives import ArchBatch
from edgenas.search.problem import Problem
from edgenas.space import crossover_genomes, genome_of, mutate_genomes


def nsga2_pymoo(
    problem: Problem,
    rng: np.random.Generator,
    population: int = 100,
    generations: int = 500,
    mutate_prob: float = 0.1,
    retries: int = 8,
) -> None:
    """Run NSGA-II; every evaluated architecture lands in `problem.evaluate`'s archive."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.crossover import Crossover
    from pymoo.core.mutation import Mutation
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.core.sampling import Sampling
    from pymoo.core.termination import Termination
    from pymoo.optimize import minimize

    space, cons, evaluate = problem.space, problem.constraints, problem.evaluate
    if not problem.objectives:
        raise ValueError("nsga2 needs at least one cost objective besides accuracy")
    g = genome_of(space)

    class Adapter(PymooProblem):
        def __init__(self):
            super().__init__(n_var=g.length, n_obj=1 + len(problem.objectives), n_ieq_constr=len(cons.items),
                             xl=np.zeros(g.length), xu=g.choices - 1.0, vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            genomes = np.asarray(X, dtype=np.int64)
            batch = ArchBatch(space, genomes)
            costs = [m(batch) * (1.0 if m.goal == "min" else -1.0) for m in problem.objectives]
            out["F"] = np.column_stack([-evaluate(genomes)] + costs)
            if cons.items:  # scaled so every constraint counts alike; <= 0 is feasible
                out["G"] = (cons.values(genomes) - cons.limits) / np.maximum(np.abs(cons.limits), 1e-12)

    class Sample(Sampling):
        def _do(self, _problem, n_samples, *args, random_state=None, **kwargs):
            return cons.sample(random_state, n_samples)

    class Cross(Crossover):
        def __init__(self):
            super().__init__(n_parents=2, n_offsprings=1, prob=1.0)

        def _do(self, _problem, X, *args, random_state=None, **kwargs):
            a, b = np.asarray(X[0], np.int64), np.asarray(X[1], np.int64)
            return crossover_genomes(space, a, b, random_state)[None]

    class Mutate(Mutation):
        def _do(self, _problem, X, *args, random_state=None, **kwargs):
            X = np.asarray(X, np.int64)
            made = mutate_genomes(space, X, random_state, mutate_prob)
            return cons.enforce(made, random_state, retries=retries, fallback=X,
                                regenerate=lambda rows: mutate_genomes(space, X[rows], random_state, mutate_prob))

    class Budget(Termination):
        def _update(self, algorithm):
            if evaluate.exhausted:
                return 1.0
            return algorithm.n_gen / (generations + 1)

    algorithm = NSGA2(pop_size=population, sampling=Sample(), crossover=Cross(), mutation=Mutate(),
                      eliminate_duplicates=True)
    minimize(Adapter(), algorithm, Budget(), seed=int(rng.integers(2**31 - 1)), verbose=False)
