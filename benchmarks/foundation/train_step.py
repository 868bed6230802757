"""Supernet training step: edgenas `Supernet` vs the reference OFA `OFAMobileNetV3`, side by side,
and against its limit, the same subnet materialized as a static network.

One step = set the active subnet, forward, cross-entropy, backward, SGD step. Both supernets
start from the same weights (ours converted from OFA's), see the same batches and the same
sequence of random subnets, and run in one process, in an order that rotates every round so
that a change in machine load hits all alike. The losses of the two supernets are compared too:
the steps compute the same function, so they must agree to float precision.

Each network runs in the memory format its own trainer uses: edgenas trains channels-last
(`train.channels_last: true`, the default), OFA's trainer NCHW. `ofa-cl` is OFA given
channels-last tensors too, so that the format's share of any gain is visible. `static` is the
step's limit: each round's subnet is materialized (`Supernet.materialize`, before the clock
starts) and trained as a plain network with its own SGD, in edgenas's memory format; the gap to
it is the cost of weight sharing itself (slicing, the full-size gradients).

    python benchmarks/foundation/train_step.py              # mbv3-w1.0, 160 px, batch 16, 2 threads
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import import_ofa_mbv3, ofa_lists, environment, publish, summary
from edgenas.space import Arch, load_space, sample
from edgenas.supernet import Supernet
from edgenas.supernet.convert import convert_ofa_state_dict

NETS = ("ours", "ofa", "ofa-cl", "static")
LABELS = {"ours": "edgenas `Supernet`", "ofa": "OFA `OFAMobileNetV3`", "ofa-cl": "OFA, channels-last tensors",
          "static": "the subnet as a static network (limit)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30, help="timed steps of each network")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of each network first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nchw", action="store_true", help="run edgenas (and the static limit) NCHW instead of channels-last")
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

    cl = not args.nchw  # edgenas's memory format (its trainer's default: channels-last)
    if cl:
        ours.to(memory_format=torch.channels_last)
    ofa_cl = copy.deepcopy(ofa).to(memory_format=torch.channels_last)  # the same weights, in train mode
    opt = {"ours": sgd(ours), "ofa": sgd(ofa), "ofa-cl": sgd(ofa_cl)}
    supernets = {"ours": ours, "ofa": ofa, "ofa-cl": ofa_cl}
    formats = {"ours": cl, "ofa": False, "ofa-cl": True, "static": cl}

    def step(name: str, arch: Arch, x: torch.Tensor, y: torch.Tensor, seed: int, static=None) -> tuple[float, float, float]:
        """Wall time, CPU time of the process (all threads), loss."""
        torch.manual_seed(seed)  # the same dropout mask for all
        if formats[name]:
            x = x.contiguous(memory_format=torch.channels_last)
        cpu, start = time.process_time(), time.perf_counter()
        if name == "ours":
            ours.set_active(arch)
            net = ours
        elif name == "static":
            net = static[0]
        else:
            ks, es, ds = ofa_lists(arch, space)
            net = supernets[name]
            net.set_active_subnet(ks=ks, e=es, d=ds)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        o = static[1] if name == "static" else opt[name]
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
        return time.perf_counter() - start, time.process_time() - cpu, loss.item()

    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    n = args.warmup + args.rounds
    archs = [Arch(args.resolution, a.units) for a in sample(space, rng, n)]
    times = {k: [] for k in NETS}
    cpu = {k: [] for k in NETS}
    loss_gap = []
    for i, arch in enumerate(archs):
        x = torch.randn(args.batch, 3, args.resolution, args.resolution, generator=gen)
        y = torch.randint(0, space.num_classes, (args.batch,), generator=gen)
        static = ours.materialize(arch)  # untimed: the limit is a network that exists before the step
        if cl:
            static.to(memory_format=torch.channels_last)
        static = (static.train(), sgd(static))
        order = NETS[i % len(NETS):] + NETS[:i % len(NETS)]
        result = {name: step(name, arch, x, y, seed=i, static=static) for name in order}
        loss_gap.append(abs(result["ours"][2] - result["ofa"][2]) / abs(result["ofa"][2]))
        if i >= args.warmup:
            for name in order:
                times[name].append(result[name][0])
                cpu[name].append(result[name][1])
        print(f"{i:3d} {arch}  " + "  ".join(f"{k} {result[k][0] * 1e3:7.1f} ms" for k in NETS), flush=True)

    def ratio(num: str, den: str, what=times) -> dict:
        r = np.asarray(what[num]) / np.asarray(what[den])
        return {"of_medians": float(np.median(what[num]) / np.median(what[den])), "per_round_median": float(np.median(r)),
                "p10": float(np.percentile(r, 10)), "p90": float(np.percentile(r, 90))}

    pairs = {"ofa_over_ours": ("ofa", "ours"), "ofa_cl_over_ours": ("ofa-cl", "ours"), "ours_over_static": ("ours", "static")}
    res = {
        "benchmark": "supernet training step (set active subnet, forward, cross-entropy, backward, SGD step)",
        "space": space.name, "resolution": args.resolution, "batch": args.batch, "rounds": args.rounds,
        "warmup": args.warmup, "seed": args.seed, "edgenas_memory_format": "channels_last" if cl else "nchw",
        "time": {k: summary(times[k]) for k in NETS},
        "cpu_time": {k: summary(cpu[k]) for k in NETS},
        # speed-up = OFA's time / ours (> 1: edgenas faster); overhead = ours / static (1 = no cost of sharing)
        "ratios": {k: ratio(*v) for k, v in pairs.items()},
        "cpu_ratios": {k: ratio(*v, what=cpu) for k, v in pairs.items()},
        "raw_seconds": {"archs": [str(a) for a in archs[args.warmup:]], "wall": times, "cpu": cpu},
        "relative_loss_difference": {"first_step": float(loss_gap[0]), "max": float(max(loss_gap))},
        "environment": env,
    }
    rows = "\n".join(f"| {LABELS[k]} | {'channels-last' if formats[k] else 'NCHW'} | {res['time'][k]['median_ms']:.0f} | "
                     f"{res['time'][k]['p10_ms']:.0f} | {res['time'][k]['p90_ms']:.0f} | {res['cpu_time'][k]['median_ms']:.0f} |"
                     for k in NETS)
    r, c = res["ratios"], res["cpu_ratios"]

    def line(key: str, text: str) -> str:
        return (f"| {text} | {r[key]['per_round_median']:.3f} ({r[key]['p10']:.3f}-{r[key]['p90']:.3f}) | "
                f"{r[key]['of_medians']:.3f} | {c[key]['per_round_median']:.3f} |")

    md = f"""## Supernet training step: edgenas vs reference OFA, and the static subnet

