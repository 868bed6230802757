"""The quickstart's training, timed: `edgenas train configs/digits-tiny.yaml` from a cold start.

    python benchmarks/train/digits.py [--threads 1|2] [--out benchmarks/train/out/digits] [--set key=value ...]

Runs the CLI in a subprocess (so interpreter start-up, imports and dataset loading count), then
prints wall time, CPU time, the phase timings and the final test accuracy of the largest and
smallest subnets, and appends one JSON line to benchmarks/train/out/digits.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "digits-tiny.yaml"))
    ap.add_argument("--out", default=str(HERE / "out" / "digits"))
    ap.add_argument("--threads", type=int, default=None, help="train.threads (default: the config's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    overrides = list(args.overrides) + ([f"train.threads={args.threads}"] if args.threads else [])
    cmd = [sys.executable, "-m", "edgenas", "train", args.config, "--out", args.out, "--no-progress"]
    for o in overrides:
        cmd += ["--set", o]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        return proc.returncode
    log = [json.loads(x) for x in (Path(args.out) / "train_log.jsonl").read_text().splitlines()]
    final = next(r for r in log if r["event"] == "final")
    phases = {r["phase"]: r["seconds"] for r in log if r["event"] == "phase"}
    load = os.getloadavg()
    row = {"config": os.path.relpath(args.config, REPO), "overrides": overrides, "wall_s": round(wall, 1),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "phase_s": phases,
           "test_acc_largest": final["test_acc_largest"], "test_acc_smallest": final["test_acc_smallest"],
           "cores": os.cpu_count(), "loadavg_1m": round(load[0], 2)}
    print(json.dumps(row, indent=2))
    with open(HERE / "out" / "digits.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
