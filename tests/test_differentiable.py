"""`--strategy differentiable`: the expected-latency term against the table, the hard budget, and
determinism, through the real CLI on the demo's trained digits supernet."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import write_table
from edgenas.errors import ConfigError
from edgenas.latency.table import LatencyTable
from edgenas.search import ArchBatch, Constraint, Constraints, cost_metric, latency_metric, load_results, metric_range, search
from edgenas.search.differentiable import Relaxation
from edgenas.space import Arch, load_space, sample_genomes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    space = load_space("mbv3-tiny")
    path = write_table(space, tmp_path_factory.mktemp("diff") / "t.yaml", "dev")
    metric = latency_metric(LatencyTable.load(path), space=space)
    return {"space": space, "path": path, "metric": metric, "span": metric_range(space, metric)}


def test_expected_costs_are_the_tables_values_on_a_one_hot_distribution(table):
    space = table["space"]
    cons = Constraints(space, [Constraint(table["metric"], 1e9), Constraint(cost_metric("mflops"), 1e9)])
    relaxed = Relaxation(space, cons, torch.device("cpu"))
    assert relaxed.additive == [0, 1]  # latency and MACs both decompose exactly
    genomes = sample_genomes(space, np.random.default_rng(0), 5)
    want = cons.values(genomes)
    for genome, values in zip(genomes, want):
        relaxed.set_onehot(genome)
        assert np.array_equal(relaxed.argmax(), relaxed.argmax())
        got = [float(v.detach()) for v in relaxed.expected_costs()]
        assert got == pytest.approx(list(values), rel=1e-9)
    # Uniform logits: the expectation lies strictly between the smallest and largest latency.
    with torch.no_grad():
        for p in relaxed.parameters():
            p.zero_()
    mean = float(relaxed.expected_costs()[0])
    assert table["span"].minimum < mean < table["span"].maximum


def test_differentiable_needs_a_supernet_and_data(table):
    lat = Constraint(table["metric"], (table["span"].minimum + table["span"].maximum) / 2)
    acc = lambda archs: np.zeros(len(archs))  # noqa: E731
    from edgenas.search import Metric

    for kwargs in ({}, {"supernet": object()}, {"dataset": object()}):
        with pytest.raises(ConfigError, match="needs both supernet= and dataset="):
            search(table["space"], Metric("a", acc, goal="max"), [lat], "differentiable", **kwargs)


# ---- through the CLI on the demo's supernet ----------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgenas", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def demo(demo_run, table, tmp_path_factory):
    assert demo_run["run"].returncode == 0, demo_run["run"].stderr[-2000:]
    train = demo_run["out"] / "train"
    assert (train / "supernet.predictor.pt").is_file()
    return {"train": train, "dir": tmp_path_factory.mktemp("diff-cli"), **table}


def differentiable(demo, name, budget, *extra):
    out = demo["dir"] / f"{name}.json"
    run = run_cli("search", "--supernet", demo["train"], "--strategy", "differentiable", "--latency-table",
                  demo["path"], "--latency-ms", budget, "--search-batch-size", "16", "--out", out, *extra)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_results(out), run


def test_differentiable_returns_a_subnet_within_every_budget_and_is_deterministic(demo):
    budget = round((demo["span"].minimum + demo["span"].maximum) / 2, 3)
    args = ("--steps", "6", "--max-mflops", "15", "--seed", "3")
    first, _ = differentiable(demo, "mid", budget, *args)
    assert first.strategy == "differentiable" and first.objective == "accuracy"
    record = first.data["differentiable"]
    assert record["steps"] == 6 and record["freeze_weights"] is False
    assert record["differentiated"] == ["latency_ms[dev]", "mflops"]
    assert len(record["history"]) == 6 and record["returned"] == first.top[0]["arch"]
    best = first.top[0]
    arch = Arch.parse(best["arch"], demo["space"])
    assert arch.resolution in first.data["resolutions"]
    assert best["latency_ms"]["dev"] <= budget and best["macs"] <= 15e6
    # by the table itself, not only as recorded
    assert table_ms(demo, arch) == pytest.approx(best["latency_ms"]["dev"]) and table_ms(demo, arch) <= budget
    again, _ = differentiable(demo, "mid-again", budget, *args)
    assert again.top == first.top and again.data["differentiable"]["history"] == record["history"]
    other, _ = differentiable(demo, "mid-frozen", budget, "--steps", "6", "--max-mflops", "15", "--seed", "3",
                              "--freeze-weights")
    assert other.data["differentiable"]["freeze_weights"] is True
    assert other.data["differentiable"]["history"] != record["history"]


def table_ms(demo, arch):
    from edgenas.space import encode

    return float(demo["metric"](ArchBatch(demo["space"], encode(demo["space"], [arch])))[0])


def test_a_tight_budget_still_returns_a_feasible_subnet_and_says_it_was_repaired(demo):
    # Two steps from the largest subnet cannot reach a budget 5% above the smallest achievable:
    # the argmax is over it and is repaired.
    budget = round(demo["span"].minimum * 1.05, 4)
    result, run = differentiable(demo, "tight", budget, "--steps", "2", "--freeze-weights")
    record = result.data["differentiable"]
    assert record["repaired"] is True and record["argmax_over_budget"]["latency_ms[dev]"] > budget
    assert record["returned"] != record["argmax"]
    assert table_ms(demo, Arch.parse(result.top[0]["arch"], demo["space"])) <= budget
    assert "was over budget" in result.data["note"] and "repaired" in result.data["note"]
    assert "repaired" in run.stdout  # the summary's note


@pytest.mark.parametrize("extra,expected", [
    (["--data-path", "/nonexistent/digits"], "data.path"),  # the data cannot be loaded
    (["--torch-device", "tpu"], "--torch-device"),
])
def test_bad_differentiable_input_is_one_line_and_exit_2(demo, extra, expected):
    run = run_cli("search", "--supernet", demo["train"], "--strategy", "differentiable", "--latency-table",
                  demo["path"], "--latency-ms", "20", "--out", demo["dir"] / "bad.json", *extra)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in run.stderr, run.stderr


def test_differentiable_without_a_supernet_is_one_line_and_exit_2(tmp_path):
    run = run_cli("search", "--strategy", "differentiable", "--out", tmp_path / "x.json")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "--supernet" in lines[0], run.stderr