{space.name}, {args.resolution} px, batch {args.batch}, one random subnet per step (the same sequence for
all), forward + cross-entropy + backward + SGD, {torch.get_num_threads()} threads, {args.warmup} warm-up
steps then {args.rounds} timed steps each, in an order that rotates every round. Each network runs in the
memory format its trainer uses (edgenas channels-last, OFA NCHW); "OFA, channels-last" is OFA given
channels-last tensors as well. The static subnet is materialized from the supernet before each timed
step. Times in ms (wall; CPU time of the process, all threads, in the last column).

| | format | median | p10 | p90 | CPU median |
|---|---|---:|---:|---:|---:|
{rows}

| ratio (per round: median, p10-p90) | wall | wall, of medians | CPU |
|---|---:|---:|---:|
{line("ofa_over_ours", "speed-up: OFA / edgenas (goal >= 1.2)")}
{line("ofa_cl_over_ours", "speed-up: OFA channels-last / edgenas")}
{line("ours_over_static", "edgenas / static subnet (goal <= 1.15)")}

The losses of edgenas and OFA agree to a relative {loss_gap[0]:.1e} at the first step (same weights, same
function); float rounding then lets the SGD trajectories drift apart slowly ({max(loss_gap):.1e} at most).
Load average (1 min) at start: {env['load_average_at_start'][0]:.1f} (torch {env['torch']}, {env['cpu_count']} cores).
"""
    publish("train_step" if args.threads == 2 else f"train_step_{args.threads}thread", res, md)
    print(md)


if __name__ == "__main__":
    main()
