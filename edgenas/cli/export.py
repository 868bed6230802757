"""`edgenas export`: materialize a subnet, export it to ONNX / TFLite, validate, write a model card.

    edgenas export --supernet runs/tiny/supernet.pt --arch r32_k3e3,k3e3_... --format onnx --out deploy/
    edgenas export --supernet ckpt.pt --from results.json --rank 1 --format onnx,tflite,tflite-int8 \\
        --out deploy/ --measure device_profiles/local-cpu.yaml
    edgenas export --checkpoint runs/ft/finetuned.pt --from results.json --format onnx --out deploy/

A fine-tuned subnet (`edgenas finetune`) is exported with the weights and BatchNorm statistics it
was saved with (the fine-tune recalibrated them), and its model card records the fine-tune.

Exit status 0 when every file passed its check, 1 when one failed (the file is kept and marked
invalid in model.json), 2 for a usage error.
"""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

EXIT_OK, EXIT_INVALID = 0, 1


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T
    from edgenas.export import ATOL, FORMATS

    p = subparsers.add_parser(
        "export",
        help="export a subnet to ONNX / TFLite with validation and a model card",
        description="Materialize a subnet of a trained supernet, recalibrate its BatchNorm on training images, "
        "export it, check every file against PyTorch, and write model.json beside the files. "
        "Exit status 1 if a file fails its check.",
    )
    add_common(p)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--supernet", metavar="CKPT",
                       help="supernet checkpoint: a run directory, its supernet.pt or checkpoint.pt")
    model.add_argument("--checkpoint", metavar="CKPT",
                       help="a fine-tuned subnet (edgenas finetune): its run directory or finetuned.pt; --arch and "
                            "--from are optional and must name its arch (--from also gives the budget)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--arch", help="architecture string, e.g. r32_k3e3,k3e3_...")
    which.add_argument("--from", dest="results", metavar="RESULTS", help="search results JSON (edgenas search)")
    p.add_argument("--rank", type=T.count(1, T.MAX_RANK), default=1, help="which entry of --from, 1 = best (default 1)")
    p.add_argument("--format", default="onnx", help=f"comma-separated formats: {', '.join(FORMATS)} (default onnx)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--measure", metavar="PROFILE", help="measure the exported files on this device profile")
    p.add_argument("--latency-table", action="append", default=[], metavar="TABLE",
                   help="latency table for the predicted latency (repeatable)")
    p.add_argument("--budget-ms", type=T.positive(), help="latency budget to check measured latency against "
                   "(default: the budget in --from)")
    p.add_argument("--bn-images", type=T.count(1, T.MAX_IMAGES), default=2000, help="training images for BN recalibration (default 2000; a --checkpoint keeps its fine-tuned statistics)")
    p.add_argument("--calib-images", type=T.count(1, T.MAX_IMAGES), default=256, help="training images for int8 calibration (default 256)")
    p.add_argument("--eval-images", type=T.count(0, T.MAX_IMAGES), default=1000,
                   help="test images for the parity and accuracy checks (default 1000; 0 = all)")
    p.add_argument("--atol", type=T.positive(1.0), default=ATOL, help=f"float parity tolerance (default {ATOL:g})")
    p.add_argument("--threads", type=T.threads, default=1, help="runtime threads for the checks (default 1)")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of the image samples (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from edgenas.data import load_dataset
    from edgenas.errors import EdgeNASError
    from edgenas.export import ExportMetadata, check_dependencies, export_subnet, measure_exports, parse_formats
    from edgenas.export.api import first_images
    from edgenas.export.formats import FORMATS as FORMATS_BY_NAME, formats_for
    from edgenas.space import Arch

    formats = parse_formats(args.format)
    check_dependencies(formats)  # fail before the slow parts
    profile = None
    if args.measure:
        from edgenas.device import load_profile
        from edgenas.export.measure import check_measurable

        profile = load_profile(args.measure)
        check_measurable(profile, formats)
    from edgenas.export import CARD_NAME, FILE_NAMES
    from edgenas.io import check_outputs, checkpoint_files

    check_outputs({"--supernet": checkpoint_files(args.supernet), "--checkpoint": checkpoint_files(args.checkpoint),
                   "--from": args.results, "--measure": args.measure, "--latency-table": args.latency_table},
                  dirs={"--out": (args.out, [FILE_NAMES[f] for f in formats] + [CARD_NAME])})
    if args.supernet is not None and args.arch is None and args.results is None:
        raise EdgeNASError("--supernet needs the subnet to export: --arch ARCH or --from RESULTS")
    finetuned = finetune = None
    if args.checkpoint is not None:
        from edgenas.train.checkpoint import load_subnet

        finetuned, info = load_subnet(args.checkpoint)
        space, checkpoint, finetune = info.space, args.checkpoint, info.finetune
    else:
        supernet, info = _load_supernet(args.supernet)
        space, checkpoint = supernet.space, args.supernet
    source = {"checkpoint": str(checkpoint)}
    entry = None
    if args.results:
        from edgenas.search.results import read_results

        entry = read_results(args.results, args.rank)
        if entry.space_hash and entry.space_hash != space.hash:
            raise EdgeNASError(f"{args.results} was searched in space {entry.space_name} (hash {entry.space_hash}), "
                               f"but {checkpoint} is a {space.name} {'subnet' if finetuned else 'supernet'} "
                               f"(hash {space.hash})")
        arch = Arch.parse(entry.arch, space)
        source.update(results=str(args.results), rank=args.rank)
    elif args.arch is not None:
        arch = Arch.parse(args.arch, space)
    else:
        arch = Arch.parse(info.arch, space)
    if finetuned is not None:
        if str(arch) != info.arch:
            flag = f"--from {args.results} --rank {args.rank}" if args.results else "--arch"
            raise EdgeNASError(f"{flag} names {_short(str(arch))}, but {checkpoint} is a fine-tune of "
                               f"{_short(info.arch)}: export it without {flag.split()[0]}, or fine-tune that arch")
        source["finetuned"] = True

    tables = _load_tables(args.latency_table)
    for t in tables:  # a table of edgenas's predicts the files of its runtime and precision only (OFA's: any)
        wanted = formats_for(t.header.get("runtime"), t.precision)
        if t.header.get("runtime") in ("onnxruntime", "tflite") and not set(formats) & set(wanted):
            raise EdgeNASError(f"latency table {t.name} is an {t.precision} {t.header.get('runtime')} table, but "
                               f"--format {','.join(formats)} writes no such file; add --format "
                               f"{' or '.join(wanted) or 'a matching format'}, or pass a table of the precision you export")
    budget = args.budget_ms
    if budget is None and entry is not None:
        budget = entry.budget_for([getattr(t, "name", "") for t in tables])

    data = load_dataset(_data_config(info, args.supernet))
    if data.num_classes != space.num_classes:
        raise EdgeNASError(f"the checkpoint's dataset {data.name} has {data.num_classes} classes but its space "
                           f"{space.name} has {space.num_classes} outputs")
    gen = torch.Generator().manual_seed(args.seed)
    log.info("exporting %s (%s) from %s", arch, space.name, checkpoint)
    if finetuned is not None:  # its BatchNorm statistics are the fine-tune's final ones: kept as they are
        net = finetuned
        data.sample_images("train", args.bn_images, gen)  # the same calibration images as from a supernet
    else:
        net = supernet.subnet(arch, data.sample_images("train", args.bn_images, gen))
    calib = (data.sample_images("train", args.calib_images, gen)
             if any(FORMATS_BY_NAME[f].needs_calibration for f in formats) else None)
    test = first_images(data.test, args.eval_images)
    meta = ExportMetadata(
        dataset=data.name, class_names=data.class_names, mean=data.mean, std=data.std, space=space,
        latency_tables=tables, predicted_latency_ms=entry.predicted_latency_ms if entry and not tables else {},
        budget_ms=budget, source=source, finetune=finetune,
    )
    report = export_subnet(net, formats, args.out, calib, test, meta, atol=args.atol, threads=args.threads,
                           on_result=lambda r: print(r.line(), flush=True))
    card = report.card
    acc = card["accuracy"]
    if finetune is not None and finetune.get("accuracy_after") is not None:
        print(f"fine-tuned {finetune['epochs']} epoch(s): test accuracy {finetune['accuracy_before']:.2f}% -> "
              f"{finetune['accuracy_after']:.2f}% on {finetune['images']} images")
    print(f"PyTorch test accuracy {acc['fp32']:.2f}% on {acc['images']} images; "
          f"{card.get('macs', 0) / 1e6:.1f} M MACs, {card.get('params', 0) / 1e6:.3f} M params")
    for name, ms in card["latency"]["predicted_ms"].items():
        print(f"predicted latency {ms:.3f} ms ({name})")
    if profile is not None:
        for c in measure_exports(report, profile, budget_ms=budget):
            print(c.line(), flush=True)
    print(f"model card: {report.card_path}")
    if not report.valid:
        print(f"{len(report.failures)} of {len(report.results)} export(s) failed their check; "
              f"see {report.card_path}")
        return EXIT_INVALID
    return EXIT_OK


def _short(text: str, n: int = 50) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def _load_supernet(path: str):
    from edgenas.train.checkpoint import load_supernet

    return load_supernet(path, "cpu")


def _data_config(info, path: str):
    """The data config the supernet was trained on (CheckpointInfo.data)."""
    from edgenas.errors import CheckpointError

    data = getattr(info, "data", None)
    if data is None:
        raise CheckpointError(f"checkpoint {path} does not record its data config; retrain it with a current edgenas")
    return data


def _load_tables(paths: list[str]):
    if not paths:
        return []
    from edgenas.latency import LatencyTable

    return [LatencyTable.load(p) for p in paths]
