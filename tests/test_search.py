"""Search: exact budget bounds, feasibility, strategies, determinism, plugged-in metrics."""
import itertools
import re

import numpy as np
import pytest

from edgenas.latency.ops import enumerate_ops
from edgenas.latency.table import LatencyTable, entry
from edgenas.search import (
    ArchBatch, Constraint, Constraints, InfeasibleBudgetError, Metric, cost_metric, hypervolume_2d,
    latency_metric, metric_range, non_dominated, search,
)
from edgenas.space import (
    Arch, arch_cost, encode, features, genome_of, largest, load_space, sample_genomes, smallest,
)


def tiny_space():
    """800 subnets: small enough to enumerate every one."""
    space = load_space("mbv3-tiny")
    return space.replace(name="enum", units=space.units[:2], kernel_sizes=(3, 5), expand_ratios=(3, 4),
                         depths=(1, 2), resolutions=(24, 32))


def all_genomes(space):
    g = genome_of(space)
    grid = np.array(list(itertools.product(*[range(c) for c in g.choices])), np.int64)
    return np.unique(g.canonical(grid), axis=0)


class SlotTable:
    """An additive latency table with random per-layer terms that grow with the resolution, kernel
    and expand ratio, like a real one (the protocol: predict_genomes)."""

    def __init__(self, space, seed=0, name="synthetic"):
        g = genome_of(space)
        rng = np.random.default_rng(seed)
        self.name, self.g = name, g
        self.fixed = np.cumsum(rng.uniform(0.5, 1, len(space.resolutions)))
        steps = rng.uniform(0.05, 0.5, (len(space.resolutions), space.num_slots, len(space.kernel_sizes),
                                        len(space.expand_ratios)))
        self.slot = steps.cumsum(0).cumsum(2).cumsum(3)

    def predict_genomes(self, genomes):
        g, r = self.g, genomes[:, 0]
        per = self.slot[r[:, None], np.arange(g.n_slots)[None], genomes[:, g.kernel], genomes[:, g.expand]]
        return self.fixed[r] + np.where(g.active_mask(genomes), per, 0.0).sum(1)


def mac_table(space, name="macs-table"):
    """A real LatencyTable whose entries are proportional to each layer's MACs (plus a constant)."""
    table = LatencyTable.create(space, name)
    for op in enumerate_ops(space):
        ms = op.macs / 1e6 + 0.01
        table.set(op.key, entry(ms, ms, 0.0, 1))
    return table


def synthetic_accuracy(space, seed=0):
    """A smooth accuracy-like objective with interactions: a fixed random 2-layer net on the features."""
    rng = np.random.default_rng(seed)
    width = features(space, sample_genomes(space, rng, 1)).shape[1]
    w1, w2 = rng.normal(size=(width, 16)), rng.normal(size=16)
    return Metric("accuracy", lambda b: np.tanh(b.features() @ w1) @ w2, goal="max", unit="%")


# ---- exact bounds ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_latency_range_is_exact_against_enumeration(seed):
    space = tiny_space()
    genomes = all_genomes(space)
    assert len(genomes) == space.num_subnets() == 800
    metric = latency_metric(SlotTable(space, seed))
    values = metric(ArchBatch(space, genomes))
    found = metric_range(space, metric)
    assert found.exact
    assert found.minimum == pytest.approx(values.min(), abs=1e-12)
    assert found.maximum == pytest.approx(values.max(), abs=1e-12)
    assert metric(ArchBatch(space, found.argmin[None]))[0] == pytest.approx(values.min(), abs=1e-12)


def test_cost_ranges_are_exact_against_enumeration():
    space = tiny_space()
    genomes = all_genomes(space)
    batch = ArchBatch(space, genomes)
    for name in ("mflops", "mparams", "peak_kb"):
        values = cost_metric(name)(batch)
        found = metric_range(space, cost_metric(name))
        assert (found.minimum, found.maximum) == pytest.approx((values.min(), values.max()))


def test_latency_range_on_a_real_table_bounds_every_sample(ofa_note10_dir):
    space = load_space("mbv3-w1.2")
    metric = latency_metric(LatencyTable.load(ofa_note10_dir), space=space)
    found = metric_range(space, metric)
    values = metric(ArchBatch(space, sample_genomes(space, np.random.default_rng(0), 20000)))
    assert found.exact and found.minimum <= values.min() and found.maximum >= values.max()
    extremes = metric(ArchBatch(space, encode(space, [smallest(space), largest(space)])))
    assert found.minimum <= extremes[0] and found.maximum == pytest.approx(extremes[1])


