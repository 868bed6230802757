"""`edgenas demo` end to end, as a user runs it, on a reduced budget (few steps, few subnets)."""
import json
import subprocess
import sys

import pytest

from conftest import DEMO_QUICK as QUICK


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(demo_run):
    out, cmd, run = demo_run["out"], demo_run["cmd"], demo_run["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["within_budget"] is True
    assert summary["measured_ms"]["onnx"] <= summary["budget_ms"]
    assert summary["accuracy"]["onnx"] is not None
    for name in ("train/supernet.pt", "train/supernet.predictor.pt", "latency_table.yaml", "search.json", "search.png",
                 "export/model.onnx", "export/model.json", "report.md"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert summary["arch"] in report and "![" in report
    # The winner is fine-tuned when the training's speed says it fits the demo's time for it.
    ft = summary["finetune"]
    if "skipped" in ft:
        assert "would take about" in ft["skipped"] and f"no: {ft['skipped']}" in report
    else:
        from edgenas.export import load_card

        card = load_card(out / "export")["finetune"]
        assert (card["accuracy_before"], card["accuracy_after"]) == (ft["accuracy_before"], ft["accuracy_after"])
        assert f"{ft['accuracy_after']:.2f} %" in report
    # A second run finds every step done and only searches, exports and measures again.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training mbv3-tiny" not in again.stderr
    if "searching again" not in run.stderr + again.stderr:  # a measurement over budget changes the pick
        assert json.loads(again.stdout)["arch"] == summary["arch"]


def test_demo_bad_override_is_one_line_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "edgenas", "demo", "--out", str(tmp_path), "--set", "train.nope=1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "nope" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("factor", [1.5, 50.0])
def test_demo_searches_again_when_the_file_measures_over_budget(tmp_path, monkeypatch, caplog, factor):
    """The first exported file 'measures' `factor` x its budget: the demo searches again under a
    target corrected by that ratio, but never below the smallest reachable latency (at 50x the
    correction is below every subnet: the demo then searches at the smallest, it does not fail)."""
    import dataclasses
    import logging

    import edgenas
    from edgenas.demo import run_demo

    real, calls = edgenas.measure_exports, []

    def first_one_slow(export, profile, budget, *args, **kwargs):
        comparisons = real(export, profile, budget, *args, **kwargs)
        calls.append(budget)
        if len(calls) == 1:
            comparisons = [dataclasses.replace(c, measured_ms=factor * budget) for c in comparisons]
        return comparisons

    monkeypatch.setattr(edgenas, "measure_exports", first_one_slow)  # the demo calls the public API
    import edgenas.demo

    monkeypatch.setattr(edgenas.demo, "FINETUNE_SECONDS", 1e9)  # whatever the load: the fine-tune runs
    overrides = [QUICK[i + 1] for i, a in enumerate(QUICK) if a == "--set"]
    with caplog.at_level(logging.INFO, logger="edgenas.demo"):
        result = run_demo(tmp_path / "demo", overrides=overrides, samples=30, formats=["onnx"], progress=False)
    assert len(calls) >= 2 and "searching again under" in caplog.text
    supernet, info = edgenas.load_supernet(tmp_path / "demo" / "train")
    table = edgenas.LatencyTable.load(tmp_path / "demo" / "latency_table.yaml")
    smallest = edgenas.metric_range(supernet.space, edgenas.latency_metric(table, "local-cpu", supernet.space),
                                    resolutions=info.trained_resolutions).minimum
    assert smallest <= result.target_ms < max(result.budget_ms / factor + 1e-3, smallest + 1e-9)
    assert result.predicted_ms <= result.target_ms + 1e-9
    # Each attempt's winner was fine-tuned (2 epochs) and the last one exported with its record.
    from edgenas.export import load_card

    ft = result.finetune
    assert ft["epochs"] == 2 and 0 <= ft["accuracy_before"] <= 100 and 0 <= ft["accuracy_after"] <= 100, ft
    card = load_card(tmp_path / "demo" / "export")
    assert card["arch"] == result.arch and card["finetune"]["accuracy_after"] == ft["accuracy_after"]
    assert 1 <= len(list((tmp_path / "demo" / "finetune").glob("*/finetuned.pt"))) <= len(calls)


@pytest.mark.slow
def test_demo_measures_every_format_against_its_own_table(demo_run, tmp_path):
    """On the demo's own run directory (a copy), with an int8 format added: the int8 file's table
    is profiled at the winner's resolution with the int8 profile, and each file is measured on its
    own profile and compared with its own table's prediction."""
    import shutil

    import yaml

    assert demo_run["run"].returncode == 0, demo_run["run"].stderr[-3000:]
    out = tmp_path / "demo"
    shutil.copytree(demo_run["out"], out)
    quick = list(QUICK)
    quick[quick.index("--formats") + 1] = "onnx,onnx-int8"
    run = subprocess.run([sys.executable, "-m", "edgenas", "demo", "--out", str(out), *quick, "--json"],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: the ONNX file measured over the budget
    summary = json.loads(run.stdout)
    assert set(summary["measured_ms"]) == {"onnx", "onnx-int8"}
    assert all(ms > 0 for ms in summary["measured_ms"].values())
    assert all(ms > 0 for ms in summary["predicted_by_format"].values())
    tables = summary["tables"]
    assert "_int8" in tables["onnx-int8"] and "_int8" not in tables["onnx"]
    header = yaml.safe_load((out / "latency_table_onnx-int8.yaml").read_text())["header"]
    resolution = int(summary["arch"].split("_")[0][1:])
    assert header["precision"] == "int8" and header["resolutions"] == [resolution]
    card = json.loads((out / "export" / "model.json").read_text())
    measured = {m["format"]: m for m in card["latency"]["measured"]}
    assert measured["onnx-int8"]["table"] == tables["onnx-int8"] and measured["onnx"]["table"] == tables["onnx"]
