"""Two-process training on CPU (gloo): same subnets on both ranks, identical weights, rank-0 checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from edgenas.train import apply_overrides, train
from edgenas.train.checkpoint import read

REPO = Path(__file__).resolve().parents[1]

CONFIG = {
    "space": "mbv3-tiny",
    "data": {"name": "digits", "limit": 200, "val_fraction": 0.02},
    "train": {"batch_size": 16, "steps_per_epoch": 3, "val_bn_images": 32, "threads": 1, "test_at_end": False},
    "schedule": {"phases": [
        {"name": "full", "epochs": 1, "lr": 0.05, "kernel_sizes": "max", "expand_ratios": "max", "depths": "max"},
        {"name": "elastic", "epochs": 1, "lr": 0.02, "subnets_per_step": 2, "distill": "teacher"},
    ]},
}


def _worker(rank: int, world: int, init_file: str, root: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for grad_sync in ("allreduce", "ddp"):  # one spawn for both: process start-up dominates
            archs, out = [], f"{root}/{grad_sync}"
            result = train(apply_overrides(CONFIG, [f"train.grad_sync={grad_sync}"]), out,
                           on_step=lambda e: archs.append([str(a) for a in e.archs]))
            torch.save({"state": result.supernet.state_dict(), "archs": archs}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_train_identical_weights_that_the_checkpoint_holds(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for grad_sync in ("allreduce", "ddp"):
        out = tmp_path / grad_sync
        r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        assert r0["archs"] == r1["archs"] and len(r0["archs"]) == 6 and all(len(a) == 2 for a in r0["archs"][3:])
        saved = read(out / "supernet.pt")[0]["model"]
        assert r0["state"].keys() == r1["state"].keys() == saved.keys()
        for k, v in r0["state"].items():
            assert torch.equal(v, r1["state"][k]), (grad_sync, k)
            assert torch.equal(v, saved[k]), (grad_sync, k)
    # Both ways of averaging gradients train the same network (up to float rounding) ...
    a, b = (read(tmp_path / m / "supernet.pt")[0]["model"] for m in ("allreduce", "ddp"))
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4), k
    # ... and it moved away from the initial weights (so the test could fail).
    from edgenas.supernet import Supernet

    torch.manual_seed(0)
    init = Supernet(read(tmp_path / "ddp" / "supernet.pt")[1].space).state_dict()
    assert not torch.allclose(init["classifier.linear.weight"], a["classifier.linear.weight"])


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    cfg = apply_overrides(CONFIG, [])
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "edgenas", "train", str(path), "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr
    _, info = read(tmp_path / "run" / "supernet.pt")
    assert info.progress["done"] and info.metrics["last"]["phase"] == "elastic"
