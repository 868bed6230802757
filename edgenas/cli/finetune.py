"""`edgenas finetune`: fine-tune one subnet of a trained supernet, distilled from its largest subnet.

    edgenas finetune --supernet runs/digits --from runs/digits/search.json --epochs 4 --out runs/ft
    edgenas finetune --supernet runs/digits --arch r32_k3e3,... --epochs 4 --out runs/ft --teacher other.pt
    edgenas finetune --out runs/ft --resume                      # continue after a stop
    torchrun --nproc_per_node 2 -m edgenas finetune --supernet runs/digits --from s.json --epochs 4 --out runs/ft
    edgenas export --checkpoint runs/ft --from runs/digits/search.json --format onnx --out deploy/
"""
from __future__ import annotations

import argparse
import signal


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a subnet of a supernet (distilled from its largest subnet) before export",
        description="Start from the subnet's weights in the supernet (BatchNorm recalibrated), train it alone on "
        "the supernet's dataset with a cosine schedule after a linear warm-up, label smoothing and distillation "
        "from the supernet's largest subnet, and test it before and after. Writes checkpoint.pt (every epoch), "
        "finetuned.pt, train_log.jsonl, train_plot.png and config.yaml to --out; `edgenas export --checkpoint "
        "OUT` exports the result with the fine-tune in its model card. SIGINT/SIGTERM stop after the current "
        "step with a checkpoint; --resume continues exactly where it stopped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  edgenas finetune --supernet runs/digits --from runs/digits/search.json --epochs 4 --out runs/ft\n"
        "  edgenas finetune --out runs/ft --resume\n"
        "  edgenas export --checkpoint runs/ft --from runs/digits/search.json --format onnx --out runs/ft/export",
    )
    add_common(p)
    p.add_argument("--supernet", metavar="CKPT", help="the supernet: a run directory, its supernet.pt or checkpoint.pt")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--arch", help="architecture string of the subnet, e.g. r32_k3e3,k3e3_...")
    which.add_argument("--from", dest="results", metavar="RESULTS", help="search results JSON (edgenas search)")
    p.add_argument("--rank", type=T.count(1, T.MAX_RANK), default=1, help="which entry of --from, 1 = best (default 1)")
    p.add_argument("--epochs", type=T.count(1, T.MAX_EPOCHS), metavar="N", help="epochs of fine-tuning")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory of the fine-tune")
    p.add_argument("--teacher", metavar="CKPT", help="distil from this checkpoint instead: a supernet of the same "
                   "space (its largest subnet teaches) or a fine-tuned subnet (default: --supernet's largest subnet)")
    p.add_argument("--lr", type=T.positive(10.0), metavar="LR",
                   help="peak learning rate (default: a tenth of the supernet's first phase)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its supernet, arch and teacher)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override train.device")
    p.add_argument("--set", metavar="KEY=VALUE", dest="overrides", action="append", default=[],
                   help="override a setting of the fine-tune's config, e.g. train.batch_size=64, "
                        "schedule.phases.0.warmup_epochs=0, train.kd_ratio=0 (no teacher) (repeatable)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgenas.errors import EdgeNASError
    from edgenas.io import check_outputs, checkpoint_files
    from edgenas.train.checkpoint import CHECKPOINT_NAME, FINETUNED_NAME
    from edgenas.train.finetune import finetune
    from edgenas.train.log import LOG_NAME, PLOT_NAME

    check_outputs({"--supernet": checkpoint_files(args.supernet), "--from": args.results,
                   "--teacher": checkpoint_files(args.teacher)},
                  dirs={"--out": (args.out, ["config.yaml", CHECKPOINT_NAME, FINETUNED_NAME, LOG_NAME, PLOT_NAME])})
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    arch, source = args.arch, None
    if args.resume:
        if args.results:
            raise EdgeNASError("--resume continues the run in --out with its own arch: leave out --from")
    elif args.results:
        if args.supernet is None:
            raise EdgeNASError("--from needs --supernet CKPT, the supernet the search ran on")
        from edgenas.search.results import read_results
        from edgenas.train.checkpoint import read

        entry = read_results(args.results, args.rank)
        info = read(args.supernet)[1]
        if entry.space_hash and entry.space_hash != info.space.hash:
            raise EdgeNASError(f"{args.results} was searched in space {entry.space_name} (hash {entry.space_hash}), "
                               f"but {args.supernet} is a {info.space.name} supernet (hash {info.space.hash})")
        arch, source = entry.arch, {"results": str(args.results), "rank": args.rank}
    result = finetune(args.supernet, arch, args.out, args.epochs, teacher=args.teacher, lr=args.lr,
                      overrides=overrides, resume=args.resume, progress=args.progress, source=source)
    if result.status == "stopped":
        return 128 + int(result.signal or signal.SIGTERM)
    before, after = result.record.get("accuracy_before"), result.record.get("accuracy_after")
    if after is not None:
        print(f"test accuracy {before:.2f}% -> {after:.2f}% after {result.record['epochs']} epoch(s) "
              f"({result.record['seconds']:.0f} s of training); {result.path}")
    return 0
