"""Random search: uniform feasible samples until the evaluation budget is spent. The baseline the
other strategies must beat at the same number of evaluated architectures."""
from __future__ import annotations

import numpy as np

from edgenas.errors import ConfigError
from edgenas.search.problem import Problem


def random_search(problem: Problem, rng: np.random.Generator, evaluations: int = 50_100, batch: int = 1000) -> None:
    if evaluations < 1:
        raise ConfigError("random search needs at least 1 evaluation")
    evaluate = problem.evaluate
    target = evaluate.count + evaluations
    # Each round adds at least one new architecture or the space is exhausted: bounded either way.
    while evaluate.count < target and not evaluate.exhausted:
        before = evaluate.count
        evaluate(problem.constraints.sample(rng, min(batch, target - evaluate.count)))
        if evaluate.count == before:
            break
