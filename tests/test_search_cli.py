"""`edgenas search` and `edgenas predictor build` end to end on a tiny supernet checkpoint."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import write_table
from edgenas.cli import main
from edgenas.data import DataConfig
from edgenas.latency.table import LatencyTable
from edgenas.search import ArchBatch, metric_range, latency_metric
from edgenas.search.predictor import AccuracyPredictor, train_predictor
from edgenas.space import Arch, load_space, sample_genomes
from edgenas.supernet.supernet import Supernet
from edgenas.train import TrainConfig
from edgenas.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny supernet checkpoint (untrained), its predictor (beside it) and two latency tables."""
    d = tmp_path_factory.mktemp("search-cli")
    torch.manual_seed(0)
    cfg = TrainConfig(space="mbv3-tiny", data=DataConfig(name="digits", limit=64, val_fraction=0.05))
    space = load_space("mbv3-tiny")
    net = Supernet(space)
    ckpt.save(d / "supernet.pt", ckpt.payload("supernet", cfg, space, net, {"done": True}, {}))
    genomes = sample_genomes(space, np.random.default_rng(0), 100)
    macs = ArchBatch(space, genomes).costs()["macs"] / 1e6
    predictor, _ = train_predictor(space, genomes, 80 + 3 * np.log(macs), epochs=10)
    predictor.save(d / "supernet.predictor.pt")
    a = write_table(space, d / "a.yaml", "dev-a")
    b = write_table(space, d / "b.yaml", "dev-b", scale=0.5)
    span = metric_range(space, latency_metric(LatencyTable.load(a), space=space))
    return {"dir": d, "ckpt": d / "supernet.pt", "a": a, "b": b, "space": space, "min": span.minimum,
            "budget": (span.minimum + span.maximum) / 2}


def search(files, *extra, out="r.json"):
    out = files["dir"] / out
    args = ["search", "--supernet", str(files["ckpt"]), "--latency-table", str(files["a"]),
            "--population", "20", "--generations", "5", "--out", str(out), *extra]
    return main(args), out


