"""The user's whole path through the CLI, one chain, each step reading what the previous one wrote:

    edgenas train configs/digits-tiny.yaml        -> train/supernet.pt
    edgenas eval train/supernet.pt                -> accuracies (JSON)
    edgenas predictor build train/supernet.pt     -> train/supernet.predictor.pt (the default place)
    edgenas profile device_profiles/local-cpu.yaml -> local-cpu.yaml (latency table)
    edgenas search --strategy S (each)            -> search-S.json, search-S.png
    edgenas finetune --from search-evolution.json -> finetune/finetuned.pt (the winner, 1 epoch)
    edgenas export --checkpoint finetune --from search-evolution.json --format (every format) --measure local-cpu

Run as a user runs them (`python -m edgenas ...` subprocesses, from a scratch directory), on the
embedded digits data, with `--set` overrides and small sizes so the chain stays within minutes on
a 2-core CI machine. The demo's own files are chained into search and export the same way.
Every file is read back with edgenas's own readers.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

TRAIN_QUICK = ["--set", "schedule.phases.0.epochs=1", "--set", "train.steps_per_epoch=3",
               "--set", "train.validate=false", "--set", "train.bn_recal_images=200"]
STRATEGIES = ("evolution", "nsga2", "random", "rl", "tpe")
SEARCH_QUICK = ["--population", "16", "--generations", "4", "--top-k", "5"]
EXPORT_QUICK = ["--bn-images", "200", "--eval-images", "200", "--calib-images", "32"]
PROFILE = REPO / "device_profiles" / "local-cpu.yaml"
CONFIG = REPO / "configs" / "digits-tiny.yaml"


class Chain:
    """Runs the steps in order; a step after a failed one is not run (its test says which failed)."""

    def __init__(self, work: Path):
        self.work = work
        self.runs: dict[str, subprocess.CompletedProcess] = {}
        self.seconds: dict[str, float] = {}
        self.failed: str | None = None

    def run(self, step: str, *args, timeout: int = 600) -> subprocess.CompletedProcess | None:
        if self.failed:
            return None
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "edgenas", *map(str, args)], cwd=self.work,
                              capture_output=True, text=True, timeout=timeout)
        self.seconds[step] = time.monotonic() - started
        self.runs[step] = proc
        if proc.returncode not in ((0, 1) if step == "export" else (0,)):
            self.failed = step
        return proc

    def get(self, step: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        if step not in self.runs:
            pytest.fail(f"step {step} did not run: step {self.failed} failed before it")
        proc = self.runs[step]
        assert proc.returncode in ok, f"{step} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
        return proc


def _budget(table_path: Path, ckpt: Path) -> float:
    """The middle of the latency range the table predicts for the supernet's trained subnets: what a
    user reads off the profile's report to choose a feasible budget."""
    from edgenas.latency.table import LatencyTable
    from edgenas.search import latency_metric, metric_range
    from edgenas.train.checkpoint import read

    info = read(ckpt)[1]
    table = LatencyTable.load(table_path)
    measured = [r for r in info.trained_resolutions if r in table.header["resolutions"]]
    span = metric_range(info.space, latency_metric(table, space=info.space), resolutions=measured)
    return round((span.minimum + span.maximum) / 2, 4)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    work = tmp_path_factory.mktemp("user-path")
    c = Chain(work)
    started = time.monotonic()
    ckpt = work / "train" / "supernet.pt"
    c.run("train", "train", CONFIG, "--out", work / "train", *TRAIN_QUICK)
    c.run("eval", "eval", ckpt, "--arch", "largest", "--arch", "smallest", "--bn-images", "100", "--json")
    c.run("predictor", "predictor", "build", ckpt, "--samples", "12", "--calib-images", "100", "--epochs", "30")
    # One resolution (search then keeps to it) and no calibration subnets: their reliability check
    # (repeatability within 10%) is what a loaded CI machine cannot give; test_calibration covers it.
    c.run("profile", "profile", PROFILE, "--space", "mbv3-tiny", "--resolutions", "24", "--calibrate", "0",
          "--out", work / "local-cpu.yaml", "--runs", "10", "--warmup", "2")
    try:
        c.budget = None if c.failed else _budget(work / "local-cpu.yaml", ckpt)
    except Exception:
        c.failed = "profile (choosing a budget from its table)"
        raise
    for s in STRATEGIES:
        extra = {"random": ["--evaluations", "80"], "rl": ["--evaluations", "80"], "tpe": ["--evaluations", "30"]}.get(s, [])
        c.run(f"search-{s}", "search", "--supernet", ckpt, "--latency-table", work / "local-cpu.yaml",
              "--latency-ms", c.budget, "--strategy", s, *SEARCH_QUICK, *extra, "--out", work / f"search-{s}.json")
    from edgenas.export import FORMATS

    c.formats = list(FORMATS)
    c.run("finetune", "finetune", "--supernet", ckpt, "--from", work / "search-evolution.json", "--epochs", "1",
          "--out", work / "finetune")
    c.run("export", "export", "--checkpoint", work / "finetune", "--from", work / "search-evolution.json",
          "--format", ",".join(c.formats), "--out", work / "export", "--latency-table", work / "local-cpu.yaml",
          "--measure", PROFILE, *EXPORT_QUICK)
    c.seconds["total"] = time.monotonic() - started
    print("user path, seconds per step:", json.dumps({k: round(v, 1) for k, v in c.seconds.items()}))
    return c


