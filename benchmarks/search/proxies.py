"""Zero-cost proxies against inherited accuracies: Spearman and cost per architecture.

    python benchmarks/search/proxies.py SUPERNET --samples 60 --out benchmarks/search/out/proxies.json

Samples subnets of the supernet's trained choices (seeded), measures each one's accuracy on the test
split after BatchNorm recalibration (`evaluate_archs`, the supernet's inherited weights), scores it
with every proxy on the same seeded training batches (trained weights, and those of a fresh
initialisation), and reports each proxy's Spearman rank correlation with the accuracies and its
median seconds per architecture (materialize included). One torch thread.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from edgenas.data import load_dataset
from edgenas.io import atomic_write_json
from edgenas.search.predictor import spearman
from edgenas.search.proxies import PROXIES, compute_proxy, init_supernet, proxy_batches
from edgenas.train import evaluate_archs, load_supernet
from edgenas.train.bn import resize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("supernet")
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, info = load_supernet(args.supernet)
    dataset = load_dataset(info.data)
    rng = np.random.default_rng(args.seed)
    trained = info.trained()
    archs = [trained.random(rng) for _ in range(args.samples)]
    acc = [100 * r.accuracy for r in evaluate_archs(net, archs, dataset, split="test",
                                                     bn_images=info.config.train.bn_recal_images, seed=args.seed)]
    batches = proxy_batches(dataset, 2, 32, args.seed)
    fresh = init_supernet(net.space, args.seed)
    rows = {}
    for weights, supernet in (("trained", net), ("init", fresh)):
        for name in PROXIES:
            scores, seconds = [], []
            for arch in archs:
                start = time.perf_counter()
                sub = supernet.materialize(arch)
                sized = [(resize(x, arch.resolution), y) for x, y in batches]
                scores.append(compute_proxy(name, sub, sized))
                seconds.append(time.perf_counter() - start)
            rows[f"{name}[{weights}]"] = {"spearman": spearman(np.array(scores), np.array(acc)),
                                          "median_s": float(np.median(seconds)), "scores": scores}
            print(f"{name:10s} {weights:7s} Spearman {rows[f'{name}[{weights}]']['spearman']:+.3f}  "
                  f"{np.median(seconds) * 1000:.0f} ms/arch", flush=True)
    atomic_write_json(args.out, {"supernet": args.supernet, "samples": args.samples, "seed": args.seed,
                                 "archs": [str(a) for a in archs], "test_accuracy": acc, "proxies": rows})


if __name__ == "__main__":
    main()
