"""Training throughput of the full loop (data, resize, sampling, KD teacher, backward, SGD) in images/s.

    python benchmarks/train/throughput.py [--space mbv3-w1.0] [--resolution 160] [--batch-size 32]
                                          [--steps 8] [--warmup 2] [--threads 2] [--device cpu]

Three phases of one epoch each, as `edgenas train` runs them: the full network alone (OFA's first
phase), one random subnet with KD from the full network (kernel phase), and two random subnets per
step with KD (depth/expand phases). The data are the embedded digits resized to the resolution, so
nothing is downloaded; the step time does not depend on the pixels. Step times are taken by
`train(on_step=...)`; the first `--warmup` steps of each phase are dropped and the median is
reported, with the first and third quartiles. Images/s counts data images, not subnet passes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from edgenas.train import apply_overrides, train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="steps per phase, warm-up included")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()

    r = args.resolution
    phases = [
        {"name": "full", "epochs": 1, "lr": 0.01, "kernel_sizes": "max", "expand_ratios": "max", "depths": "max"},
        {"name": "kernel+kd", "epochs": 1, "lr": 0.01, "expand_ratios": "max", "depths": "max", "distill": "teacher"},
        {"name": "2 subnets+kd", "epochs": 1, "lr": 0.01, "subnets_per_step": 2, "distill": "teacher"},
    ]
    for p in phases:
        p["resolutions"] = [r]
    cfg = apply_overrides({
        "space": args.space,
        "data": {"name": "digits", "image_size": r, "val_fraction": 0.05},
        "train": {"batch_size": args.batch_size, "steps_per_epoch": args.steps, "validate": False,
                  "test_at_end": False, "threads": args.threads, "device": args.device,
                  "channels_last": args.channels_last},
        "schedule": {"phases": phases},
    }, [])
    times: dict[str, list[float]] = {}
    last = [time.perf_counter()]

    def on_step(event):  # time between consecutive steps; a phase's first includes its start-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.setdefault(event.phase.name, []).append(now - last[0])
        last[0] = now

    out = Path(tempfile.mkdtemp(prefix="edgenas-throughput-"))
    try:
        train(cfg, out / "run", progress=False, on_step=on_step)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = []
    for name, ts in times.items():
        steady = sorted(ts[args.warmup:])
        med = statistics.median(steady)
        q1, q3 = steady[len(steady) // 4], steady[(3 * len(steady)) // 4]
        rows.append({"phase": name, "steps": len(steady), "median_step_s": round(med, 4),
                     "images_per_s": round(args.batch_size / med, 2),
                     "images_per_s_q1_q3": [round(args.batch_size / q3, 2), round(args.batch_size / q1, 2)]})
    doc = {"space": args.space, "resolution": r, "batch_size": args.batch_size, "device": args.device,
           "threads": torch.get_num_threads() if args.threads is None else args.threads,
           "channels_last": args.channels_last, "cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
           "torch": torch.__version__, "phases": rows}
    print(json.dumps(doc, indent=2))
    (HERE / "out").mkdir(exist_ok=True)
    with open(HERE / "out" / "throughput.jsonl", "a") as f:
        f.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
