"""Supernet training on digits with mbv3-tiny and a handful of steps per phase.

One short progressive-shrinking run (module fixture) is shared by the tests that read its files;
the resume, NaN and distributed tests make their own runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgenas.errors import CheckpointError
from edgenas.space import largest, load_space, smallest
from edgenas.supernet import Supernet
from edgenas.train import TrainingDiverged, apply_overrides, load_supernet, train
from edgenas.train.checkpoint import read

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")

# Small everything: 200 training images, batches of 16, 2 steps per epoch, 1 epoch per phase.
TINY = {
    "space": "mbv3-tiny",
    "seed": 0,
    "data": {"name": "digits", "limit": 200, "val_fraction": 0.02},
    "train": {"batch_size": 16, "steps_per_epoch": 2, "val_bn_images": 32, "bn_recal_images": 32,
              "eval_batch_size": 400, "threads": 1},
}


def tiny(*overrides: str, epochs: int = 1, base: dict | None = None):
    cfg = apply_overrides(base or TINY, [])
    phase_epochs = [f"schedule.phases.{i}.epochs={epochs}" for i in range(len(cfg.schedule.phases))]
    warm = [f"schedule.phases.{i}.warmup_epochs=0" for i in range(len(cfg.schedule.phases))]
    return apply_overrides(cfg, phase_epochs + warm + list(overrides))


def state_of(path) -> dict[str, torch.Tensor]:
    return read(path)[0]["model"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A full progressive-shrinking run; records the subnets of every step and when channels were sorted."""
    out = tmp_path_factory.mktemp("ps") / "run"
    steps, events = [], []
    original = Supernet.sort_channels

    def sort_and_note(self):
        events.append(("sort", len(steps)))
        return original(self)

    Supernet.sort_channels = sort_and_note
    try:
        result = train(tiny("schedule.phases.3.subnets_per_step=2"), out, on_step=steps.append)
    finally:
        Supernet.sort_channels = original
    return out, result, steps, events


def test_phases_run_in_order_with_their_elastic_choices(run):
    out, result, steps, events = run
    assert result.status == "done"
    order = [s.phase.name for s in steps]
    assert order == [n for n in ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"] for _ in range(2)]
    by_phase = {}
    for s in steps:
        by_phase.setdefault(s.phase.name, []).extend(s.archs)

    def values(name):
        archs = by_phase[name]
        return ({k for a in archs for u in a.units for k, _ in u}, {e for a in archs for u in a.units for _, e in u},
                {len(u) for a in archs for u in a.units})

    assert values("full") == ({7}, {6}, {4})
    k, e, d = values("kernel")
    assert e == {6} and d == {4} and k <= {3, 5, 7} and len(k) > 1  # only the kernel varies
    k, e, d = values("depth-1")
    assert e == {6} and d <= {3, 4} and 3 in d
    assert values("depth-2")[1] == {6} and values("expand-1")[1] <= {4, 6}
    assert [len(s.archs) for s in steps] == [1] * 6 + [2] * 2 + [1] * 4
    # Channels are sorted once, after depth-2's last step and before expand-1's first.
    assert events == [("sort", order.index("expand-1"))]


def test_run_directory_holds_log_plot_config_and_supernet(run):
    out, result, _, _ = run
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["phase"] for r in epochs] == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert all(r["images_per_s"] > 0 and 0 <= r["train_acc"] <= 1 and r["val_acc_largest"] is not None for r in epochs)
    assert [r["phase"] for r in records if r["event"] == "phase"] == [r["phase"] for r in epochs]
    assert (out / "train_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = apply_overrides(__import__("yaml").safe_load((out / "config.yaml").read_text()), [])
    assert saved.to_dict() == tiny("schedule.phases.3.subnets_per_step=2").to_dict()
    net, info = load_supernet(out / "supernet.pt")
    assert info.kind == "supernet" and info.space.hash == load_space("mbv3-tiny").hash
    assert info.data.name == "digits" and info.config.train.batch_size == 16 and info.edgenas_version
    assert info.progress["done"] and 0 <= info.metrics["final"]["test_acc_largest"] <= 1
    assert info.metrics["last"]["phase"] == "expand-2" and "best" in info.metrics
    for k, v in net.state_dict().items():
        assert torch.equal(v, result.supernet.state_dict()[k].cpu()), k
    # The resumable checkpoint holds the same weights.
    ck = state_of(out / "checkpoint.pt")
    assert all(torch.equal(ck[k], v) for k, v in net.state_dict().items())


def test_existing_run_needs_resume_and_finished_run_resumes_to_done(run, tmp_path):
    out, _, _, _ = run
    with pytest.raises(CheckpointError, match="--resume"):
        train(tiny(), out)
    assert train(tiny(), out, resume=True).status == "done"  # nothing left to do
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny(), tmp_path / "empty", resume=True)


