"""`edgenas eval`: test accuracy of subnets of a trained supernet, after BatchNorm recalibration.

    edgenas eval runs/digits/supernet.pt --arch largest --arch smallest
    edgenas eval runs/digits --sample 10 --seed 1 --json
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
    p.set_defaults(run=run)


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

    def show(r):
        if not args.json:
            print(f"{100 * r.accuracy:6.2f}%  {r.macs / 1e6:8.2f} M  {r.params / 1e6:6.3f} M  {r.arch}", flush=True)

    if not args.json:
        print(f"{dataset.describe()}; {args.split} split, BatchNorm recalibrated on {bn_images} training images; "
              f"trained subnets: {trained.choices()}", file=sys.stderr)
        print(f"{'acc':>7s}  {'MACs':>10s}  {'params':>8s}  arch")
    results = evaluate_archs(supernet, archs, dataset, split=args.split, bn_images=bn_images,
                             batch_size=args.batch_size, seed=args.seed, device=device, on_result=show)
    if args.json:
        doc = {"checkpoint": str(info.path), "space": space.name, "space_hash": space.hash, "dataset": dataset.name,
               "split": args.split, "bn_images": bn_images, "seed": args.seed, "results": [r.to_dict() for r in results]}
        print(json.dumps(doc, indent=2))
    return 0
