"""`edgenas profile`: build a device's latency table for a search space, and check it.

    edgenas profile device_profiles/local-cpu.yaml --space mbv3-tiny
    edgenas profile device_profiles/local-cpu.yaml --space mbv3-w1.0 --resolutions 160 176 192 208 224 --validate 100
    edgenas profile pi4.yaml jetson.yaml --space mbv3-w1.0          # several devices in parallel
    edgenas profile pi4.yaml --few-shot 20 --from-table latency_tables/local-cpu_onnxruntime-cpu_t1-mbv3-w1.0.yaml

Rerunning a command measures only what its table still lacks; a few-shot command rerun with a
larger K measures only the new subnets, and a full profile of a few-shot table keeps its subnets.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("edgenas.profile")


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser(
        "profile", help="measure a device's latency lookup table for a search space",
        description="Measure every distinct layer of the space's subnets on each device (resuming a partial "
                    "table), calibrate on a few whole subnets, and optionally validate against N random "
                    "subnets measured end to end. With --few-shot K, measure only K whole subnets (chosen to "
                    "differ in make-up and size) and transfer a reference table to the device (--from-table), "
                    "or fit MACs, params and activation bytes without one.",
        epilog="examples:\n"
               "  edgenas profile device_profiles/local-cpu.yaml --space mbv3-tiny\n"
               "  edgenas profile pi4.yaml --few-shot 20 --from-table latency_tables/local-cpu_onnxruntime-cpu_t1-"
               "mbv3-w1.0.yaml --validate 50\n"
               "      a table for a new device from 20 whole subnets, the layers' relative costs taken from the\n"
               "      reference; rerun with --few-shot 40 to add 20 subnets, or without --few-shot to measure\n"
               "      the full table (the 40 subnets stay as its calibration subnets)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("profiles", metavar="PROFILE", nargs="+", help="device profile YAML (or a name in device_profiles/)")
    p.add_argument("--space", help="search space preset name or YAML file (required unless --from-table names it)")
    p.add_argument("--resolutions", type=T.resolution, nargs="+", metavar="R", help="only these input resolutions (default: all of the space's)")
    p.add_argument("--out", type=Path, help="table file (one profile only); default latency_tables/<profile key>-<space>.yaml")
    p.add_argument("--out-dir", type=Path, default=Path("latency_tables"), help="directory for default table names")
    p.add_argument("--validate", type=T.count(0, T.MAX_SAMPLES), default=0, metavar="N", help="then measure N random subnets end to end and report the accuracy (the calibration "
                        "subnets are measured again among them, to tell the table's error from the device's drift)")
    p.add_argument("--plot", type=Path, help="validation scatter plot PNG (default: beside the table)")
    p.add_argument("--fit-plot", type=Path, help="--few-shot: the fit's leave-one-out scatter plot PNG "
                                                 "(default: beside the table, .few-shot.png)")
    p.add_argument("--calibrate", type=T.count(0, T.MAX_SAMPLES), metavar="K",
                   help="whole subnets measured to calibrate the table (0: none; default 24)")
    p.add_argument("--few-shot", type=T.count(3, T.MAX_SAMPLES), metavar="K",
                   help="measure only K whole subnets and fit a few-shot table (rerun with a larger K to refine)")
    p.add_argument("--from-table", type=Path, metavar="REF",
                   help="--few-shot: the reference table (another device's, of the same space) whose layer "
                        "entries are scaled per op type to this device; without it the fit uses MACs, params and "
                        "activation bytes only")
    p.add_argument("--warmup", type=T.count(0, T.MAX_RUNS), help="untimed runs per model (default: the profile's)")
    p.add_argument("--runs", type=T.count(1, T.MAX_RUNS), help="timed runs per model (default: the profile's)")
    p.add_argument("--chunk-size", type=T.count(1, T.MAX_RUNS),
                   help="layer models uploaded and measured per agent run (with rounds > 1 their rounds "
                        "interleave; default 500)")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of the calibration, validation and few-shot subnets")
    p.add_argument("--json", action="store_true", help="print one JSON report per device on stdout")
    p.add_argument("--supernet", metavar="CKPT",
                   help="int8 profiles: the trained supernet whose layers and training images calibrate every "
                        "layer's quantization (required for precision: int8)")
    p.add_argument("--calib-images", type=T.count(1, 4096), default=32, metavar="N",
                   help="int8: training images whose activations calibrate each layer (default 32)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgenas.device import load_profile
    from edgenas.errors import EdgeNASError
    from edgenas.latency import default_table_path, profile_many, validate_table
    from edgenas.space import load_space

    if args.out is not None and len(args.profiles) > 1:
        raise EdgeNASError("--out names one table; with several profiles use --out-dir (tables are named by profile key)")
    from edgenas.io import check_outputs
    from edgenas.latency import LatencyTable

    if args.from_table is not None and args.few_shot is None:
        raise EdgeNASError("--from-table is the reference of a few-shot table: pass --few-shot K too")
    if args.few_shot is not None:
        given = [f for f, v in (("--calibrate", args.calibrate), ("--chunk-size", args.chunk_size)) if v is not None]
        if given:
            raise EdgeNASError(f"{' and '.join(given)} set how the layers of a full table are measured; a "
                               "--few-shot table measures only its K whole subnets: drop "
                               f"{'them' if len(given) > 1 else 'it'}")
    reference = LatencyTable.load(args.from_table) if args.from_table is not None else None
    if args.space is None and reference is None:
        raise EdgeNASError("--space is required (a few-shot table with --from-table takes the reference's space)")
    space = load_space(args.space) if args.space is not None else reference.space()
    if reference is not None:
        reference.space(space)  # a reference of another space is refused before anything is measured
    profiles = [load_profile(p) for p in args.profiles]
    outs = [args.out] if args.out else [default_table_path(p, space, args.out_dir) for p in profiles]
    plots = ([args.plot] if args.plot and len(profiles) == 1 else [o.with_suffix(".validation.png") for o in outs]
             ) if args.validate else []
    fit_plots = ([args.fit_plot] if args.fit_plot and len(profiles) == 1 else [o.with_suffix(".few-shot.png") for o in outs]
                 ) if args.few_shot else []
    inputs = {"PROFILE": [p for p in args.profiles if Path(p).is_file()],
              "--space": args.space if args.space and Path(args.space).is_file() else None,
              "--supernet": args.supernet, "--from-table": args.from_table}
    check_outputs(inputs, files=[("--out" if args.out else "--out-dir", o) for o in outs] + [("--plot", p) for p in plots]
                  + [("--fit-plot", p) for p in fit_plots])
    progress = not getattr(args, "quiet", False)
    activations = _activations(args, space) if any(p.precision == "int8" for p in profiles) else None
    if activations is None and args.supernet:
        log.info("--supernet is used by int8 profiles only; these are fp32")
    if args.few_shot:
        reports = _few_shot(args, profiles, space, reference, outs, fit_plots, progress, activations)
    else:
        reports = profile_many(profiles, space, outs=outs, resolutions=args.resolutions, calibrate=_or(args.calibrate, 24),
                               seed=args.seed, warmup=args.warmup, runs=args.runs, chunk_size=_or(args.chunk_size, 500),
                               progress=progress, activations=activations)
    status, errors = 0, []
    for profile, report in zip(profiles, reports):
        if isinstance(report, BaseException):
            if len(profiles) == 1:
                raise report
            errors.append(f"{profile.name}: {report}")
            continue
        out = report.to_dict()
        load = out.get("device_load")
        log.info("%s: %s: %d measured, %d reused, %d failed in %.0f s%s", profile.name, report.path, len(report.measured),
                 report.reused, len(report.failed), report.seconds,
                 f" (meanwhile steal {load['steal']:.0%}, other processes {load['other']:.0%} of the CPUs)" if load else "")
        cal = report.table.calibration
        check = (report.table.header.get("calibration") or {}).get("check") or {}
        verdict = ("unreliable" if report.table.unreliable else
                   f"checked on {check['checked_on']} subnets" if check.get("spearman") is not None else "not checked")
        per_type = (report.table.header.get("calibration") or {}).get("per_type") or {}
        model = (f"per-type scales {min(cal.type_scales.values()):.3f}-{max(cal.type_scales.values()):.3f}"
                 if cal.per_type else f"scale {cal.scale:.3f}")
        fs = report.table.header.get("few_shot")
        if fs:
            loo = fs["fit"]["leave_one_out"]
            log.info("%s: few-shot fit on %d subnets (%s, %s): %s; leave-one-out RMSE %s ms, Spearman %s, within "
                     "±10%%: %.0f%%; plot %s", profile.name, fs["k"], fs["fit"]["model"],
                     "reference " + fs["reference"]["name"] if fs.get("reference") else "no reference",
                     fs["fit"].get("decision") or per_type.get("decision"), loo["rmse_ms"], loo["spearman"],
                     100 * loo["within_10pct"], fs["fit"].get("plot"))
            if report.table.unreliable:
                log.warning("%s", f"{profile.name}: the few-shot fit is unreliable: {'; '.join(report.table.unreliable)}; "
                                  "measure more subnets (a larger --few-shot) or build the full table")
        else:
            log.info("%s: calibration: overhead %.4f ms per op, %s, offset %.3f ms (%s)%s", profile.name,
                     cal.overhead_ms, model, cal.offset_ms, verdict,
                     f"; {per_type['decision']}" if per_type.get("decision") else "")
        if report.failed:
            status = 1
            for key, err in report.failed.items():
                log.warning("%s: failed %s: %s", profile.name, key, err)
        elif args.validate:
            plot = plots[profiles.index(profile)]
            v = validate_table(report.table, profile, args.validate, seed=args.seed, plot=plot, progress=progress,
                               activations=activations)
            out["validation"] = v.to_dict()
            log.info("%s: validation: %s; plot %s", profile.name, v.summary(), v.plot)
        if args.json:
            print(json.dumps(out))
    if errors:
        for e in errors:
            print(f"edgenas: error: {e}", file=sys.stderr)
        return 2
    return status


def _or(value, default):
    return default if value is None else value


def _few_shot(args, profiles, space, reference, outs, fit_plots, progress, activations) -> list:
    """One few-shot table per profile, in turn; a device's failure is its entry in the list."""
    from edgenas.errors import EdgeNASError
    from edgenas.latency.fewshot import check_k, profile_few_shot

    from edgenas.latency.ops import resolutions_of

    res = resolutions_of(space, args.resolutions if args.resolutions or reference is None else reference.resolutions)
    check_k(space, res, args.few_shot)  # before any device is opened
    reports = []
    for profile, out, plot in zip(profiles, outs, fit_plots):
        try:
            reports.append(profile_few_shot(profile, space, args.few_shot, reference, resolutions=args.resolutions,
                                            out=out, seed=args.seed, warmup=args.warmup, runs=args.runs, plot=plot,
                                            progress=progress, activations=activations))
        except (EdgeNASError, OSError) as exc:
            if len(profiles) == 1:
                raise
            reports.append(exc)
    return reports


def _activations(args, space):
    """The trained supernet and training images that calibrate an int8 table's layers."""
    import torch

    from edgenas.data import load_dataset
    from edgenas.errors import EdgeNASError
    from edgenas.latency.int8 import ActivationSource
    from edgenas.train.checkpoint import load_supernet

    if not args.supernet:
        raise EdgeNASError("an int8 profile calibrates every layer on real activations: pass --supernet CKPT "
                           "(a trained supernet of this space; its training images are used)")
    supernet, info = load_supernet(args.supernet, "cpu", space=space)
    if info.data is None:
        raise EdgeNASError(f"checkpoint {args.supernet} does not record its data config; retrain it with a current edgenas")
    data = load_dataset(info.data)
    images = data.sample_images("train", args.calib_images, torch.Generator().manual_seed(args.seed))
    return ActivationSource(supernet, images, f"{len(images)} {data.name} training images", seed=args.seed)
