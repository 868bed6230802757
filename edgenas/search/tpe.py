"""Bayesian optimisation with optuna's TPE sampler (Bergstra et al. 2011), and the driver that runs
any optuna sampler on an edgenas `Problem` (benchmarks/search runs optuna's NSGA-II through it).

Each optuna trial is one architecture: one parameter per gene (the resolution among the allowed
ones, each unit's depth, each block's kernel and expand ratio). For tpe the genes other than the
resolution are categorical by default (`categorical`): optuna then models each with a categorical
kernel, where an integer parameter gets a truncated-normal one per past trial, rebuilt and
evaluated on every trial; on OFA's w1.2 space with the Note10 table that is 8-36x faster at 200-300
evaluations, its best accuracies 0.14 pp below to 0.43 pp above (benchmarks/search/README.md, 2d). The budgets reach optuna
as constraints (`Trial.set_constraint` from optuna 5, `constraints_func` in optuna 4): one value per budget, (value - limit) / limit, feasible when
<= 0, so TPE models feasible and infeasible trials apart (optuna's constrained TPE). Only
feasible architectures are evaluated by the objective (and counted as evaluations); an
infeasible trial is told the worst objective value seen so far, and its constraint values say
by how much it missed. The first `startup` trials are feasible uniform samples (as random search
draws them), enqueued, so TPE starts from the same kind of points as the other strategies.
Needs `pip install optuna` (optuna >= 4; edgenas[search]).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from edgenas.errors import ConfigError, EdgeNASError
from edgenas.search.objectives import ArchBatch
from edgenas.search.problem import Problem
from edgenas.space import genome_of


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a declared dependency
        raise EdgeNASError("--strategy tpe needs optuna: pip install 'optuna>=4'") from None
    return optuna


def tpe(
    problem: Problem,
    rng: np.random.Generator,
    evaluations: int = 1000,
    startup: int = 20,
    candidates: int = 24,
    multivariate: bool = True,
    categorical: bool = True,
) -> None:
    """optuna's TPESampler (multivariate TPE by default, `candidates` samples per step, the first
    `startup` trials feasible uniform samples, the genes as categorical parameters unless
    `categorical` is false: then integers) until `evaluations` architectures are evaluated."""
    if evaluations < 1 or startup < 1 or candidates < 1:
        raise ConfigError("tpe needs evaluations, startup and candidates of at least 1")
    optuna = _optuna()

    def sampler(constraints: Callable, seed: int):
        with warnings.catch_warnings():  # multivariate and constraints_func are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, n_ei_candidates=candidates,
                                              multivariate=multivariate, constraints_func=constraints)

    run_optuna(problem, rng, sampler, evaluations, startup=startup, categorical=categorical)


def run_optuna(problem: Problem, rng: np.random.Generator, make_sampler: Callable, evaluations: int,
               startup: int = 0, multi_objective: bool = False, max_trials: int | None = None,
               categorical: bool = False) -> None:
    """Drive an optuna sampler over `problem` with ask and tell, one trial (architecture) at a time.
    Each gene but the resolution is an integer parameter, or a categorical one with `categorical`.

    make_sampler(constraints_func, seed) -> sampler. With `multi_objective`, each trial's values are
    the objective (maximised) and the problem's cost objectives (minimised), as NSGA-II needs.
    Stops after `evaluations` evaluated architectures (or the search's max_evals), or after
    `max_trials` trials (default 20 x evaluations: a sampler stuck on infeasible or repeated
    architectures cannot loop forever)."""
    optuna = _optuna()
    space, cons, evaluate = problem.space, problem.constraints, problem.evaluate
    g = genome_of(space)
    allowed = [int(i) for i in cons.allowed]
    scale = np.maximum(np.abs(cons.limits), 1e-12)
    names = [f"g{i}" for i in range(g.length)]

    per_trial = hasattr(optuna.trial.Trial, "set_constraint")  # optuna >= 5; constraints_func is deprecated there

    def constraints_func(trial) -> list[float]:
        return trial.user_attrs["violation"]

    seed = int(rng.integers(2**31 - 1))
    directions = ["maximize"] + (["minimize"] * len(problem.objectives) if multi_objective else [])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=directions,
                                sampler=make_sampler(None if per_trial else constraints_func, seed))
    for genome in cons.sample(rng, startup) if startup else []:
        study.enqueue_trial({n: int(v) for n, v in zip(names, genome)})
    target = evaluate.count + evaluations
    worst = None
    trials = 0
    limit = max_trials if max_trials is not None else 20 * evaluations + startup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while evaluate.count < target and not evaluate.exhausted and trials < limit:
            trial = study.ask()
            trials += 1
            genome = np.zeros((1, g.length), np.int64)
            genome[0, 0] = trial.suggest_categorical(names[0], allowed)
            for i in range(1, g.length):
                if categorical:
                    genome[0, i] = trial.suggest_categorical(names[i], list(range(int(g.choices[i]))))
                else:
                    genome[0, i] = trial.suggest_int(names[i], 0, int(g.choices[i]) - 1)
            violation = ((cons.values(genome) - cons.limits) / scale)[0] if cons.items else np.zeros(0)
            if per_trial:
                for i, v in enumerate(violation):
                    trial.set_constraint(f"budget{i}", float(v))
            else:
                trial.set_user_attr("violation", [float(v) for v in violation])
            if (violation <= 0).all():
                value = float(evaluate(genome)[0])
                worst = value if worst is None else min(worst, value)
            else:
                value = worst if worst is not None else 0.0
            if multi_objective:
                batch = ArchBatch(space, genome)
                costs = [float(m(batch)[0]) * (1.0 if m.goal == "min" else -1.0) for m in problem.objectives]
                study.tell(trial, [value] + costs)
            else:
                study.tell(trial, value)