def test_search_writes_results_and_a_plot(files, capsys):
    budget = files["budget"]
    code, out = search(files, "--latency-ms", str(budget), "--max-mflops", "8", "--top-k", "4")
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["format"] == "edgenas-search-results" and data["format_version"] == 2
    assert data["space"] == {"name": "mbv3-tiny", "hash": files["space"].hash}
    assert data["budget"] == {"latency_ms": {"dev-a": budget}, "mflops": 8.0}
    assert data["latency_tables"] == {"dev-a": str(files["a"])}
    assert 1 <= len(data["top"]) <= 4
    for e in data["top"]:
        Arch.parse(e["arch"], files["space"])
        assert e["latency_ms"]["dev-a"] <= budget and e["macs"] <= 8e6
        assert {"accuracy", "macs", "params"} <= set(e)
    best = data["top"][0]
    assert best["arch"] in printed and f"{best['accuracy']:.2f}" in printed and "MACs" in printed
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_keeps_to_the_resolutions_the_supernet_trained(files, tmp_path, capsys):
    # The same weights, recorded as trained at 24 and 28 px only (as the Fashion-MNIST config does).
    cfg = TrainConfig.from_dict({"space": "mbv3-tiny", "data": {"name": "digits", "limit": 64, "val_fraction": 0.05},
                                 "schedule": {"phases": [{"name": "all", "epochs": 1, "lr": 0.1,
                                                          "resolutions": [24, 28]}]}})
    raw = torch.load(files["ckpt"], weights_only=True)
    ckpt.save(tmp_path / "supernet.pt", {**raw, "config": cfg.to_dict()})
    (tmp_path / "supernet.predictor.pt").write_bytes((files["dir"] / "supernet.predictor.pt").read_bytes())
    base = ["search", "--supernet", str(tmp_path / "supernet.pt"), "--latency-table", str(files["a"]),
            "--latency-ms", str(files["budget"]), "--population", "20", "--generations", "5", "--top-k", "20"]

    def found(out):
        data = json.loads(out.read_text())
        return data["resolutions"], {Arch.parse(e["arch"], files["space"]).resolution for e in data["top"]}

    assert main(base + ["--out", str(tmp_path / "default.json")]) == 0
    searched, best = found(tmp_path / "default.json")
    assert searched == [24, 28] and best <= {24, 28}
    # Unrestricted, this predictor (accuracy grows with MACs) puts 32 px subnets among the best.
    assert main(base + ["--resolutions", "24", "28", "32", "--out", str(tmp_path / "all.json")]) == 0
    assert 32 in found(tmp_path / "all.json")[1]
    assert main(base + ["--resolutions", "32", "--out", str(tmp_path / "r32.json")]) == 0
    assert found(tmp_path / "r32.json") == ([32], {32})
    capsys.readouterr()
    assert main(base + ["--resolutions", "30", "--out", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no resolution 30; it offers 24, 28, 32" in err[0] and "Traceback" not in err[0]


def test_a_table_measured_at_some_resolutions_limits_the_search_to_them(files, tmp_path, capsys):
    part = write_table(files["space"], tmp_path / "part.yaml", "part", resolutions=[24, 28])
    args = ["search", "--supernet", str(files["ckpt"]), "--latency-table", str(part), "--latency-ms",
            str(files["budget"]), "--population", "20", "--generations", "5", "--top-k", "20"]
    assert main(args + ["--out", str(tmp_path / "part.json")]) == 0
    data = json.loads((tmp_path / "part.json").read_text())
    assert data["resolutions"] == [24, 28]
    assert {Arch.parse(e["arch"], files["space"]).resolution for e in data["top"]} <= {24, 28}
    # A table with none of the resolutions the supernet trained is a one-line error naming both.
    only32 = write_table(files["space"], tmp_path / "r32.yaml", "r32", resolutions=[32])
    cfg = TrainConfig.from_dict({"space": "mbv3-tiny", "data": {"name": "digits", "limit": 64},
                                 "schedule": {"phases": [{"name": "all", "epochs": 1, "lr": 0.1, "resolutions": [24, 28]}]}})
    ckpt.save(tmp_path / "supernet.pt", {**torch.load(files["ckpt"], weights_only=True), "config": cfg.to_dict()})
    (tmp_path / "supernet.predictor.pt").write_bytes((files["dir"] / "supernet.predictor.pt").read_bytes())
    capsys.readouterr()
    assert main(["search", "--supernet", str(tmp_path / "supernet.pt"), "--latency-table", str(only32),
                 "--latency-ms", "100", "--out", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained at 24, 28 px" in err[0] and "measured only 32 px" in err[0]


def test_a_subnet_trained_alone_was_trained_at_its_own_resolution(files, tmp_path):
    arch = "r28_k3e3,k3e3_k3e3,k3e3_k3e3,k3e3_k3e3,k3e3_k3e3,k3e3"
    cfg = TrainConfig.from_dict({"space": "mbv3-tiny", "data": {"name": "digits", "limit": 64},
                                 "schedule": {"phases": [{"name": "scratch", "epochs": 1, "lr": 0.1, "arch": arch}]}})
    raw = torch.load(files["ckpt"], weights_only=True)
    ckpt.save(tmp_path / "supernet.pt", {**raw, "config": cfg.to_dict()})
    info = ckpt.read(tmp_path / "supernet.pt")[1]
    assert info.trained_resolutions == (28,) and str(info.trained().largest()) == arch


def test_same_seed_same_file(files):
    runs = []
    for name, seed in (("s1.json", "3"), ("s2.json", "3"), ("s3.json", "4")):
        code, out = search(files, "--latency-ms", str(files["budget"]), "--seed", seed, "--strategy", "random",
                           "--evaluations", "300", out=name)
        data = json.loads(out.read_text())
        data.pop("seconds")
        runs.append(data)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_nsga2_with_two_tables(files):
    code, out = search(files, "--latency-table", str(files["b"]), "--latency-ms", str(files["budget"]),
                       "--strategy", "nsga2")
    assert code == 0
    data = json.loads(out.read_text())
    assert set(data["latency_tables"]) == {"dev-a", "dev-b"}
    assert len(data["front"]) >= 2
    for e in data["front"]:
        assert set(e["latency_ms"]) == {"dev-a", "dev-b"} and max(e["latency_ms"].values()) <= files["budget"]


def test_infeasible_budget_is_a_one_line_error(files, capsys):
    code, out = search(files, "--latency-ms", str(files["min"] * 0.5), out="never.json")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    shown = float(re.search(r"smallest achievable is ([0-9.]+) ms", err).group(1))
    assert files["min"] <= shown <= files["min"] + 0.001
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_predictor_of_another_space_is_refused(files, tmp_path, capsys):
    other = files["space"].replace(resolutions=(32,))
    AccuracyPredictor(other).save(tmp_path / "other.pt")
    code, _ = search(files, "--latency-ms", str(files["budget"]), "--predictor", str(tmp_path / "other.pt"))
    assert code == 2 and "rebuild it" in capsys.readouterr().err


@pytest.mark.slow
def test_predictor_build_measures_resumably(files, tmp_path, capsys):
    out = tmp_path / "pred.pt"
    args = ["predictor", "build", str(files["ckpt"]), "--samples", "5", "--epochs", "2", "--calib-images", "16",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "RMSE" in printed and "Spearman" in printed
    predictor = AccuracyPredictor.load(out, files["space"])
    assert predictor.report.n_train == 4 and predictor.report.n_test == 1
    assert "bootstrap interval" not in printed and np.isnan(predictor.report.spearman_low)  # 1 test subnet: none
    log = tmp_path / "pred.pt.measured.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 5
    assert main(args) == 0  # everything is measured: nothing is measured again
    assert log.read_text().splitlines() == lines
    # At one resolution: the measured subnets are those at 28 px.
    assert main(args[:-1] + [str(tmp_path / "r28.pt"), "--resolutions", "28"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "r28.pt.measured.jsonl").read_text().splitlines()[1:]]
    assert len(rows) == 5 and {Arch.parse(r["arch"], files["space"]).resolution for r in rows} == {28}
    capsys.readouterr()
    assert main(args + ["--resolutions", "30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no resolution 30" in err[0]


@pytest.mark.slow
def test_verify_reevaluates_and_measures_on_the_device(files, capsys):
    from conftest import REPO

    code, out = search(files, "--latency-ms", str(files["budget"]), "--verify", "1",
                       "--device", str(REPO / "device_profiles" / "local-cpu.yaml"), out="verified.json")
    assert code == 0
    rows = json.loads(out.read_text())["verify"]
    assert len(rows) == 1
    row = rows[0]
    assert row["arch"] == json.loads(out.read_text())["top"][0]["arch"]
    assert 0.0 <= row["accuracy"] <= 100.0 and row["measured_latency_ms"] > 0
    assert set(row["predicted_latency_ms"]) == {"dev-a"}
    assert "accuracy predicted" in capsys.readouterr().out


@pytest.mark.slow
def test_predictor_build_under_torchrun_shares_the_work(files, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pred.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "edgenas", "predictor", "build",
           str(files["ckpt"]), "--samples", "6", "--epochs", "2", "--calib-images", "16", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote") == 1  # only rank 0 trains and saves
    shards = [tmp_path / f"pred.pt.measured.jsonl.rank{r}" for r in (0, 1)]
    assert [len(p.read_text().splitlines()) - 1 for p in shards] == [3, 3]
    assert AccuracyPredictor.load(out, files["space"]).report.n_train == 5


def test_search_refuses_a_table_profile_marked_unreliable_unless_forced(files, tmp_path, capsys):
    from pathlib import Path

    import yaml

    from edgenas.latency import profile_device

    local = Path(__file__).resolve().parents[1] / "device_profiles" / "local-cpu.yaml"
    report = profile_device(local, files["space"], out=tmp_path / "t.yaml", calibrate=6, resolutions=[24],
                            warmup=1, runs=3, progress=False)
    data = yaml.safe_load(report.path.read_text())
    reason = "the calibration subnets' measured order does not follow the table (Spearman 0.12 < 0.9)"
    data["header"]["calibration"]["check"].update(reliable=False, reasons=[reason])
    bad = tmp_path / "unreliable.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    before = bad.read_bytes()
    args = ["search", "--supernet", str(files["ckpt"]), "--latency-table", str(bad), "--latency-ms", "100",
            "--population", "10", "--generations", "2", "--out", str(tmp_path / "r.json")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unreliable" in err and "Spearman 0.12" in err and "--force" in err
    assert not (tmp_path / "r.json").exists() and bad.read_bytes() == before
    assert main(args + ["--force"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["top"]


def test_compare_runs_each_strategy_at_equal_evaluations_and_plots_the_curves(files, capsys):
    from edgenas.search import load_results

    code, out = search(files, "--latency-ms", str(files["budget"]), "--compare", "evolution,random,rl,tpe",
                       "--evaluations", "40", "--option", "batch=10", out="cmp.json")
    assert code == 0
    printed = capsys.readouterr().out
    for strategy in ("evolution", "random", "rl", "tpe"):
        path = files["dir"] / f"cmp-{strategy}.json"
        results = load_results(path)  # the reader export --from uses
        assert results.strategy == strategy and results.entry(1).arch == results.top[0]["arch"]
        assert 40 <= results.data["evaluations"] <= 60  # evolution may finish its generation
        h = results.history
        assert h["evaluations"][-1] == results.data["evaluations"] and h["best"][-1] == results.top[0]["accuracy"]
        if strategy in ("random", "rl"):
            assert results.options["batch"] == 10
        assert f"wrote {path}" in printed
    assert (files["dir"] / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rl_options_reach_the_results_file(files):
    code, out = search(files, "--latency-ms", str(files["budget"]), "--strategy", "rl", "--evaluations", "30",
                       "--reward", "soft", "--reward-exponent", "-0.2", "--option", "lr=0.01", out="rl.json")
    assert code == 0
    options = json.loads(out.read_text())["options"]
    assert options["reward"] == "soft" and options["reward_exponent"] == -0.2 and options["lr"] == 0.01
    assert options["evaluations"] == 30


@pytest.mark.parametrize("extra,needle", [
    (["--strategy", "rl", "--option", "temperature=2"], "unknown option 'temperature' for search strategy 'rl'"),
    (["--strategy", "tpe", "--option", "nonsense"], "--option: expected KEY=VALUE"),
    (["--strategy", "rl", "--reward-exponent", "steep"], "--reward-exponent: expected a finite number"),
    (["--strategy", "rl", "--reward-exponent", "nan"], "--reward-exponent: expected a finite number"),
    (["--compare", "evolution,annealing"], "--compare: expected distinct names"),
])
def test_bad_strategy_options_are_one_line_errors(files, capsys, extra, needle):
    capsys.readouterr()
    try:
        code, _ = search(files, "--latency-ms", str(files["budget"]), *extra, out="bad.json")
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (files["dir"] / "bad.json").exists()


# ---- the ensemble predictor, built by the real command, in search and --verify ----------------------

@pytest.fixture(scope="module")
def built(files, tmp_path_factory):
    """`edgenas predictor build` on the tiny checkpoint: the predictor file and its measurement log."""
    d = tmp_path_factory.mktemp("built")
    out = d / "pred.pt"
    args = ["predictor", "build", str(files["ckpt"]), "--samples", "10", "--epochs", "20", "--calib-images", "16",
            "--out", str(out)]
    assert main(args) == 0
    return {"out": out, "args": args, "log": d / "pred.pt.measured.jsonl"}


@pytest.mark.slow
def test_search_reports_the_spread_of_a_built_predictor(files, built, capsys):
    capsys.readouterr()
    code, out = search(files, "--latency-ms", str(files["budget"]), "--predictor", str(built["out"]), "--top-k", "5",
                       out="spread.json")
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["objective"] == "accuracy"
    for e in data["top"] + data["front"]:
        assert 0.0 <= e["accuracy"] <= 100.0 and 0.0 <= e["accuracy_sd"] <= 50.0
    best = data["top"][0]
    assert f"{best['accuracy']:.2f} ± {best['accuracy_sd']:.2f} pp" in printed and "over the top" in printed
    # Ranked by mean - 2 sd: the objective is the cautious value, the mean stays beside it.
    code, out = search(files, "--latency-ms", str(files["budget"]), "--predictor", str(built["out"]),
                       "--spread-penalty", "2", out="cautious.json")
    assert code == 0
    cautious = json.loads(out.read_text())
    assert cautious["objective"] == "accuracy_lower" and cautious["spread_penalty"] == 2.0
    lows = [e["accuracy_lower"] for e in cautious["top"]]
    assert lows == sorted(lows, reverse=True)
    assert all(0.0 <= e["accuracy_lower"] <= e["accuracy"] <= 100.0 for e in cautious["top"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        search(files, "--latency-ms", str(files["budget"]), "--predictor", str(built["out"]),
               "--spread-penalty", "-1", out="bad.json")
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "--spread-penalty" in err and err.count("\n") == 0


@pytest.mark.slow
def test_verify_shows_the_spread_beside_the_truth(files, built, capsys):
    capsys.readouterr()
    code, out = search(files, "--latency-ms", str(files["budget"]), "--predictor", str(built["out"]), "--verify", "2",
                       out="verify-spread.json")
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    for row, e in zip(data["verify"], data["top"]):
        assert row["predicted_sd"] == e["accuracy_sd"] and row["predicted_accuracy"] == e["accuracy"]
        assert f"accuracy predicted {e['accuracy']:.2f} ± {e['accuracy_sd']:.2f} true {row['accuracy']:.2f}" in printed


@pytest.mark.slow
def test_an_old_format_predictor_is_one_line_and_the_rebuild_reuses_the_measurements(files, built, tmp_path, capsys):
    from edgenas.validate import checksum

    # The real file, written back as format 1 (as edgenas wrote it before the ensemble).
    old = tmp_path / "pred.pt"
    data = torch.load(built["out"], weights_only=True)
    for key in ("members", "features"):
        del data[key]
    data.update(format_version=1)
    data["checksum"] = checksum(data)
    torch.save(data, old)
    log = tmp_path / "pred.pt.measured.jsonl"
    log.write_bytes(built["log"].read_bytes())
    capsys.readouterr()
    code, _ = search(files, "--latency-ms", str(files["budget"]), "--predictor", str(old), out="old.json")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert "format 1" in err and "edgenas predictor build" in err
    # Doing what it says measures nothing again, and the search then runs.
    before = log.read_bytes()
    assert main(built["args"][:-1] + [str(old)]) == 0
    assert log.read_bytes() == before
    assert AccuracyPredictor.load(old, files["space"]).members == 5
    code, _ = search(files, "--latency-ms", str(files["budget"]), "--predictor", str(old), out="old.json")
    assert code == 0
