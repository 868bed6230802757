"""Every command that writes refuses, before any work, an output that is one of its inputs, one
that cannot be written, and a directory where a file is written (and the reverse): exit 2, one
line, and the input's bytes unchanged. The inputs are made by the real commands."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from edgenas.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--set", "train.steps_per_epoch=2", "--set", "train.validate=false", "--set", "train.bn_recal_images=64",
         "--set", "train.val_bn_images=32", "--set", "schedule.name=sandwich", "--set", "schedule.phases.0.epochs=1"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory from `edgenas train configs/digits-tiny.yaml` (two steps), its predictor from
    `edgenas predictor build` and a results file from `edgenas search`."""
    d = tmp_path_factory.mktemp("outputs")
    run_dir = d / "run"
    assert main(["train", str(REPO / "configs" / "digits-tiny.yaml"), "--out", str(run_dir), "--no-progress",
                 *QUICK]) == 0
    assert main(["predictor", "build", str(run_dir), "--samples", "5", "--epochs", "2",
                 "--calib-images", "32"]) == 0
    assert main(["search", "--supernet", str(run_dir), "--max-mflops", "100", "--population", "4",
                 "--generations", "1", "--out", str(d / "search.json")]) == 0
    return {"dir": d, "run": run_dir, "supernet": run_dir / "supernet.pt", "checkpoint": run_dir / "checkpoint.pt",
            "predictor": run_dir / "supernet.predictor.pt", "results": d / "search.json",
            "config": run_dir / "config.yaml"}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(args, capsys, *unchanged: Path, expect: str = "") -> str:
    """Run `edgenas ARGS`; it must exit 2 with one line, and leave every `unchanged` file as it was."""
    before = {p: digest(p) for p in unchanged}
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("edgenas: error: ") and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    assert {p: digest(p) for p in unchanged} == before
    return lines[0]


def search_args(run, *extra):
    return ["search", "--supernet", run["run"], "--max-mflops", "100", "--population", "4", "--generations", "1",
            *extra]


# ---- an output that is an input ------------------------------------------------------------------

def test_search_out_at_the_supernet(run, capsys):
    refused(["search", "--supernet", run["supernet"], "--predictor", run["predictor"], "--max-mflops", "100",
             "--out", run["supernet"]], capsys, run["supernet"], expect="input --supernet")


def test_search_out_at_a_file_of_the_run_directory(run, capsys):
    refused(search_args(run, "--out", run["checkpoint"]), capsys, run["checkpoint"], expect="--supernet")
    refused(search_args(run, "--out", run["dir"] / "r.json", "--plot", run["predictor"]), capsys, run["predictor"],
            expect="--plot")


def test_search_out_through_a_symlink_and_a_hard_link(run, capsys, tmp_path):
    (tmp_path / "link.pt").symlink_to(run["supernet"])
    refused(search_args(run, "--out", tmp_path / "link.pt"), capsys, run["supernet"])
    hard = run["dir"] / "hard.pt"
    hard.hardlink_to(run["supernet"])
    try:
        refused(search_args(run, "--out", run["dir"] / "r.json", "--plot", hard), capsys, run["supernet"])
    finally:
        hard.unlink()


def test_search_out_and_plot_the_same_file(run, capsys):
    refused(search_args(run, "--out", run["dir"] / "same", "--plot", run["dir"] / "same"), capsys,
            expect="both name")


def test_predictor_build_out_at_the_checkpoint(run, capsys):
    refused(["predictor", "build", run["supernet"], "--samples", "5", "--out", run["supernet"]], capsys,
            run["supernet"], expect="input CKPT")
    refused(["predictor", "build", run["run"], "--samples", "5", "--out", run["dir"] / "p.pt",
             "--measurements", run["checkpoint"]], capsys, run["checkpoint"], expect="--measurements")


def test_export_out_holding_an_input_it_would_replace(run, capsys, tmp_path):
    # export writes model.onnx and model.json into DIR: a --from file named model.json there is refused
    shutil.copy(run["results"], tmp_path / "model.json")  # the search's own output, under another name
    refused(["export", "--supernet", run["run"], "--from", tmp_path / "model.json", "--format", "onnx",
             "--out", tmp_path], capsys, tmp_path / "model.json", expect="input --from")


def test_train_config_in_the_run_directory_it_rewrites(run, capsys):
    refused(["train", run["config"], "--out", run["run"], *QUICK], capsys, run["config"], run["checkpoint"],
            expect="--resume")
    refused(["train", run["config"], "--out", run["run"], "--resume"], capsys, run["config"], run["checkpoint"],
            expect="config.yaml that train rewrites")


def test_profile_out_at_the_device_profile(run, capsys, tmp_path):
    profile = tmp_path / "local.yaml"
    shutil.copy(REPO / "device_profiles" / "local-cpu.yaml", profile)
    refused(["profile", profile, "--space", "mbv3-tiny", "--out", profile], capsys, profile, expect="input PROFILE")
    refused(["profile", profile, "--space", "mbv3-tiny", "--out", tmp_path / "t.yaml", "--validate", "2",
             "--plot", profile], capsys, profile, expect="--plot")


# ---- locations that cannot be written -------------------------------------------------------------

def test_outputs_under_a_regular_file(run, capsys):
    under = run["results"] / "x"
    refused(search_args(run, "--out", under / "r.json"), capsys, run["results"], expect="is a file, not a directory")
    refused(["export", "--supernet", run["run"], "--arch", "x", "--out", under], capsys, expect="not a directory")
    refused(["demo", "--out", under], capsys, expect="not a directory")
    refused(["predictor", "build", run["run"], "--out", under / "p.pt"], capsys, expect="not a directory")
    refused(["train", "--out", under], capsys, expect="not a directory")


def test_outputs_where_nothing_can_be_created(run, capsys):
    # os.access and chmod do not stop root; /proc refuses new files to everyone, so this is a real check
    refused(search_args(run, "--out", "/proc/edgenas-test/r.json"), capsys, expect="cannot write in /proc")
    refused(["export", "--supernet", run["run"], "--arch", "x", "--out", "/proc/edgenas-test"], capsys,
            expect="cannot write")


def test_a_directory_where_a_file_is_written_and_the_reverse(run, capsys, tmp_path):
    refused(search_args(run, "--out", tmp_path), capsys, expect="is a directory; give a file path")
    refused(["predictor", "build", run["run"], "--out", tmp_path], capsys, expect="is a directory")
    refused(["predictor", "build", run["run"], "--out", tmp_path / "p.pt", "--measurements", tmp_path], capsys,
            expect="--measurements")
    refused(["profile", "local-cpu", "--space", "mbv3-tiny", "--out", tmp_path], capsys, expect="is a directory")
    refused(["profile", "local-cpu", "--space", "mbv3-tiny", "--out-dir", run["results"]], capsys,
            expect="not a directory")
    refused(["export", "--supernet", run["run"], "--arch", "x", "--out", run["results"]], capsys, run["results"],
            expect="is a file; give a directory")
    refused(["train", "--out", run["results"]], capsys, run["results"], expect="is a file; give a directory")
    (tmp_path / "model.json").mkdir()
    refused(["export", "--supernet", run["run"], "--arch", "x", "--out", tmp_path], capsys,
            expect="is a directory, but model.json is written there")


def test_a_good_output_beside_the_inputs_still_works(run, capsys):
    """The checks refuse only what they should: a second search into the run directory is fine."""
    assert main([str(a) for a in search_args(run, "--out", run["run"] / "search.json")]) == 0
    assert (run["run"] / "search.json").is_file() and (run["run"] / "search.png").is_file()
