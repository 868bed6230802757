"""`edgenas train`: train a once-for-all supernet.

    edgenas train configs/digits-tiny.yaml --out runs/digits
    edgenas train --out runs/digits --resume                    # continue after a stop
    edgenas train configs/x.yaml --set schedule.phases.0.epochs=2 --set train.batch_size=64
    torchrun --nproc_per_node 2 -m edgenas train configs/x.yaml --out runs/x
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common

    p = subparsers.add_parser(
        "train",
        help="train a supernet (progressive shrinking or sandwich schedule)",
        description="Train a once-for-all supernet with the schedule a config describes. Without CONFIG the "
        "defaults train mbv3-tiny on the embedded digits in a few minutes. Writes checkpoint.pt (every epoch), "
        "supernet.pt, train_log.jsonl, train_plot.png and config.yaml to the run directory. SIGINT/SIGTERM stop "
        "after the current step with a checkpoint; --resume continues exactly where it stopped.",
    )
    add_common(p)
    p.add_argument("config", metavar="CONFIG", nargs="?", help="training config YAML (default: the digits quickstart)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt (CONFIG defaults to the checkpoint's)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override train.device")
    p.add_argument("--set", metavar="KEY=VALUE", dest="overrides", action="append", default=[],
                   help="override a config value, e.g. schedule.phases.0.epochs=2 or train.batch_size=64 (repeatable)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgenas.errors import ConfigError
    from edgenas.train import apply_overrides, load_config, train
    from edgenas.train.checkpoint import CHECKPOINT_NAME, read

    out = Path(args.out) if args.out else Path("runs") / (Path(args.config).stem if args.config else "digits-tiny")
    from edgenas.io import check_outputs
    from edgenas.train.checkpoint import SUPERNET_NAME
    from edgenas.train.log import LOG_NAME, PLOT_NAME

    from edgenas.io import same_path

    if args.config is not None and same_path(Path(args.config), out / "config.yaml"):
        raise ConfigError(f"CONFIG {args.config} is the config.yaml that train rewrites in --out; continue that run "
                          "with --resume and no CONFIG (its config comes from the checkpoint), or copy the file "
                          "elsewhere to start a new run from it")
    check_outputs({"CONFIG": args.config},
                  dirs={"--out": (out, ["config.yaml", CHECKPOINT_NAME, SUPERNET_NAME, LOG_NAME, PLOT_NAME])})
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    if args.resume and args.config is None:
        if not (out / CHECKPOINT_NAME).is_file():
            raise ConfigError(f"nothing to resume in {out}: it has no {CHECKPOINT_NAME} (give --out RUN_DIR of an earlier run)")
        _, info = read(out / CHECKPOINT_NAME)
        cfg = apply_overrides(info.config, overrides, source=str(out / CHECKPOINT_NAME))
    else:
        cfg = load_config(args.config, overrides)
    result = train(cfg, out, resume=args.resume, progress=args.progress)
    if result.status == "stopped":
        return 128 + int(result.signal or signal.SIGTERM)
    return 0
