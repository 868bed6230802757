"""`edgenas eval` and `evaluate_archs`: accuracy after BN recalibration, with MACs and params."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgenas.cli import main
from edgenas.data import load_dataset
from edgenas.space import Arch, arch_cost, largest
from edgenas.train import PhaseSampler, apply_overrides, evaluate_archs, load_supernet, recalibrate_bn, train
from edgenas.train.evaluate import accuracy, calibration_images


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    cfg = apply_overrides({
        "data": {"name": "digits", "limit": 200, "val_fraction": 0.02},
        "train": {"batch_size": 16, "steps_per_epoch": 2, "val_bn_images": 32, "bn_recal_images": 64,
                  "threads": 1, "test_at_end": False},
        "schedule": {"phases": [{"name": "all", "epochs": 1, "lr": 0.05}]},
    }, [])
    train(cfg, out)
    return out


def test_eval_cli_json(run_dir, capsys):
    assert main(["eval", str(run_dir), "--sample", "2", "--seed", "3", "--bn-images", "32", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    net, info = load_supernet(run_dir)
    assert doc["space_hash"] == info.space.hash and doc["split"] == "test" and doc["bn_images"] == 32
    rng = np.random.default_rng(3)
    expected = [PhaseSampler(info.space, info.config.schedule.phases[-1]).random(rng) for _ in range(2)]
    assert [r["arch"] for r in doc["results"]] == [str(a) for a in expected]
    for r, arch in zip(doc["results"], expected):
        cost = arch_cost(info.space, arch)
        assert (r["macs"], r["params"], r["resolution"]) == (cost.macs, cost.params, arch.resolution)
        assert 0 <= r["accuracy"] <= 1 and r["images"] == 359 and r["loss"] > 0


def test_eval_cli_table_and_bad_arch(run_dir, capsys):
    assert main(["eval", str(run_dir / "supernet.pt"), "--arch", "largest", "--arch", "smallest", "--bn-images", "32",
                 "--split", "val"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["acc", "MACs", "params"] and len(lines) == 3
    assert lines[1].endswith(str(largest(load_supernet(run_dir)[0].space))) and "%" in lines[1]
    assert main(["eval", str(run_dir), "--arch", "r32_k9e6"]) == 2
    assert "arch" in capsys.readouterr().err


def test_largest_smallest_and_samples_stay_within_what_the_last_phase_trained(tmp_path, capsys):
    # A supernet trained at 24 and 28 px only (as the Fashion-MNIST config does): its 32 px
    # subnets were never trained, so eval's named and sampled subnets stay at 24-28 px.
    cfg = apply_overrides({
        "data": {"name": "digits", "limit": 120, "val_fraction": 0.05},
        "train": {"batch_size": 16, "steps_per_epoch": 1, "val_bn_images": 16, "bn_recal_images": 16,
                  "threads": 1, "test_at_end": False},
        "schedule": {"phases": [{"name": "full", "epochs": 1, "lr": 0.05, "resolutions": [24, 28],
                                 "kernel_sizes": "max", "expand_ratios": "max", "depths": "max"},
                                {"name": "shrink", "epochs": 1, "lr": 0.05, "resolutions": [24, 28]}]},
    }, [])
    train(cfg, tmp_path / "run")
    space = load_supernet(tmp_path / "run")[0].space
    assert max(space.resolutions) == 32
    assert main(["eval", str(tmp_path / "run"), "--arch", "largest", "--arch", "smallest", "--bn-images", "16",
                 "--json"]) == 0
    big, small = [Arch.parse(r["arch"], space) for r in json.loads(capsys.readouterr().out)["results"]]
    assert big == Arch(28, largest(space).units) and small.resolution == 24
    assert main(["eval", str(tmp_path / "run"), "--sample", "6", "--bn-images", "16", "--split", "val"]) == 0
    out = capsys.readouterr()
    rows = out.out.splitlines()[1:]
    assert len(rows) == 6 and {Arch.parse(r.split()[-1], space).resolution for r in rows} <= {24, 28}
    assert "trained subnets: k{3,5,7} e{3,4,6} d{2,3,4} r{24,28}" in out.err


def test_evaluate_archs_recalibrates_a_copy_and_matches_a_manual_evaluation(run_dir):
    net, info = load_supernet(run_dir)
    ds = load_dataset(info.data)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = Arch.parse("r28_k3e4,k5e6_k7e3,k3e3,k5e4_k3e6,k3e6_k5e3,k5e3,k5e3,k5e3_k7e6,k7e6", net.space)
    result = evaluate_archs(net, [arch], ds, split="val", bn_images=48, seed=5)[0]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # supernet untouched

    sub = net.materialize(arch)
    stale_loss = accuracy(sub, ds.batches("val", 100), 28)[1]
    recalibrate_bn(sub, calibration_images(ds, 48, seed=5))
    acc, loss, seen = accuracy(sub, ds.batches("val", 100), 28)
    assert (result.accuracy, seen) == (pytest.approx(acc), len(ds.val)) and result.loss == pytest.approx(loss, rel=1e-4)
    assert stale_loss != pytest.approx(loss, rel=1e-3)  # the supernet's own statistics give another answer
