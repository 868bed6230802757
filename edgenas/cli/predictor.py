"""`edgenas predictor build`: measure sampled subnets and train the accuracy predictor."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("edgenas.predictor")


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser("predictor", help="build the accuracy predictor of a supernet",
                              description="Accuracy predictor of a trained supernet (used by edgenas search).")
    add_common(p)
    sub = p.add_subparsers(dest="predictor_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build",
        help="measure sampled subnets and train the predictor",
        description="Sample subnets spread over the resolutions, measure each on the validation split after "
                    "BatchNorm recalibration (resumable: measurements are appended to a log as they arrive; run "
                    "it again to continue; under torchrun the ranks share the work), train an MLP on 80% of them "
                    "and report RMSE and Spearman correlation on the other 20%.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  edgenas predictor build runs/digits --samples 500\n"
        "  edgenas predictor build runs/digits --samples 500 --features onehot costs proxy:synflow --out zc.pt\n"
        "  torchrun --nproc_per_node 2 -m edgenas predictor build runs/fmnist --samples 2000",
    )
    add_common(b)
    b.add_argument("checkpoint", metavar="CKPT", help="supernet checkpoint")
    b.add_argument("--samples", type=T.count(5, T.MAX_SAMPLES), default=2000, metavar="N", help="subnets to measure (default 2000)")
    b.add_argument("--out", metavar="PRED", help="predictor file (default: beside CKPT, NAME.predictor.pt)")
    b.add_argument("--measurements", metavar="JSONL", help="measurement log (default: PRED.measured.jsonl)")
    b.add_argument("--seed", type=T.seed, default=0)
    b.add_argument("--calib-images", type=T.count(1, T.MAX_IMAGES), default=2000, metavar="N",
                   help="training images for BatchNorm recalibration (default 2000)")
    b.add_argument("--epochs", type=T.count(1, T.MAX_EPOCHS), default=200, help="MLP training epochs (default 200)")
    b.add_argument("--resolutions", type=T.resolution, nargs="+", metavar="R",
                   help="sample subnets at these input resolutions (default: those the supernet's last training "
                        "phase sampled, which edgenas search also keeps to)")
    b.add_argument("--features", type=T.predictor_feature, nargs="+", metavar="F",
                   help="the predictor's inputs: onehot (the genes), costs (log MACs, params, peak memory) and "
                        "proxy:NAME, a zero-cost proxy of each subnet (synflow, grad_norm, snip, naswot, zico) on "
                        "--proxy-batches seeded training batches; search then computes it for every new subnet "
                        "(default: onehot costs). Example: --features onehot costs proxy:synflow")
    from edgenas.cli.eval import add_proxy_flags

    add_proxy_flags(b)
    b.add_argument("--threads", type=T.threads, default=None,
                   help="torch CPU threads for measuring and proxies (default: torch's choice; on a busy machine 1 "
                        "can be far faster: snip on mbv3-tiny took 1.9 s a subnet at 1 thread, 20.6 s at 2, "
                        "beside two other jobs on 2 cores)")
    b.add_argument("--data", metavar="NAME", help="dataset (default: the checkpoint's)")
    b.add_argument("--data-path", metavar="DIR", help="dataset directory")
    b.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgenas.data import load_dataset
    from edgenas.errors import EdgeNASError
    from edgenas.search.measure import build_predictor, dataset_config, open_checkpoint, world
    from edgenas.progress import progress_bar
    from edgenas.search.predictor import default_predictor_path
    from edgenas.search.proxies import ProxySetup, proxy_feature
    from edgenas.space import resolution_indices

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.samples < 5:
        raise EdgeNASError("--samples must be at least 5 (the predictor is tested on 20% of them)")
    from edgenas.io import check_outputs, checkpoint_files

    out = Path(args.out) if args.out else default_predictor_path(args.checkpoint)
    log_path = Path(args.measurements) if args.measurements else out.with_name(out.name + ".measured.jsonl")
    check_outputs({"CKPT": [p for p in checkpoint_files(args.checkpoint) if p.name != "supernet.predictor.pt"],
                   "--data-path": args.data_path}, files={"--out": out, "--measurements": log_path})
    supernet, info = open_checkpoint(args.checkpoint)
    resolutions = args.resolutions or info.trained_resolutions
    resolution_indices(supernet.space, resolutions)  # a resolution the space lacks is an error now, not later
    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    rank, size = world()
    count = [0]

    def progress(arch, acc):
        count[0] += 1
        if count[0] % 50 == 0 or args.verbose:
            log.info("rank %d: measured %d (%s: %.2f%%)", rank, count[0], arch, acc)

    if rank == 0:
        log.info("measuring %d subnets of %s at %s px on %s%s", args.samples, supernet.space.name,
                 ", ".join(map(str, resolutions)), dataset.describe(), f" with {size} ranks" if size > 1 else "")
    features = list(dict.fromkeys(args.features)) if args.features else None
    setup = ProxySetup(args.proxy_batches, args.proxy_batch_size, args.seed, args.proxy_weights)
    with progress_bar(args.samples, "zero-cost proxies", unit="subnet",
                      enabled=rank == 0 and any(proxy_feature(f) for f in features or ())) as bar:
        predictor, report = build_predictor(supernet, dataset, out, samples=args.samples, seed=args.seed,
                                            measurements=log_path, bn_images=args.calib_images,
                                            epochs=args.epochs, on_result=progress, resolutions=resolutions,
                                            features=features, proxy_setup=setup, on_proxy=bar.update)
    if predictor is None:
        return 0
    print(f"predictor for {supernet.space.name} trained on {report.n_train} subnets, tested on {report.n_test}:")
    rho = "n/a (too few test subnets)" if report.spearman != report.spearman else f"{report.spearman:.3f}"
    if report.spearman_low == report.spearman_low:
        rho += f" (95% bootstrap interval {report.spearman_low:.2f} to {report.spearman_high:.2f})"
    print(f"  RMSE {report.rmse:.3f} pp, Spearman {rho} (mean accuracy {report.mean_accuracy:.2f}%)")
    print(f"  features: {' '.join(predictor.features)}")
    print(f"wrote {out}")
    return 0