def test_train_writes_a_supernet_that_loads(chain):
    from edgenas.train.checkpoint import load_supernet

    chain.get("train")
    supernet, info = load_supernet(chain.work / "train" / "supernet.pt")
    assert supernet.space.name == "mbv3-tiny" and info.data.name == "digits"
    assert (chain.work / "train" / "train_log.jsonl").is_file()


def test_eval_reads_the_trained_supernet(chain):
    from edgenas.space import Arch, load_space

    doc = json.loads(chain.get("eval").stdout)
    assert doc["space"] == "mbv3-tiny" and Path(doc["checkpoint"]).resolve() == (chain.work / "train" / "supernet.pt")
    assert len(doc["results"]) == 2
    for r in doc["results"]:
        Arch.parse(r["arch"], load_space("mbv3-tiny"))
        assert 0.0 <= r["accuracy"] <= 1.0


def test_predictor_lands_where_search_looks_by_default(chain):
    from edgenas.search.predictor import AccuracyPredictor, default_predictor_path
    from edgenas.space import load_space

    chain.get("predictor")
    path = default_predictor_path(chain.work / "train" / "supernet.pt")
    assert path == chain.work / "train" / "supernet.predictor.pt"
    AccuracyPredictor.load(path, load_space("mbv3-tiny"))


def test_profile_writes_a_table_of_the_space(chain):
    from edgenas.latency.table import LatencyTable
    from edgenas.space import load_space

    chain.get("profile")
    table = LatencyTable.load(chain.work / "local-cpu.yaml")
    assert not table.unreliable, table.unreliable
    assert table.header["space"]["hash"] == load_space("mbv3-tiny").hash and table.header["resolutions"] == [24]
    assert chain.budget > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_search_with_each_strategy_reads_those_files(chain, strategy):
    from edgenas.search import load_results
    from edgenas.space import Arch, load_space

    proc = chain.get(f"search-{strategy}")
    out = chain.work / f"search-{strategy}.json"
    results = load_results(out)
    space = load_space("mbv3-tiny")
    assert results.strategy == strategy and results.space_hash == space.hash
    assert list(results.latency_budgets.values()) == [chain.budget]
    table = next(iter(results.latency_budgets))
    assert results.latency_tables[table] == str(chain.work / "local-cpu.yaml")
    assert results.data["predictor"] == str(chain.work / "train" / "supernet.predictor.pt")
    for e in results.top:
        assert Arch.parse(e["arch"], space).resolution == 24  # what the table measured
        assert e["latency_ms"][table] <= chain.budget
    if strategy == "nsga2":
        assert results.front
    assert results.top[0]["arch"] in proc.stdout
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_trains_the_searched_winner(chain):
    from edgenas.search import load_results
    from edgenas.train.checkpoint import load_subnet

    proc = chain.get("finetune")
    _, info = load_subnet(chain.work / "finetune")
    assert info.arch == load_results(chain.work / "search-evolution.json").entry(1).arch
    assert info.finetune["epochs"] == 1 and info.finetune["accuracy_after"] is not None
    assert f"-> {info.finetune['accuracy_after']:.2f}%" in proc.stdout


