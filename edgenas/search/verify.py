"""`edgenas search --verify K`: predicted against true, for the top K of a search.

Accuracy: each subnet is materialised from the supernet, its BatchNorm recalibrated on training
images, and evaluated on the validation split. Latency (with `--device PROFILE`): each subnet is
exported in the device runtime's format and measured end to end on the device.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from edgenas.space import Arch

log = logging.getLogger(__name__)


def verify(supernet, info, result, args) -> list[dict[str, Any]]:
    """Rows {arch, predicted_accuracy, accuracy, predicted_latency_ms: {table: ms}, measured_latency_ms}."""
    from edgenas.data import load_dataset
    from edgenas.search.measure import dataset_config
    from edgenas.train.evaluate import evaluate_archs

    space = supernet.space
    entries = result.top[:args.verify]
    archs = [Arch.parse(e["arch"], space) for e in entries]
    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    accuracies = [100.0 * r.accuracy for r in evaluate_archs(supernet, archs, dataset, split="val", seed=args.seed)]
    measured = _measure(supernet, archs, args.device) if args.device else [None] * len(archs)

    rows = []
    name = result.accuracy_name
    print(f"verify: top {len(archs)} re-evaluated with the supernet (BN recalibrated)"
          + (f" and measured on {args.device}" if args.device else ""))
    for e, acc, ms in zip(entries, accuracies, measured):
        row = {"arch": e["arch"], "predicted_accuracy": e[name], "accuracy": acc,
               "predicted_latency_ms": e.get("latency_ms", {}), "measured_latency_ms": ms}
        rows.append(row)
        lat = ", ".join(f"{t} {v:.2f}" for t, v in row["predicted_latency_ms"].items())
        print(f"  {e['arch']}\n    accuracy predicted {e[name]:.2f} true {acc:.2f}"
              + (f"; latency predicted {lat} ms" if lat else "")
              + (f", measured {ms:.2f} ms" if ms is not None else ""))
    return rows


def _measure(supernet, archs: list[Arch], profile_path: str) -> list[float | None]:
    """Median end-to-end latency (ms) of each subnet on the device, None where it failed."""
    from edgenas.device import load_profile, measure_models
    from edgenas.latency.formats import model_format

    profile = load_profile(profile_path)
    fmt = model_format(profile.runtime)
    with tempfile.TemporaryDirectory(prefix="edgenas-verify-") as tmp:
        paths = []
        for i, arch in enumerate(archs):
            net = supernet.materialize(arch).eval()
            r = arch.resolution
            paths.append(fmt.write_net(net, (1, supernet.space.in_channels, r, r), Path(tmp) / f"subnet{i}{fmt.suffix}"))
        results = measure_models(profile, paths)
    out = []
    for r in results:
        if not r.ok:
            log.warning("could not measure %s on %s: %s", r.model, profile.name, r.error)
        out.append(r.median_ms if r.ok else None)
    return out

