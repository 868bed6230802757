"""Export speed and int8-vs-fp32 TFLite latency for subnets of an OFA-MobileNetV3 space.

    python benchmarks/export/bench_export.py --space mbv3-w1.0 --resolution 224 --subnets 5 --out /tmp/bench-export
    python benchmarks/export/bench_export.py --kernels 3,5 --subnets 3 --skip-end-to-end --out /tmp/bench-export-k35

For each of `--subnets` random subnets (seeded) at `--resolution`:
  1. materialize it from a randomly initialised supernet and recalibrate BN on random images
     (latency does not depend on the weight values; the accuracy checks are not the point here);
  2. convert it to fp32 and int8 TFLite (64 calibration images), timing each conversion;
  3. measure both files through the device agent with each profile (same threads, warm-up, runs):
     by default XNNPACK (local-tflite.yaml) and the builtin kernels (local-tflite-builtin.yaml).
The first subnet is also exported end to end with `export_subnet` to all three formats (with
its checks on 32 images), which is the "one subnet, all formats" time.
Prints a table and writes `results.json` in `--out`.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clock:
    """Wall and CPU time of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--subnets", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kernels", default=None, help="restrict the space's kernel sizes, e.g. 3,5")
    ap.add_argument("--profile", action="append", default=None,
                    help="device profile(s) to measure with (default: local-tflite.yaml and local-tflite-builtin.yaml)")
    ap.add_argument("--out", default="/tmp/bench-export")
    ap.add_argument("--skip-end-to-end", action="store_true", help="skip the all-formats export_subnet timing")
    args = ap.parse_args()

    from edgenas.device import load_profile, measure_models
    from edgenas.export import export_subnet
    from edgenas.export.graph import deployable
    from edgenas.export.tflite_export import convert_fp32, convert_int8
    from edgenas.space import Arch, load_space, sample
    from edgenas.supernet import Supernet

    torch.manual_seed(args.seed)  # the supernet's random init (benchmark only)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space(args.space)
    if args.kernels:
        space = space.replace(kernel_sizes=tuple(int(k) for k in args.kernels.split(",")))
    here = Path(__file__).parent
    profiles = [load_profile(p) for p in (args.profile or [here / "local-tflite.yaml", here / "local-tflite-builtin.yaml"])]
    supernet = Supernet(space).eval()
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    archs = [Arch(args.resolution, a.units) for a in sample(space, rng, args.subnets)]
    images = torch.randn(96, 3, args.resolution, args.resolution, generator=gen)

    with Clock() as imp:
        import litert_torch  # noqa: F401  (a one-off ~10 s import, reported on its own)
    rows = []
    for i, arch in enumerate(archs):
        net = supernet.subnet(arch, images[:64], batch_size=32)
        module = deployable(net)
        fp32, int8 = out / f"subnet{i}.tflite", out / f"subnet{i}_int8.tflite"
        with Clock() as c32:
            convert_fp32(module, args.resolution, fp32)
        with Clock() as c8:
            convert_int8(module, args.resolution, images[:64], int8)
        row = {"arch": str(arch), "convert_fp32_s": [c32.wall, c32.cpu], "convert_int8_s": [c8.wall, c8.cpu],
               "latency": {}}
        text = []
        for profile in profiles:
            m32, m8 = measure_models(profile, [fp32, int8])
            row["latency"][profile.key()] = {
                "fp32_ms": m32.median_ms, "int8_ms": m8.median_ms, "speedup": m32.median_ms / m8.median_ms,
                "fp32_p10_p90": [m32.p10_ms, m32.p90_ms], "int8_p10_p90": [m8.p10_ms, m8.p90_ms]}
            text.append(f"{profile.name}: fp32 {m32.median_ms:.2f} ms, int8 {m8.median_ms:.2f} ms "
                        f"({m32.median_ms / m8.median_ms:.2f}x)")
        rows.append(row)
        print(f"subnet {i} {arch}: " + "; ".join(text) + f"; convert fp32 {c32.wall:.1f} s ({c32.cpu:.1f} s CPU), "
              f"int8 {c8.wall:.1f} s ({c8.cpu:.1f} s CPU)", flush=True)

    end_to_end = None
    if not args.skip_end_to_end:
        net = supernet.subnet(archs[0], images[:64], batch_size=32)
        labels = torch.zeros(32, dtype=torch.long)
        with Clock() as e2e:
            report = export_subnet(net, "onnx,tflite,tflite-int8", out / "end-to-end", images[:64],
                                   (images[64:], labels))
        end_to_end = {"wall_s": e2e.wall, "cpu_s": e2e.cpu,
                      "per_format_s": {f: r.seconds for f, r in report.results.items()}}
        print(f"one subnet to onnx, tflite, tflite-int8 with checks: {e2e.wall:.1f} s wall, {e2e.cpu:.1f} s CPU "
              f"(" + ", ".join(f"{f} {s:.1f} s" for f, s in end_to_end["per_format_s"].items()) + ")", flush=True)

    summary = {"space": args.space, "kernel_sizes": list(space.kernel_sizes), "resolution": args.resolution,
               "machine": platform.processor() or platform.machine(), "litert_import_s": [imp.wall, imp.cpu],
               "speedup": {}, "subnets": rows, "end_to_end": end_to_end}
    for profile in profiles:
        speedups = [r["latency"][profile.key()]["speedup"] for r in rows]
        summary["speedup"][profile.key()] = {"median": statistics.median(speedups), "min": min(speedups),
                                             "max": max(speedups)}
        print(f"int8 vs fp32 on {profile.key()} (threads {profile.threads}): median {statistics.median(speedups):.2f}x, "
              f"min {min(speedups):.2f}x, max {max(speedups):.2f}x over {len(rows)} subnets")
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"litert-torch import {imp.wall:.1f} s ({imp.cpu:.1f} s CPU)")


if __name__ == "__main__":
    main()
