"""Time of `Supernet.materialize(arch)`: a standalone static subnet with copied weights.

Random archs of the space (uniform per gene) and the largest one; for reference, OFA's
`get_active_subnet(preserve_weight=True)` on the same archs, interleaved with ours.
Target: median and p90 below 100 ms for mbv3-w1.0.

    python benchmarks/foundation/materialize.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import environment, import_ofa_mbv3, ofa_lists, publish, summary
from edgenas.space import largest, load_space, sample
from edgenas.supernet import Supernet

TARGET_MS = 100.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--archs", type=int, default=200, help="random archs, each materialized once")
    ap.add_argument("--largest-repeats", type=int, default=30)
    ap.add_argument("--ofa-archs", type=int, default=40, help="of the random archs, how many OFA also extracts (0: none)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()

    space = load_space(args.space)
    torch.manual_seed(args.seed)
    net = Supernet(space).eval()
    width = {"mbv3-w1.0": 1.0, "mbv3-w1.2": 1.2}.get(space.name)
    ofa = None
    if args.ofa_archs and width is not None:
        ofa = import_ofa_mbv3()(n_classes=space.num_classes, width_mult=width, ks_list=list(space.kernel_sizes),
                                expand_ratio_list=list(space.expand_ratios), depth_list=list(space.depths)).eval()

    def ours(arch) -> float:
        start = time.perf_counter()
        net.materialize(arch)
        return time.perf_counter() - start

    def reference(arch) -> float:
        ks, es, ds = ofa_lists(arch, space)
        start = time.perf_counter()
        ofa.set_active_subnet(ks=ks, e=es, d=ds)
        ofa.get_active_subnet(preserve_weight=True)
        return time.perf_counter() - start

    rng = np.random.default_rng(args.seed)
    for arch in sample(space, rng, args.warmup):
        ours(arch)
        if ofa is not None:
            reference(arch)
    archs = sample(space, rng, args.archs)
    t_random, t_ofa, t_paired = [], [], []
    for i, arch in enumerate(archs):
        if ofa is not None and i < args.ofa_archs:
            first_ours = i % 2 == 0  # alternate who goes first
            a = ours(arch) if first_ours else None
            b = reference(arch)
            a = a if first_ours else ours(arch)
            t_ofa.append(b)
            t_paired.append(a)
            t_random.append(a)
        else:
            t_random.append(ours(arch))
    big = largest(space)
    t_largest = [ours(big) for _ in range(args.largest_repeats)]

    res = {
        "benchmark": "Supernet.materialize(arch)", "space": space.name, "archs": args.archs, "seed": args.seed,
        "random": summary(t_random), "largest": summary(t_largest), "target_ms": TARGET_MS,
        "environment": env,
    }
    if t_ofa:
        res["ofa_get_active_subnet"] = summary(t_ofa)
        res["paired_ours"] = summary(t_paired)
        res["ratio_of_medians_ours_over_ofa"] = float(np.median(t_paired) / np.median(t_ofa))
    r, l = res["random"], res["largest"]
    ok = max(r["median_ms"], r["p90_ms"], l["median_ms"], l["p90_ms"]) < TARGET_MS
    md = f"""## `Supernet.materialize(arch)`

{space.name}, {torch.get_num_threads()} threads, {args.warmup} warm-up calls; each of {args.archs} random archs
materialized once, the largest arch {args.largest_repeats} times. Times in ms (target: below {TARGET_MS:.0f}).

| | n | median | p90 | max |
|---|---:|---:|---:|---:|
| random archs | {r['n']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['max_ms']:.1f} |
| largest arch | {l['n']} | {l['median_ms']:.1f} | {l['p90_ms']:.1f} | {l['max_ms']:.1f} |
"""
    if t_ofa:
        o = res["ofa_get_active_subnet"]
        md += (f"| OFA `get_active_subnet` (first {o['n']} random archs) | {o['n']} | {o['median_ms']:.1f} | "
               f"{o['p90_ms']:.1f} | {o['max_ms']:.1f} |\n\nOn those {o['n']} archs, interleaved: ours / OFA = "
               f"{res['ratio_of_medians_ours_over_ofa']:.3f} (ratio of medians).\n")
    md += f"\nTarget met: {'yes' if ok else 'NO'}. Load average at start: {res['environment']['load_average_at_start'][0]:.1f}.\n"
    publish("materialize" if args.threads == 2 else f"materialize_{args.threads}thread", res, md)
    print(md)


if __name__ == "__main__":
    main()
