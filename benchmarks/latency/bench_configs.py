"""Does the latency table hold in every configuration users ship? One run, every configuration.

    python benchmarks/latency/bench_configs.py [--space mbv3-w1.0] [--resolutions 160 176 192 208 224]
        [--configs ort-fp32-t1 ort-fp32-t2 ort-int8-t1 tflite-fp32-t1 tflite-int8-t1]
        [--validate 100] [--exports 5] [--export-resolution 224] [--calibrate 24]

For each configuration (a device profile derived from device_profiles/local-cpu.yaml: its
warmup, runs and rounds, with the runtime, precision and threads of the configuration):

1. build the table of the space at the resolutions (`profile_device`, calibration seed 0), timed;
2. validate it on `--validate` random subnets over the resolutions (`validate_table`, seed 1, so
   the validation subnets are not the calibration subnets), with the calibration's own check of
   its measurements (repeatability between two passes, rank order, fit) beside the result;
3. export `--exports` random subnets at `--export-resolution` px in every format the profile
   runs (`FORMATS[name].write`, as `edgenas export` writes them), measure each file
   (`measure_written`, as `export --measure` does) and compare it with the table's prediction,
   also at the table's device speed: 4 of the table's calibration subnets are exported and
   measured in the same call, and their now / at-build ratio rescales the files' latency.

At the end, per runtime, the fp32 / int8 latency ratio of the same exported subnets, measured
in this run. int8 layers and files are calibrated on real images (Fashion-MNIST from
/usr/share/datasets/fashion-mnist, grey repeated to 3 channels) through a seeded random
supernet whose BatchNorm statistics are recalibrated on those images: no trained mbv3-w1.0
weights can be downloaded here, and latency does not depend on the weights' values.

Everything lands in benchmarks/latency/out/configs/ (git-ignored): tables, plots and
results.json, which records the command line and the load average around each step. Timings
are only meaningful on a quiet machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "latency" / "out" / "configs"

CONFIGS = {
    "ort-fp32-t1": {"runtime": "onnxruntime", "precision": "fp32", "threads": 1},
    "ort-fp32-t2": {"runtime": "onnxruntime", "precision": "fp32", "threads": 2},
    "ort-fp32-t2-nospin": {"runtime": "onnxruntime", "precision": "fp32", "threads": 2, "spinning": False},
    "ort-int8-t1": {"runtime": "onnxruntime", "precision": "int8", "threads": 1},
    "tflite-fp32-t1": {"runtime": "tflite", "precision": "fp32", "threads": 1},
    "tflite-int8-t1": {"runtime": "tflite", "precision": "int8", "threads": 1},
}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_profile(name: str, cfg: dict, args) -> Path:
    """A profile YAML for the configuration, written as a user would write one."""
    base = yaml.safe_load((ROOT / "device_profiles" / "local-cpu.yaml").read_text())
    base.update(name=f"bench-{name}", description=f"local CPU, {name}", runtime=cfg["runtime"],
                threads=cfg["threads"], precision=cfg["precision"])
    if cfg["runtime"] == "tflite":
        base["runtime_options"] = {"delegate": "xnnpack"}
    else:
        base["runtime_options"] = {"providers": ["CPUExecutionProvider"], "spinning": cfg.get("spinning", True)}
    if args.runs:
        base["runs"] = args.runs
    path = OUT / "profiles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def calibration_images(n: int) -> torch.Tensor:
    """n real Fashion-MNIST training images, normalised, grey repeated to 3 channels."""
    from edgenas.data import load_dataset

    data = load_dataset({"name": "idx", "path": "/usr/share/datasets/fashion-mnist"})
    images = data.sample_images("train", n, torch.Generator().manual_seed(0))
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def activation_source(space_name: str, images: torch.Tensor):
    from edgenas.latency.int8 import ActivationSource
    from edgenas.space import load_space
    from edgenas.space.arch import largest
    from edgenas.supernet import Supernet
    from edgenas.train.bn import recalibrate_bn

    space = load_space(space_name)
    torch.manual_seed(0)
    supernet = Supernet(space)
    r = max(space.resolutions)
    supernet.set_active(largest(space, r))
    recalibrate_bn(supernet, images, r, batch_size=32)
    return ActivationSource(supernet.eval(), images, f"{len(images)} Fashion-MNIST images through a seeded random "
                            "supernet with recalibrated BatchNorm")


def export_check(profile_path: Path, table_path: Path, space_name: str, archs, source, work: Path,
                 drift_refs: int = 4) -> tuple[list[dict], dict]:
    """Each subnet exported in every format the profile runs, measured as a file, against the table.

    `drift_refs` of the table's calibration subnets are exported the same way and measured in the
    same call, interleaved with the exports: their now / at-build ratio is the device's drift at
    the very moment the exported files run, so the exports can be compared at the table's speed
    (returned per format as {format: {"drift": ratio, "subnets": n}})."""
    from edgenas.device import load_profile
    from edgenas.device.runner import measure_written
    from edgenas.export.formats import FORMATS, formats_for
    from edgenas.latency import LatencyTable
    from edgenas.latency.validate import calibration_latencies, spread
    from edgenas.space import load_space
    from edgenas.supernet import Supernet

    profile = load_profile(profile_path)
    table = LatencyTable.load(table_path)
    space = load_space(space_name)
    then = dict(list(calibration_latencies(table, space).items())[:drift_refs])
    refs = [a for a in then if a not in archs]
    order = spread(archs, refs)
    if source is not None:
        supernet = source.supernet
    else:
        torch.manual_seed(0)
        supernet = Supernet(space).eval()
    rows, drifts = [], {}
    for fmt_name in formats_for(profile.runtime, profile.precision):
        fmt = FORMATS[fmt_name]
        paths = []
        for i, a in enumerate(order):
            path = work / f"{fmt_name}-{i}{fmt.suffix}"
            calib = source.images_at(a.resolution) if fmt.needs_calibration else None
            paths.append(fmt.write(supernet.materialize(a), (1, space.in_channels, a.resolution, a.resolution),
                                   path, calib_images=calib))
        results = dict(zip(order, measure_written(profile, paths, None)))
        ratios = [results[a].median_ms / then[a] for a in refs if results[a].ok]
        drifts[fmt_name] = {"drift": round(float(np.median(ratios)), 4) if ratios else None, "subnets": len(ratios)}
        for a in archs:
            r = results[a]
            pred = float(table.predict(a, space))
            rows.append({"format": fmt_name, "arch": str(a), "predicted_ms": round(pred, 4),
                         "measured_ms": round(r.median_ms, 4) if r.ok else None, "error": r.error,
                         "rel_error": round(r.median_ms / pred - 1, 4) if r.ok else None})
        for p in paths:
            p.unlink(missing_ok=True)
    return rows, drifts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[160, 176, 192, 208, 224])
    ap.add_argument("--configs", nargs="+", default=["ort-fp32-t1", "ort-fp32-t2", "ort-int8-t1",
                                                     "tflite-fp32-t1", "tflite-int8-t1"], choices=list(CONFIGS))
    ap.add_argument("--calibrate", type=int, default=24)
    ap.add_argument("--validate", type=int, default=100)
    ap.add_argument("--exports", type=int, default=5)
    ap.add_argument("--export-resolution", type=int, default=224)
    ap.add_argument("--runs", type=int, default=0, help="override the profile's runs (0: keep local-cpu's)")
    ap.add_argument("--images", type=int, default=64, help="calibration images for int8")
    ap.add_argument("--keep", action="store_true", help="resume existing tables instead of rebuilding them")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    from edgenas.latency import LatencyTable, profile_device, validate_table
    from edgenas.space import load_space, sample

    OUT.mkdir(parents=True, exist_ok=True)
    space = load_space(args.space)
    rng = np.random.default_rng([2, 13])
    export_archs = sample(space.replace(resolutions=(args.export_resolution,)), rng, args.exports)
    source = None
    record = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "load_before": load(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "configs": {}}
    results_path = OUT / "results.json"
    if results_path.exists():  # configurations run in separate runs land side by side, each with its command
        earlier = json.loads(results_path.read_text())
        record["configs"] = {k: v for k, v in earlier.get("configs", {}).items() if k not in args.configs}
    for name in args.configs:
        cfg = CONFIGS[name]
        profile_path = make_profile(name, cfg, args)
        if cfg["precision"] == "int8" and source is None:
            source = activation_source(args.space, calibration_images(args.images))
        acts = source if cfg["precision"] == "int8" else None
        table_path = OUT / f"{name}-{args.space}.yaml"
        if not args.keep:
            table_path.unlink(missing_ok=True)
        entry: dict = {"profile": str(profile_path.relative_to(ROOT)), "command": record["command"],
                       "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_before": load()}
        t0 = time.perf_counter()
        report = profile_device(profile_path, args.space, resolutions=args.resolutions, out=table_path,
                                calibrate=args.calibrate, seed=0, progress=not args.quiet, activations=acts)
        entry["table_s"] = round(time.perf_counter() - t0, 1)
        entry["phases_s"] = {k: round(v, 1) for k, v in report.phases.items()}
        entry["ops"] = report.total_ops
        entry["load_after_table"] = load()
        table = LatencyTable.load(table_path)
        cal = table.header["calibration"]
        entry["calibration"] = {k: cal.get(k) for k in ("scale", "offset_ms", "overhead_ms", "fitted_on", "check")
                                if k in cal}
        entry["calibration"].update({k: cal[k] for k in cal if k.startswith("per_type")})
        entry["reliable"] = not table.unreliable
        entry["unreliable_reasons"] = table.unreliable
        entry["device_load"] = table.header.get("device_load")  # steal and other processes, per phase
        if args.validate:
            t0 = time.perf_counter()
            v = validate_table(table_path, profile_path, args.validate, seed=1, progress=not args.quiet,
                               plot=OUT / f"{name}-{args.space}-validation.png", activations=acts)
            entry["validation"] = v.to_dict()
            # every held-out subnet as measured (at the table's device speed): the few-shot benchmark
            # (bench_fewshot.py) validates its transferred tables on these same measurements
            entry["validation_subnets"] = [{"arch": str(a), "measured_ms": round(float(m), 5),
                                            "predicted_ms": round(float(p), 5)}
                                           for a, m, p in zip(v.archs, v.compared, v.predicted)]
            entry["validation_s"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {v.summary()}", flush=True)
        if args.exports:
            rows, drifts = export_check(profile_path, table_path, args.space, export_archs, source, OUT)
            errs = [abs(r["rel_error"]) for r in rows if r["rel_error"] is not None]
            entry["exports"] = {"rows": rows, "within_10pct": round(float(np.mean([e <= 0.10 for e in errs])), 3)
                                if errs else None, "max_abs_rel_error": round(max(errs), 4) if errs else None}
            # at the table's speed: the drift of calibration subnets measured in the same call as the
            # files (the validation's drift, measured minutes before, where a format has none)
            vdrift = entry.get("validation", {}).get("drift")
            adj = []
            for r in rows:
                drift = drifts[r["format"]]["drift"] or vdrift
                if r["measured_ms"] and drift:
                    adj.append(abs(r["measured_ms"] / drift / r["predicted_ms"] - 1))
            if adj:
                entry["exports"]["drift_adjusted"] = {"drift": drifts, "validation_drift": vdrift,
                                                      "within_10pct": round(float(np.mean([e <= 0.10 for e in adj])), 3),
                                                      "max_abs_rel_error": round(max(adj), 4)}
        entry["load_after"] = load()
        record["configs"][name] = entry
        print(json.dumps({name: {k: entry[k] for k in entry if k not in ("exports", "validation_subnets")}}), flush=True)
        results_path.write_text(json.dumps(record, indent=1))
    # fp32 / int8 latency of the same exported subnets, per runtime, in this run
    ratios = {}
    for runtime, fp32, int8 in (("onnxruntime", "ort-fp32-t1", "ort-int8-t1"), ("tflite", "tflite-fp32-t1", "tflite-int8-t1")):
        a, b = record["configs"].get(fp32, {}).get("exports"), record["configs"].get(int8, {}).get("exports")
        if a and b:
            ms = {}
            for r in a["rows"] + b["rows"]:
                if r["measured_ms"] is not None:
                    ms.setdefault(r["arch"], {})[r["format"]] = r["measured_ms"]
            per = [v[f"{'onnx' if runtime == 'onnxruntime' else 'tflite'}"] / v[f"{'onnx' if runtime == 'onnxruntime' else 'tflite'}-int8"]
                   for v in ms.values() if len(v) == 2]
            ratios[runtime] = {"fp32_over_int8": [round(x, 3) for x in per],
                               "median": round(float(np.median(per)), 3) if per else None}
    record["int8_speedup"] = ratios
    record["load_after"] = load()
    results_path.write_text(json.dumps(record, indent=1))
    print(json.dumps({"int8_speedup": ratios}), flush=True)


if __name__ == "__main__":
    main()
