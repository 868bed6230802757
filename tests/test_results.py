"""The search results file: written by `SearchResult.save`, read by `load_results`, one module.

Every file read here is one the search wrote; the bad ones are that file with one thing changed."""
import json

import pytest

from conftest import DELETE, set_in, write_table
from edgenas.errors import ConfigError
from edgenas.latency.table import LatencyTable
from edgenas.search import Constraint, Metric, cost_metric, latency_metric, load_results, metric_range, search
from edgenas.search.results import FORMAT, FORMAT_VERSION
from edgenas.space import load_space


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A results file as the search writes it: a latency and a MACs budget, accuracy from MACs."""
    d = tmp_path_factory.mktemp("results")
    space = load_space("mbv3-tiny")
    table = LatencyTable.load(write_table(space, d / "t.yaml", "dev-a"))
    latency = latency_metric(table, space=space)
    span = metric_range(space, latency)
    budget = (span.minimum + span.maximum) / 2
    accuracy = Metric("accuracy", lambda archs: archs.costs()["macs"] / 1e6, goal="max", unit="%")
    result = search(space, accuracy, [Constraint(latency, budget), Constraint(cost_metric("mflops"), 20.0)],
                    "random", evaluations=200, top_k=5, report=[latency])
    path = result.save(d / "results.json")
    return {"path": path, "result": result, "budget": budget, "space": space, "dir": d}


def test_what_is_written_is_read_back(written):
    r, result = load_results(written["path"]), written["result"]
    assert r.format_version == FORMAT_VERSION and r.space_name == "mbv3-tiny"
    assert r.space_hash == written["space"].hash and r.objective == "accuracy"
    assert r.budget == result.budget == {"latency_ms[dev-a]": written["budget"], "mflops": 20.0}
    assert r.latency_budgets == {"dev-a": written["budget"]}
    assert [e["arch"] for e in r.top] == [e["arch"] for e in result.top]
    second = r.entry(2)
    assert second.arch == result.top[1]["arch"] and second.accuracy == result.top[1]["accuracy"]
    assert second.predicted_latency_ms == result.top[1]["latency_ms"]
    assert second.budget_for(["dev-a"]) == written["budget"] == second.budget_for()


def _mutated(written, tmp_path, change):
    data = json.loads(written["path"].read_text())
    change(data)
    path = tmp_path / "mutated.json"
    path.write_text(json.dumps(data))
    return path


def test_a_version_1_file_with_the_flat_budget_is_read(written, tmp_path):
    """The first releases wrote format_version 1 with {"latency_ms[TABLE]": ms} budgets."""
    def v1(d):
        d["format_version"] = 1
        d["budget"] = {f"latency_ms[{t}]": ms for t, ms in d["budget"].pop("latency_ms").items()} | d["budget"]

    r = load_results(_mutated(written, tmp_path, v1))
    assert r.format_version == 1 and r.latency_budgets == {"dev-a": written["budget"]}
    assert r.budget == load_results(written["path"]).budget


def _set(path, value):
    return lambda d: set_in(d, path, value)


@pytest.mark.parametrize("path, value, message", [
    (("format",), DELETE, "key 'format': got nothing (the key is missing), expected 'edgenas-search-results'"),
    (("format",), "edgenas-latency-table", "key 'format': got 'edgenas-latency-table', expected"),
    (("format_version",), 99, "key 'format_version': got 99, expected one of 1, 2"),
    (("top",), [], "key 'top': got a list [], expected a non-empty list"),
    (("top", 0, "arch"), DELETE, "key 'top.0.arch': got nothing (the key is missing), expected an architecture"),
    (("top", 0, "arch"), 7, "key 'top.0.arch': got 7, expected an architecture string"),
    (("top", 1, "accuracy"), "high", "key 'top.1.accuracy': got 'high', expected a finite number"),
    (("top", 0, "latency_ms", "dev-a"), -0.5, "key 'top.0.latency_ms.dev-a': got -0.5, expected a predicted latency"),
    (("top", 0, "latency_ms"), 0.2, "key 'top.0.latency_ms': got 0.2, expected a mapping of latency table name"),
    (("top", 0, "macs"), -1, "key 'top.0.macs': got -1, expected an integer >= 0"),
    (("budget", "latency_ms"), 0.3, "key 'budget.latency_ms': got 0.3, expected a mapping"),
    (("budget", "latency_ms", "dev-a"), 1e300, "key 'budget.latency_ms.dev-a': got 1e+300, expected a latency budget"),
    (("budget", "mflops"), "8", "key 'budget.mflops': got '8', expected a finite number"),
    (("space",), "mbv3-tiny", "key 'space': got 'mbv3-tiny', expected a mapping"),
    (("space", "name"), ["x"] * 9, "key 'space.name': got a list of 9 items, expected the name of the searched space"),
    (("space", "colour"), "red", "key 'space.colour': got an unknown key, expected one of name, hash"),
    (("strategy",), 3, "key 'strategy': got 3, expected a string"),
    (("latency_tables", "dev-a"), 5, "key 'latency_tables.dev-a': got 5, expected a string"),
    (("objective",), "macs", "key 'objective': got 'macs', expected the name of the objective metric"),
    (("front", 0), [], "key 'front.0': got a list [], expected a mapping"),
])
def test_a_changed_file_is_refused_naming_file_and_key(written, tmp_path, path, value, message):
    bad = _mutated(written, tmp_path, _set(path, value))
    with pytest.raises(ConfigError) as err:
        load_results(bad)
    text = str(err.value)
    assert text.startswith(f"{bad}: ") and message in text and "\n" not in text and len(text) < 300


def test_files_of_other_shapes_say_how_to_write_a_current_one(written, tmp_path):
    for name, content in (("list.json", [{"arch": "r24_x"}]), ("results.json", {"results": [{"arch": "r24_x"}]})):
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(ConfigError, match=f"{FORMAT}.*edgenas search --out again"):
            load_results(tmp_path / name)
    nan = tmp_path / "nan.json"
    nan.write_text(written["path"].read_text().replace(f'"mflops": 20.0', '"mflops": NaN', 1))
    with pytest.raises(ConfigError, match="NaN"):
        load_results(nan)


def test_rank_out_of_range(written):
    r = load_results(written["path"])
    for rank in (0, len(r.top) + 1):
        with pytest.raises(ConfigError, match=f"--rank {rank} is out of range: .* ranks {len(r.top)}"):
            r.entry(rank)
