"""Supernet training step: edgenas `Supernet` vs the reference OFA `OFAMobileNetV3`, side by side.

One step = set the active subnet, forward, cross-entropy, backward, SGD step. Both networks
start from the same weights (ours converted from OFA's), see the same batches and the same
sequence of random subnets, and run in one process, alternating (ours first on even rounds,
OFA first on odd ones) so that a change in machine load hits both alike. The losses of the two
are compared too: the steps compute the same function, so they must agree to float precision.

    python benchmarks/foundation/train_step.py              # mbv3-w1.0, 160 px, batch 16, 2 threads
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import import_ofa_mbv3, ofa_lists, environment, publish, summary
from edgenas.space import Arch, load_space, sample
from edgenas.supernet import Supernet
from edgenas.supernet.convert import convert_ofa_state_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30, help="timed steps of each network")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of each network first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()

    space = load_space(args.space)
    width = {"mbv3-w1.0": 1.0, "mbv3-w1.2": 1.2}[space.name]
    torch.manual_seed(args.seed)
    ofa = import_ofa_mbv3()(n_classes=space.num_classes, width_mult=width, ks_list=list(space.kernel_sizes),
                            expand_ratio_list=list(space.expand_ratios), depth_list=list(space.depths))
    ours = Supernet(space)
    ours.load_state_dict(convert_ofa_state_dict(ofa.state_dict(), space))
    ofa.train(), ours.train()

    def sgd(net):  # OFA's defaults: momentum 0.9, Nesterov, weight decay 3e-5
        return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=3e-5)

    opt = {"ours": sgd(ours), "ofa": sgd(ofa)}

    def step(name: str, arch: Arch, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, float, float]:
        """Wall time, CPU time of the process (all threads), loss."""
        torch.manual_seed(seed)  # the same dropout mask for both
        cpu, start = time.process_time(), time.perf_counter()
        if name == "ours":
            ours.set_active(arch)
            logits = ours(x)
        else:
            ks, es, ds = ofa_lists(arch, space)
            ofa.set_active_subnet(ks=ks, e=es, d=ds)
            logits = ofa(x)
        loss = F.cross_entropy(logits, y)
        opt[name].zero_grad(set_to_none=True)
        loss.backward()
        opt[name].step()
        return time.perf_counter() - start, time.process_time() - cpu, loss.item()

    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    n = args.warmup + args.rounds
    archs = [Arch(args.resolution, a.units) for a in sample(space, rng, n)]
    times = {"ours": [], "ofa": []}
    cpu = {"ours": [], "ofa": []}
    loss_gap = []
    for i, arch in enumerate(archs):
        x = torch.randn(args.batch, 3, args.resolution, args.resolution, generator=gen)
        y = torch.randint(0, space.num_classes, (args.batch,), generator=gen)
        order = ("ours", "ofa") if i % 2 == 0 else ("ofa", "ours")
        result = {name: step(name, arch, x, y, seed=i) for name in order}
        loss_gap.append(abs(result["ours"][2] - result["ofa"][2]) / abs(result["ofa"][2]))
        if i >= args.warmup:
            for name in order:
                times[name].append(result[name][0])
                cpu[name].append(result[name][1])
        print(f"{i:3d} {arch}  ours {result['ours'][0] * 1e3:7.1f} ms  ofa {result['ofa'][0] * 1e3:7.1f} ms", flush=True)

    ratios = np.asarray(times["ours"]) / np.asarray(times["ofa"])
    cpu_ratios = np.asarray(cpu["ours"]) / np.asarray(cpu["ofa"])
    res = {
        "benchmark": "supernet training step (set active subnet, forward, cross-entropy, backward, SGD step)",
        "space": space.name, "resolution": args.resolution, "batch": args.batch, "rounds": args.rounds,
        "warmup": args.warmup, "seed": args.seed,
        "ours": summary(times["ours"]), "ofa": summary(times["ofa"]),
        "ratio_of_medians_ours_over_ofa": float(np.median(times["ours"]) / np.median(times["ofa"])),
        "per_round_ratio": {"median": float(np.median(ratios)), "p10": float(np.percentile(ratios, 10)),
                            "p90": float(np.percentile(ratios, 90))},
        "cpu_time": {"ours": summary(cpu["ours"]), "ofa": summary(cpu["ofa"]),
                     "ratio_of_medians_ours_over_ofa": float(np.median(cpu["ours"]) / np.median(cpu["ofa"])),
                     "per_round_ratio": {"median": float(np.median(cpu_ratios)), "p10": float(np.percentile(cpu_ratios, 10)),
                                         "p90": float(np.percentile(cpu_ratios, 90))}},
        "raw_seconds": {"archs": [str(a) for a in archs[args.warmup:]], "wall": times, "cpu": cpu},
        "relative_loss_difference": {"first_step": float(loss_gap[0]), "max": float(max(loss_gap))},
        "environment": env,
    }
    o, r = res["ours"], res["ofa"]
    md = f"""## Supernet training step: edgenas vs reference OFA

{space.name}, {args.resolution} px, batch {args.batch}, one random subnet per step (the same sequence for
both), forward + cross-entropy + backward + SGD, {torch.get_num_threads()} threads, {args.warmup} warm-up
steps then {args.rounds} timed steps each, alternating which network goes first. Times in ms.

| | median | p10 | p90 |
|---|---:|---:|---:|
| edgenas `Supernet` | {o['median_ms']:.0f} | {o['p10_ms']:.0f} | {o['p90_ms']:.0f} |
| OFA `OFAMobileNetV3` | {r['median_ms']:.0f} | {r['p10_ms']:.0f} | {r['p90_ms']:.0f} |

Ratio ours / OFA: {res['ratio_of_medians_ours_over_ofa']:.3f} (ratio of medians); per-step ratio median
{res['per_round_ratio']['median']:.3f} (p10 {res['per_round_ratio']['p10']:.3f}, p90 {res['per_round_ratio']['p90']:.3f}).
Below 1 means edgenas is faster. CPU time of the process (all threads) per step, less disturbed by
other jobs than wall time: median ours {res['cpu_time']['ours']['median_ms']:.0f} ms, OFA {res['cpu_time']['ofa']['median_ms']:.0f} ms, ratio of medians
{res['cpu_time']['ratio_of_medians_ours_over_ofa']:.3f}; per-step ratio median {res['cpu_time']['per_round_ratio']['median']:.3f} (p10 {res['cpu_time']['per_round_ratio']['p10']:.3f}, p90 {res['cpu_time']['per_round_ratio']['p90']:.3f}).
The losses of the two networks agree to a relative {loss_gap[0]:.1e} at the first step (same weights, same
function); float rounding then lets the SGD trajectories drift apart slowly ({max(loss_gap):.1e} at most).
Load average (1 min) at start: {env['load_average_at_start'][0]:.1f} (torch {env['torch']}, {env['cpu_count']} cores).
"""
    publish("train_step" if args.threads == 2 else f"train_step_{args.threads}thread", res, md)
    print(md)


if __name__ == "__main__":
    main()