def test_a_non_additive_metric_falls_back_to_an_estimate():
    space = tiny_space()
    table = SlotTable(space)
    squared = Metric("sq", lambda b: table.predict_genomes(b.genomes) ** 2, structure="additive")
    assert not metric_range(space, squared).exact


# ---- honest budgets ----------------------------------------------------------------------------

def test_infeasible_budget_names_the_minimum():
    space = tiny_space()
    table = SlotTable(space, 3)
    true_min = table.predict_genomes(all_genomes(space)).min()
    with pytest.raises(InfeasibleBudgetError) as err:
        search(space, synthetic_accuracy(space), [Constraint(latency_metric(table), true_min * 0.9)])
    shown = float(re.search(r"smallest achievable is ([0-9.]+) ms", str(err.value)).group(1))
    assert true_min <= shown <= true_min + 0.001
    assert "synthetic" in str(err.value)
    # Just above the minimum is feasible, and the search returns that minimum's neighbourhood.
    result = search(space, synthetic_accuracy(space), [Constraint(latency_metric(table), shown)], generations=3)
    assert result.best["latency_ms"]["synthetic"] <= shown


def test_budgets_feasible_alone_but_not_together_are_an_error():
    space = tiny_space()
    fast = SlotTable(space, 0, "a")
    other = Metric("b", lambda batch: -fast.predict_genomes(batch.genomes), structure="additive")
    lo, hi = metric_range(space, latency_metric(fast)).minimum, metric_range(space, latency_metric(fast)).maximum
    with pytest.raises(InfeasibleBudgetError, match="together"):
        search(space, synthetic_accuracy(space), [Constraint(latency_metric(fast), lo + 1e-6), Constraint(other, -hi + 1e-6)])


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_budget_above_the_largest_subnet_returns_the_largest(strategy):
    space = load_space("mbv3-tiny")
    table = mac_table(space)
    top = latency_metric(table, space=space)(ArchBatch(space, encode(space, [largest(space)])))[0]
    result = search(space, synthetic_accuracy(space), [Constraint(latency_metric(table, space=space), top + 1)],
                    strategy, top_k=3)
    assert result.best["arch"] == str(largest(space))
    assert "largest" in result.note


# ---- strategies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy,options", [
    ("evolution", {"population": 40, "generations": 15}),
    ("nsga2", {"population": 40, "generations": 15}),
    ("random", {"evaluations": 600}),
    ("rl", {"evaluations": 400, "batch": 40}),
    ("rl", {"evaluations": 400, "batch": 40, "reward": "soft"}),
    ("tpe", {"evaluations": 80}),
])
def test_every_returned_arch_meets_every_budget(strategy, options, ofa_note10_dir):
    space = load_space("mbv3-w1.2")
    lat = latency_metric(LatencyTable.load(ofa_note10_dir), "note10", space)
    budget = {"note10": 22.0, "mflops": 300.0, "mparams": 6.0, "peak_kb": 3000.0}
    cons = [Constraint(lat, budget["note10"])] + [Constraint(cost_metric(n), budget[n]) for n in ("mflops", "mparams", "peak_kb")]
    result = search(space, synthetic_accuracy(space), cons, strategy, seed=1, top_k=20, **options)
    assert result.top and result.front
    for e in result.top + result.front:
        assert e["latency_ms"]["note10"] <= budget["note10"]
        assert e["macs"] / 1e6 <= budget["mflops"] and e["params"] / 1e6 <= budget["mparams"]
        assert e["peak_activation_bytes"] / 1024 <= budget["peak_kb"]
    accs = [e["accuracy"] for e in result.top]
    assert accs == sorted(accs, reverse=True)
    assert len({e["arch"] for e in result.top}) == len(result.top)


@pytest.mark.parametrize("strategy", ["evolution", "nsga2", "random"])
def test_same_seed_same_result(strategy):
    space = load_space("mbv3-tiny")
    lat = latency_metric(SlotTable(space))
    span = metric_range(space, lat)
    cons = [Constraint(lat, (span.minimum + span.maximum) / 2), Constraint(cost_metric("mflops"), 6.0)]
    options = {"evaluations": 500} if strategy == "random" else {"population": 30, "generations": 10}

    def run(seed):
        d = search(space, synthetic_accuracy(space), cons, strategy, seed=seed, **options).to_dict()
        d.pop("seconds")
        return d

    first = run(5)
    assert run(5) == first
    assert run(6) != first


