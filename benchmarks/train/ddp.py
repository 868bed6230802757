"""Two ways of averaging gradients over processes, timed: one flat all-reduce vs DistributedDataParallel.

    python benchmarks/train/ddp.py [--procs 2] [--steps 12] [--warmup 3] [--batch-size 32] [--space mbv3-tiny]

Each mode runs `edgenas.train.train` in `--procs` CPU processes (gloo, one thread each) on digits,
one phase with two random subnets per step and KD (the expensive case: the set of active
parameters changes every step). Reports the median step time on rank 0 after `--warmup` steps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def worker(rank: int, procs: int, init: str, cfg: dict, mode: str, out: str) -> None:
    import torch.distributed as dist

    from edgenas.train import apply_overrides, train

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=procs)
    times, last = [], [time.perf_counter()]

    def on_step(event):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    try:
        train(apply_overrides(cfg, [f"train.grad_sync={mode}"]), f"{out}/{mode}", progress=False, on_step=on_step)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(f"{out}/{mode}.json").write_text(json.dumps(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--space", default="mbv3-tiny")
    args = ap.parse_args()
    cfg = {"space": args.space, "data": {"name": "digits"},
           "train": {"batch_size": args.batch_size, "steps_per_epoch": args.steps, "threads": 1, "validate": False,
                     "test_at_end": False},
           "schedule": {"phases": [{"name": "elastic", "epochs": 1, "lr": 0.01, "subnets_per_step": 2, "distill": "teacher"}]}}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, mode in enumerate(("allreduce", "ddp", "allreduce", "ddp")):  # interleaved, twice
            mp.spawn(worker, args=(args.procs, f"{tmp}/init{i}", cfg, mode, f"{tmp}/{i}"), nprocs=args.procs)
            steady = json.loads(Path(f"{tmp}/{i}/{mode}.json").read_text())[args.warmup:]
            rows.setdefault(mode, []).extend(steady)
    doc = {"procs": args.procs, "batch_size": args.batch_size, "space": args.space, "loadavg_1m": round(os.getloadavg()[0], 2),
           **{mode: {"median_step_s": round(statistics.median(ts), 4), "steps": len(ts)} for mode, ts in rows.items()}}
    doc["ddp_over_allreduce"] = round(doc["ddp"]["median_step_s"] / doc["allreduce"]["median_step_s"], 3)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
