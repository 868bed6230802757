"""`edgenas demo`: train, profile, search, export and measure on the embedded digits, no device needed."""
from __future__ import annotations

import argparse

from edgenas.cli import add_common
from edgenas.cli import types as T


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the whole path on the bundled digits (about 8 minutes on 2 CPU cores with --formats onnx; "
                "the TFLite tables of the default formats add about 13)",
        description="Train a mbv3-tiny supernet on the bundled handwritten digits, profile this machine's CPU, "
                    "search the best subnet under a latency budget, export it and measure it. Rerunning with the "
                    "same --out resumes where it stopped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  edgenas demo\n  edgenas demo --out runs/demo2 --set schedule.phases.0.epochs=2",
    )
    add_common(parser)
    parser.add_argument("--out", default="runs/demo", metavar="RUN_DIR", help="run directory (default runs/demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override, as in `edgenas train --set` (repeatable)")
    parser.add_argument("--samples", type=T.count(5, T.MAX_SAMPLES), default=300, metavar="N",
                        help="subnets measured for the accuracy predictor (default 300)")
    parser.add_argument("--formats", default=None, metavar="LIST",
                        help="export formats, comma separated (default onnx,tflite,tflite-int8 when litert-torch is installed); "
                             "each is measured on this CPU against a latency table of its runtime and precision")
    parser.add_argument("--seed", type=T.seed, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    import json

    from edgenas.demo import run_demo, summary_table

    from edgenas.io import check_outputs

    check_outputs({}, dirs={"--out": (args.out, [])})
    formats = args.formats.split(",") if args.formats else None
    result = run_demo(args.out, overrides=args.set, samples=args.samples,
                      formats=formats, seed=args.seed, progress=None)
    if args.json:
        data = {k: v for k, v in vars(result).items() if k not in ("out_dir", "report")}
        data.update(out_dir=str(result.out_dir), report=str(result.report), within_budget=result.within_budget)
        print(json.dumps(data, indent=2))
    else:
        print(summary_table(result))
        print(f"report: {result.report}")
    return 0 if result.within_budget else 1