def test_evolution_beats_random_at_equal_evaluations():
    space = load_space("mbv3-w1.2")
    acc = synthetic_accuracy(space, seed=3)
    lat = latency_metric(SlotTable(space, 1))
    span = metric_range(space, lat)
    cons = [Constraint(lat, span.minimum + 0.4 * (span.maximum - span.minimum))]
    evo = search(space, acc, cons, "evolution", seed=0, population=50, generations=40)
    rnd = search(space, acc, cons, "random", seed=0, evaluations=evo.evaluations)
    assert rnd.evaluations == evo.evaluations
    assert evo.best["accuracy"] > rnd.best["accuracy"]


def test_the_archive_holds_each_architecture_once():
    """Evolution keeps genes of blocks outside a unit's depth (as OFA does); the evaluator must
    still see one canonical genome per architecture and call the metric once for each."""
    space = load_space("mbv3-tiny")
    calls = []

    def counted(batch):
        calls.append(len(batch))
        return synthetic_accuracy(space).fn(batch)

    result = search(space, Metric("accuracy", counted, goal="max"), [], "evolution", seed=1, population=30,
                    generations=30)
    assert sum(calls) == result.evaluations
    arch_strings = [e["arch"] for e in result.top]
    assert len(set(arch_strings)) == len(arch_strings)

    from edgenas.search.problem import Evaluator
    g = genome_of(space)
    ev = Evaluator(space, Metric("accuracy", counted, goal="max"))
    noisy = g.random(np.random.default_rng(0), 64)
    calls.clear()
    first = ev(noisy)
    flipped = noisy.copy()
    inactive = ~g.active_mask(noisy)
    flipped[:, g.kernel][inactive] = (flipped[:, g.kernel][inactive] + 1) % len(space.kernel_sizes)
    assert np.array_equal(ev(flipped), first)  # the same archs: no new evaluations
    assert sum(calls) == len(np.unique(g.canonical(noisy.copy()), axis=0)) == ev.count
    assert np.unique(ev.genomes, axis=0).shape == ev.genomes.shape
    assert np.array_equal(g.canonical(ev.genomes.copy()), ev.genomes)


def test_max_evals_bounds_the_work():
    space = load_space("mbv3-tiny")
    result = search(space, synthetic_accuracy(space), [], "evolution", population=20, generations=1000, max_evals=200)
    assert 200 <= result.evaluations < 200 + 20


def test_nsga2_front_is_non_dominated_and_spans_the_budget():
    space = load_space("mbv3-w1.2")
    lat = latency_metric(SlotTable(space, 2))
    span = metric_range(space, lat)
    result = search(space, synthetic_accuracy(space), [Constraint(lat, (span.minimum + span.maximum) / 2)], "nsga2", seed=0,
                    population=40, generations=20)
    F = np.array([[e["latency_ms"]["synthetic"], -e["accuracy"]] for e in result.front])
    assert len(F) >= 5 and non_dominated(F).all()
    assert (np.diff(F[:, 0]) >= 0).all() and (np.diff(F[:, 1]) <= 0).all()  # cheapest first, accuracy rising
    # Nothing evaluated dominates a front member.
    archive = np.column_stack([result.archive["latency_ms[synthetic]"], -result.archive["accuracy"]])
    assert non_dominated(np.concatenate([F, archive]))[:len(F)].all()
    assert max(e["accuracy"] for e in result.front) == pytest.approx(result.best["accuracy"])


def test_a_user_metric_over_plain_archs_works():
    """The plug-in interface: any callable over a sequence of Arch; no genomes needed."""
    space = load_space("mbv3-tiny")
    seen = []

    def my_predictor(archs):
        seen.append(len(archs))
        return [a.resolution / 10 + sum(k * e for unit in a.units for k, e in unit) / 100 for a in archs]

    def my_memory(archs):
        return [arch_cost(space, a).params / 1e6 for a in archs]

    acc = Metric("my_accuracy", my_predictor, goal="max")
    cons = [Constraint(Metric("my_params", my_memory, unit="M"), 0.6)]
    result = search(space, acc, cons, "evolution", population=16, generations=5, top_k=5)
    assert seen and sum(seen) == result.evaluations
    best = result.top[0]
    assert all(e["my_params"] <= 0.6 for e in result.top)
    assert best["my_accuracy"] == max(e["my_accuracy"] for e in result.top)
    assert best["my_accuracy"] == pytest.approx(my_predictor([Arch.parse(best["arch"], space)])[0])


