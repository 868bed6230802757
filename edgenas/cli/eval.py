"""`edgenas eval`: test accuracy of subnets of a trained supernet, after BatchNorm recalibration.

    edgenas eval runs/digits/supernet.pt --arch largest --arch smallest
    edgenas eval runs/digits --sample 10 --seed 1 --json
    edgenas eval runs/digits --sample 10 --proxies synflow,naswot,zico --json   # zero-cost proxies too
"""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser(
        "eval",
        help="accuracy, MACs and params of subnets of a trained supernet",
        description="Evaluate subnets of a trained supernet on a split of its dataset. Each subnet is "
        "materialized and its BatchNorm statistics are re-estimated on training images first.",
    )
    add_common(p)
    p.add_argument("checkpoint", metavar="CKPT", help="supernet.pt, checkpoint.pt or a run directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", action="append", metavar="ARCH",
                       help="an arch string (r32_k3e4,...), 'largest' or 'smallest' (of the choices the "
                            "supernet's last training phase sampled); repeatable")
    which.add_argument("--sample", type=T.count(1, T.MAX_SAMPLES), metavar="N",
                       help="N random subnets (seeded by --seed) drawn from the choices the supernet's last "
                            "training phase sampled, e.g. only the resolutions it was trained at")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of --sample and of the recalibration images (default 0)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="split to evaluate (default test)")
    p.add_argument("--bn-images", type=T.count(1, T.MAX_IMAGES), default=None, metavar="N",
                   help="training images for BatchNorm recalibration (default: the config's train.bn_recal_images)")
    p.add_argument("--batch-size", type=T.batch_size, default=500, help="evaluation batch size (default 500)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=T.threads, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    add_proxy_flags(p)
    p.add_argument("--proxies", type=T.proxy_names, metavar="NAME,...",
                   help="also score each subnet with these zero-cost proxies (synflow, grad_norm, snip, naswot, zico), "
                        "on --proxy-batches seeded training batches")
    p.set_defaults(run=run)


def add_proxy_flags(p) -> None:
    """The flags of zero-cost proxies (eval --proxies, search --accuracy proxy:NAME, predictor build)."""
    from edgenas.cli import types as T

    p.add_argument("--proxy-batches", type=T.count(1, 64), default=2, metavar="N",
                   help="training batches the zero-cost proxies see (default 2)")
    p.add_argument("--proxy-batch-size", type=T.count(2, 4096), default=32, metavar="B",
                   help="images per proxy batch (default 32)")
    p.add_argument("--proxy-weights", choices=["trained", "init"], default="trained",
                   help="score subnets with the supernet's trained weights or those of a freshly initialised "
                        "supernet, seeded by --seed (default trained)")


def proxy_setup(args, supernet, dataset):
    """(the supernet whose subnets the proxies score, the seeded batches) for the proxy flags."""
    from edgenas.search.proxies import init_supernet, proxy_batches

    net = supernet if args.proxy_weights == "trained" else init_supernet(supernet.space, args.seed)
    device = next(supernet.parameters()).device
    return net.to(device), proxy_batches(dataset, args.proxy_batches, args.proxy_batch_size, args.seed)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgenas.data import load_dataset
    from edgenas.errors import ConfigError
    from edgenas.space import Arch
    from edgenas.train import evaluate_archs, load_supernet
    from edgenas.train.trainer import resolve_device
    from edgenas.train.distributed import Dist

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, Dist())
    supernet, info = load_supernet(args.checkpoint, device)
    space = supernet.space
    # The subnets the supernet was trained for: its last phase's choices (a Fashion-MNIST run trains
    # at 24 and 28 px only, though the space also offers 32).
    trained = info.trained()
    if args.sample is not None:
        if args.sample < 1:
            raise ConfigError(f"--sample must be at least 1, got {args.sample}")
        rng = np.random.default_rng(args.seed)
        archs = [trained.random(rng) for _ in range(1 if trained.arch is not None else args.sample)]
    else:
        named = {"largest": trained.largest(), "smallest": trained.smallest()}
        archs = [named[a] if a in named else Arch.parse(a, space) for a in args.arch]
    bn_images = args.bn_images or info.config.train.bn_recal_images
    if bn_images < 1:
        raise ConfigError(f"--bn-images must be at least 1, got {bn_images}")
    dataset = load_dataset(info.data)

    proxies: dict[str, dict[str, float]] = {}
    if args.proxies:
        from edgenas.search.proxies import arch_proxies

        proxy_net, batches = proxy_setup(args, supernet, dataset)

    def show(r):
        if args.proxies:
            proxies[str(r.arch)] = arch_proxies(proxy_net, r.arch, args.proxies, batches)
        if not args.json:
            extra = "".join(f"  {n} {v:.4g}" for n, v in proxies.get(str(r.arch), {}).items())
            print(f"{100 * r.accuracy:6.2f}%  {r.macs / 1e6:8.2f} M  {r.params / 1e6:6.3f} M  {r.arch}{extra}", flush=True)

    if not args.json:
        print(f"{dataset.describe()}; {args.split} split, BatchNorm recalibrated on {bn_images} training images; "
              f"trained subnets: {trained.choices()}", file=sys.stderr)
        print(f"{'acc':>7s}  {'MACs':>10s}  {'params':>8s}  arch")
    results = evaluate_archs(supernet, archs, dataset, split=args.split, bn_images=bn_images,
                             batch_size=args.batch_size, seed=args.seed, device=device, on_result=show)
    if args.json:
        doc = {"checkpoint": str(info.path), "space": space.name, "space_hash": space.hash, "dataset": dataset.name,
               "split": args.split, "bn_images": bn_images, "seed": args.seed,
               "results": [r.to_dict() | ({"proxies": proxies[str(r.arch)]} if args.proxies else {}) for r in results]}
        if args.proxies:
            doc["proxy_setup"] = {"batches": args.proxy_batches, "batch_size": args.proxy_batch_size,
                                  "weights": args.proxy_weights}
        print(json.dumps(doc, indent=2))
    return 0