def test_export_from_the_search_in_every_format_and_measure(chain):
    from edgenas.export import FORMATS, load_card, read_metadata
    from edgenas.search import load_results

    # Exit 1 is what export documents when a file fails its check (kept, marked invalid). A supernet
    # trained for a few steps is near chance, so its int8 files may disagree with fp32 on close
    # calls or lose a point of accuracy: only those failures are allowed here; every float file must pass its parity check.
    proc = chain.get("export", ok=(0, 1))
    best = load_results(chain.work / "search-evolution.json").entry(1)
    card = load_card(chain.work / "export")
    assert card["arch"] == best.arch
    assert card["source"]["results"] == str(chain.work / "search-evolution.json") and card["source"]["rank"] == 1
    assert card["finetune"]["epochs"] == 1 and card["source"]["checkpoint"] == str(chain.work / "finetune")
    assert set(card["files"]) == set(chain.formats) == set(FORMATS)
    for fmt, entry in card["files"].items():
        assert (chain.work / "export" / entry["file"]).stat().st_size > 0
        if "int8" in fmt and not entry["valid"]:
            assert "top-1 agreement" in entry["error"] or "accuracy drops" in entry["error"], (fmt, entry)
        else:
            assert entry["valid"] is True, (fmt, entry)
    assert proc.returncode == (0 if card["valid"] else 1) and card["valid"] == all(
        e["valid"] for e in card["files"].values())
    assert read_metadata(chain.work / "export" / card["files"]["onnx"]["file"])["arch"] == best.arch
    # The search's budget reaches the card, and --measure records what it measured there.
    table = next(iter(best.budget_ms))
    assert card["latency"]["budget_ms"] == best.budget_ms[table] == chain.budget
    measured = card["files"]["onnx"]["measured"]
    assert measured["device"] == "local-cpu" and measured["error"] is None and measured["median_ms"] > 0
    assert measured["over_budget"] is (measured["median_ms"] > chain.budget)
    assert f"{measured['median_ms']:.3f} ms" in proc.stdout
    assert "model card:" in proc.stdout


# ---- the demo's files, chained into search and export with no extra flags ----------------------

def test_demo_outputs_chain_into_search_and_export(demo_run, tmp_path):
    from edgenas.export import load_card
    from edgenas.search import load_results

    assert demo_run["run"].returncode == 0, demo_run["run"].stderr[-3000:]
    demo = demo_run["out"]
    # export --from the demo's own search.json.
    exported = subprocess.run([sys.executable, "-m", "edgenas", "export", "--supernet", demo / "train",
                               "--from", demo / "search.json", "--out", tmp_path / "export", *EXPORT_QUICK],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    demo_best = load_results(demo / "search.json").entry(1)
    assert load_card(tmp_path / "export")["arch"] == demo_best.arch
    # search on the demo's run directory finds its predictor; export takes what that search wrote.
    from edgenas.latency.table import LatencyTable

    budget = demo_best.budget_for()
    # On a loaded machine the demo's calibration subnets may measure apart when measured again; the
    # table is then marked unreliable and search asks for --force (the demo itself goes on).
    force = ["--force"] if LatencyTable.load(demo / "latency_table.yaml").unreliable else []
    searched = subprocess.run([sys.executable, "-m", "edgenas", "search", "--supernet", demo / "train",
                               "--latency-table", demo / "latency_table.yaml", "--latency-ms", str(budget),
                               *SEARCH_QUICK, *force, "--out", tmp_path / "search.json"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr[-3000:]
    ours = load_results(tmp_path / "search.json")
    assert ours.data["predictor"] == str(demo / "train" / "supernet.predictor.pt")
    again = subprocess.run([sys.executable, "-m", "edgenas", "export", "--supernet", demo / "train",
                            "--from", tmp_path / "search.json", "--out", tmp_path / "export2", *EXPORT_QUICK],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_card(tmp_path / "export2")["arch"] == ours.entry(1).arch