def test_repair_makes_every_sample_feasible_near_the_minimum():
    space = load_space("mbv3-w1.2")
    lat = latency_metric(SlotTable(space, 4))
    minimum = metric_range(space, lat).minimum
    cons = Constraints(space, [Constraint(lat, minimum * 1.05)])
    cons.check()
    genomes = cons.sample(np.random.default_rng(0), 300)
    assert cons.feasible(genomes).all()
    assert len(np.unique(genomes, axis=0)) > 1


# ---- restricted resolutions (those a supernet was trained at) ---------------------------------------

def test_latency_range_over_some_resolutions_is_exact_against_enumeration():
    space = tiny_space().replace(resolutions=(24, 28, 32))
    genomes = all_genomes(space)
    metric = latency_metric(SlotTable(space, 3))
    for allowed in [(28,), (28, 32), (24, 32)]:
        keep = np.isin(np.array(space.resolutions)[genomes[:, 0]], allowed)
        values = metric(ArchBatch(space, genomes[keep]))
        found = metric_range(space, metric, resolutions=allowed)
        assert found.exact and space.resolutions[found.argmin[0]] in allowed
        assert (found.minimum, found.maximum) == (pytest.approx(values.min()), pytest.approx(values.max()))
    with pytest.raises(Exception, match="no resolution 30; it offers 24, 28, 32"):
        metric_range(space, metric, resolutions=(28, 30))


@pytest.mark.parametrize("strategy,options", [
    ("evolution", {"population": 24, "generations": 10}),
    ("nsga2", {"population": 24, "generations": 10}),
    ("random", {"evaluations": 300}),
])
def test_strategies_only_visit_the_allowed_resolutions(strategy, options):
    # The objective prefers 224 px; the supernet "was trained" at 160 and 192 only.
    space = load_space("mbv3-w1.2")
    seen = []

    def accuracy(archs):
        seen.extend(a.resolution for a in archs)
        return [a.resolution + arch_cost(space, a).macs / 1e9 for a in archs]

    lat = latency_metric(SlotTable(space, 5))
    span = metric_range(space, lat, resolutions=(160, 192))
    budget = span.minimum + 0.3 * (span.maximum - span.minimum)
    result = search(space, Metric("acc", accuracy, goal="max"), [Constraint(lat, budget)], strategy, seed=1,
                    resolutions=(160, 192), **options)
    assert set(seen) == {160, 192}  # both drawn, nothing else evaluated
    assert Arch.parse(result.best["arch"], space).resolution == 192
    assert all(e["latency_ms"]["synthetic"] <= budget for e in result.top + result.front)
    assert result.to_dict()["resolutions"] == [160, 192]


def test_a_generous_budget_returns_the_largest_at_the_largest_allowed_resolution():
    space = tiny_space().replace(resolutions=(24, 28, 32))
    lat = latency_metric(SlotTable(space, 1))
    result = search(space, synthetic_accuracy(space), [Constraint(lat, 1e9)], "evolution", resolutions=(24, 28),
                    population=8, generations=2)
    assert result.note and result.best["arch"] == str(largest(space, 28))


def test_repair_stays_on_allowed_resolutions():
    space = load_space("mbv3-w1.2")
    lat = latency_metric(SlotTable(space, 4))
    allowed = (176, 224)
    minimum = metric_range(space, lat, resolutions=allowed).minimum
    assert minimum > metric_range(space, lat).minimum  # 160 px would be cheaper, and is not allowed
    cons = Constraints(space, [Constraint(lat, minimum * 1.05)], resolutions=allowed)
    cons.check()
    rng = np.random.default_rng(0)
    big = np.repeat(encode(space, [largest(space, 224)]), 50, axis=0)  # far over budget
    fixed = cons.enforce(big, rng)
    assert cons.feasible(fixed).all()
    assert set(np.array(space.resolutions)[fixed[:, 0]]) <= set(allowed)


# ---- Pareto helpers ---------------------------------------------------------------------------------

def test_non_dominated_and_hypervolume():
    F = np.array([[1, 5], [2, 3], [3, 4], [4, 1], [2, 3], [5, 5]], float)
    assert non_dominated(F).tolist() == [True, True, False, True, True, False]
    assert non_dominated(np.column_stack([F, np.zeros(len(F))])).tolist() == non_dominated(F).tolist()
    # Staircase (1,5) (2,3) (4,1) against reference (6, 6): 1*1 + 2*3 + 2*5.
    assert hypervolume_2d(F, (6, 6)) == pytest.approx(17.0)