def test_corrupt_foreign_and_wrong_space_checkpoints_are_clear_errors(run, tmp_path, capsys):
    out, _, _, _ = run
    blob = (out / "checkpoint.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(blob[: len(blob) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, words in ((truncated, "corrupt"), (garbage, "corrupt"), (foreign, "not an edgenas checkpoint"),
                        (tmp_path / "missing.pt", "no checkpoint")):
        with pytest.raises(CheckpointError, match=words):
            load_supernet(path)
    with pytest.raises(CheckpointError, match=r"belongs to space mbv3-tiny .* not to mbv3-w1\.0"):
        load_supernet(out / "supernet.pt", space="mbv3-w1.0")
    # Resuming a run with a config of another space.
    run_copy = tmp_path / "copy"
    run_copy.mkdir()
    (run_copy / "checkpoint.pt").write_bytes(blob)
    with pytest.raises(CheckpointError, match="belongs to space mbv3-tiny"):
        train(tiny("space=mbv3-w1.0"), run_copy, resume=True)
    from edgenas.cli import main

    assert main(["eval", str(truncated), "--arch", "largest"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny("train.test_at_end=false", "schedule.phases=[{name: full, epochs: 1, lr: 0.05, kernel_sizes: max, "
               "expand_ratios: max, depths: max}, {name: kernel, epochs: 1, lr: 1e30, distill: teacher}]")
    with pytest.raises(TrainingDiverged, match=r"phase 'kernel'.*last good checkpoint.*schedule\.phases\.1\.lr"):
        train(cfg, tmp_path / "nan")
    data, info = read(tmp_path / "nan" / "checkpoint.pt")
    assert info.progress["phase"] == 1 and info.progress["epoch"] == 0 and info.progress["step"] == 0
    assert all(torch.isfinite(v).all() for v in data["model"].values() if v.is_floating_point())
    # Continue with a sane learning rate from the kept checkpoint.
    assert train(apply_overrides(cfg, ["schedule.phases.1.lr=0.01"]), tmp_path / "nan", resume=True).status == "done"


# ---- stop and resume ---------------------------------------------------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys, yaml
    from edgenas.train import apply_overrides, train
    cfg = apply_overrides(yaml.safe_load(open(sys.argv[1])), [])
    kill_at, seen = int(sys.argv[3]), []
    def on_step(event):
        seen.append(event)
        if len(seen) == kill_at:
            os.kill(os.getpid(), int(sys.argv[4]))
    result = train(cfg, sys.argv[2], on_step=on_step)
    sys.exit(0 if result.status == "done" else 128 + result.signal)
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [15])
def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, signum):
    # A full phase of 1 epoch and a teacher phase of 2, 3 steps each. The signal arrives in the callback after
    # step 4 (the teacher phase's first); the loop reads it at the end of step 5 and stops mid-epoch (step 2 of 3).
    cfg = apply_overrides(tiny(), ["train.steps_per_epoch=3", "train.test_at_end=false",
                                   "train.crop_padding=2", "train.flip=true",  # augmentation must resume too
                                   "schedule.phases=[{name: full, epochs: 1, lr: 0.05, kernel_sizes: max, "
                                   "expand_ratios: max, depths: max}, {name: kernel, epochs: 2, lr: 0.02, "
                                   "expand_ratios: max, depths: max, distill: teacher}]"])
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stopped = subprocess.run([sys.executable, "-c", KILLER, str(path), str(tmp_path / "a"), "4", str(signum)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert "received SIGTERM" in stopped.stderr and "--resume" in stopped.stderr
    _, info = read(tmp_path / "a" / "checkpoint.pt")
    assert (info.progress["phase"], info.progress["epoch"], info.progress["step"]) == (1, 0, 2)
    assert not (tmp_path / "a" / "supernet.pt").exists()

    resumed = subprocess.run([sys.executable, "-m", "edgenas", "train", "--out", str(tmp_path / "a"), "--resume"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    reference = train(cfg, tmp_path / "b")
    got = state_of(tmp_path / "a" / "supernet.pt")
    for k, v in reference.supernet.state_dict().items():
        assert torch.allclose(got[k].float(), v.float(), rtol=0, atol=1e-6), k
    log = [json.loads(x) for x in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in log if r["event"] == "epoch"] == [
        ("full", 1), ("kernel", 1), ("kernel", 2)]
    ref_log = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log if r["event"] == "epoch"] == pytest.approx([r["loss"] for r in ref_log if r["event"] == "epoch"])


def test_checkpoints_carry_a_checksum_checked_on_load(run, tmp_path, caplog):
    from edgenas.validate import checksum

    out, _, _, _ = run
    data = torch.load(out / "supernet.pt", weights_only=True)
    assert data["checksum"] == checksum(data)
    blob = bytearray((out / "supernet.pt").read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 4096] = bytes(b ^ 0x5A for b in blob[mid:mid + 4096])  # a few KB flipped in the middle
    (tmp_path / "flipped.pt").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_supernet(tmp_path / "flipped.pt")
    tampered = dict(data, model={k: v.clone() for k, v in data["model"].items()})
    first = next(k for k, v in tampered["model"].items() if v.is_floating_point())
    weight = tampered["model"][first]
    weight[(0,) * weight.dim()] += 1.0
    torch.save(tampered, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match=r"tampered.pt: key 'checksum': got contents that do not match it") as err:
        load_supernet(tmp_path / "tampered.pt")
    assert "weights_only" not in str(err.value)
    old = {k: v for k, v in data.items() if k != "checksum"}  # written before checksums existed
    torch.save(old, tmp_path / "old.pt")
    with caplog.at_level("WARNING", logger="edgenas"):
        load_supernet(tmp_path / "old.pt")
    assert "has no checksum" in caplog.text
    for change, words in ((lambda d: d.pop("progress"), "key 'progress': got nothing (the key is missing)"),
                          (lambda d: d.update(model=[1]), "key 'model': got a list [1]"),
                          (lambda d: d.update(kind="weights"), "key 'kind': got 'weights'"),
                          (lambda d: d["config"]["train"].update(lr=1), "key 'train.lr': got an unknown key"),
                          (lambda d: d["space"].update(depths=[2, 2]), "key 'space.depths': got a list [2, 2]"),
                          (lambda d: d["progress"].update(epoch=-1), "key 'progress.epoch': got -1"),
                          (lambda d: d["progress"].pop("step"), "key 'progress.step': got nothing"),
                          (lambda d: d.update(train_state=None), "key 'train_state': got null")):
        bad = torch.load(out / "checkpoint.pt", weights_only=True)
        change(bad)
        bad["checksum"] = checksum(bad)
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError) as err:
            load_supernet(tmp_path / "bad.pt")
        assert str(err.value).startswith(str(tmp_path / "bad.pt")) and words in str(err.value), str(err.value)
    import argparse

    torch.save({**data, "extra": argparse.Namespace(x=1)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="can run code") as err:
        load_supernet(tmp_path / "pickled.pt")
    assert "weights_only" not in str(err.value)
