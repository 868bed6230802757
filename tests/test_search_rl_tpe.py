"""The rl (REINFORCE controller) and tpe (optuna TPE) strategies, strategy options, and the
best-so-far history every result records: determinism, budgets, better than random, bad input."""
import json

import numpy as np
import pytest

from test_search import SlotTable, synthetic_accuracy, tiny_space
from edgenas.errors import ConfigError
from edgenas.search import Constraint, latency_metric, metric_range, search
from edgenas.search.engine import strategy_options
from edgenas.space import load_space

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = {"rl": {"evaluations": 300, "batch": 30}, "tpe": {"evaluations": 60}}


def budgeted(space, share=0.4, seed=1):
    lat = latency_metric(SlotTable(space, seed))
    span = metric_range(space, lat)
    return [Constraint(lat, span.minimum + share * (span.maximum - span.minimum))]


@pytest.mark.parametrize("strategy,options", [("rl", QUICK["rl"]), ("rl", QUICK["rl"] | {"reward": "soft"}),
                                              ("tpe", QUICK["tpe"])])
def test_same_seed_same_result(strategy, options):
    space = load_space("mbv3-tiny")
    cons = budgeted(space)

    def run(seed):
        d = search(space, synthetic_accuracy(space), cons, strategy, seed=seed, **options).to_dict()
        d.pop("seconds")
        return d

    first = run(5)
    assert run(5) == first
    assert run(6) != first


@pytest.mark.slow
@pytest.mark.parametrize("strategy,evaluations", [("rl", 1000), ("tpe", 150)])
def test_beats_random_at_equal_evaluations(strategy, evaluations):
    """On seeds 0-2 (measured: rl +0.92, +0.37, +1.33 at 1,000 and tpe +2.25, +0.38, +1.15 at 150
    over random, on an objective whose best random values spread by about 1 across seeds; tpe with
    categorical genes, its default, was +1.54, +0.02, +1.02 at 100, where integer genes, 8x slower,
    were +2.35, +0.32, +1.27), each
    seed beats random at the same number of evaluations and the mean gain is at least 0.25. (rl's
    defaults, lr 0.005 and entropy 2.0, learn more slowly than the earlier lr 0.05: at 600 one seed
    was 0.19 below random; they are tuned for 1,000-5,000 evaluations, benchmarks/search 2c.)"""
    space = load_space("mbv3-w1.2")
    acc = synthetic_accuracy(space, seed=3)
    cons = budgeted(space)
    gains = []
    for seed in (0, 1, 2):
        r = search(space, acc, cons, strategy, seed=seed, evaluations=evaluations, max_evals=evaluations)
        q = search(space, acc, cons, "random", seed=seed, evaluations=r.evaluations)
        assert q.evaluations == r.evaluations
        gains.append(r.best["accuracy"] - q.best["accuracy"])
    assert min(gains) > 0 and np.mean(gains) >= 0.25, gains


@pytest.mark.parametrize("categorical", [True, False])
def test_tpe_genes_are_categorical_or_integer_parameters(categorical, monkeypatch):
    """tpe's genes (all but the resolution) reach optuna as categorical parameters by default, as
    integers with categorical=false; the results file records which."""
    import optuna

    calls = {"int": 0, "categorical": 0}
    real_int, real_cat = optuna.trial.Trial.suggest_int, optuna.trial.Trial.suggest_categorical

    def suggest_int(self, *a, **k):
        calls["int"] += 1
        return real_int(self, *a, **k)

    def suggest_categorical(self, *a, **k):
        calls["categorical"] += 1
        return real_cat(self, *a, **k)

    monkeypatch.setattr(optuna.trial.Trial, "suggest_int", suggest_int)
    monkeypatch.setattr(optuna.trial.Trial, "suggest_categorical", suggest_categorical)
    space = tiny_space()
    cons = budgeted(space)
    r = search(space, synthetic_accuracy(space), cons, "tpe", seed=0, evaluations=30, categorical=categorical)
    trials = calls["int"] + calls["categorical"]
    assert trials > 0 and r.to_dict()["options"]["categorical"] is categorical
    assert (calls["int"] == 0) if categorical else (calls["int"] > calls["categorical"] > 0), calls
    assert (r.archive[cons[0].metric.name] <= cons[0].limit + 1e-9).all()


def test_results_record_the_options_and_a_monotone_history():
    space = tiny_space()
    result = search(space, synthetic_accuracy(space), budgeted(space), "rl", seed=0, evaluations=120, batch=20)
    d = result.to_dict()
    assert d["options"] == strategy_options("rl") | {"evaluations": 120, "batch": 20}
    h = d["history"]
    assert h["evaluations"][-1] == result.evaluations and len(h["evaluations"]) == len(h["best"])
    assert np.all(np.diff(h["evaluations"]) > 0) and np.all(np.diff(h["best"]) >= 0)
    assert h["best"][-1] == pytest.approx(result.best["accuracy"])
    evo = search(space, synthetic_accuracy(space), budgeted(space), "evolution", seed=0, population=10, generations=3)
    assert evo.to_dict()["options"]["population"] == 10 and evo.to_dict()["options"]["parent_ratio"] == 0.25


def test_unknown_options_and_bad_rewards_are_errors():
    space = tiny_space()
    with pytest.raises(ConfigError, match="unknown option 'temperature' for search strategy 'rl'; it takes evaluations"):
        search(space, synthetic_accuracy(space), budgeted(space), "rl", temperature=1.0)
    with pytest.raises(ConfigError, match="unknown rl reward 'mnas'"):
        search(space, synthetic_accuracy(space), budgeted(space), "rl", reward="mnas")
    with pytest.raises(ConfigError, match="reward exponent must be a finite number"):
        search(space, synthetic_accuracy(space), budgeted(space), "rl", reward_exponent="x")
