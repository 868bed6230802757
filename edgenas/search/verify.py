"""`edgenas search --verify K`: predicted against true, for the top K of a search.

Accuracy: each subnet is materialised from the supernet, its BatchNorm recalibrated on training
images, and evaluated on the validation split. Latency (with `--device PROFILE`): each subnet is
exported in the device runtime's format and measured end to end on the device.
"""
from __future__ import annotations

import logging
from typing import Any

from edgenas.search.objectives import SPREAD
from edgenas.space import Arch

log = logging.getLogger(__name__)


def verify(supernet, info, result, args, precisions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows {arch, predicted_accuracy, predicted_sd, accuracy, predicted_latency_ms: {table: ms},
    measured_latency_ms}: predicted_sd is the ensemble predictor's spread (pp; null without one).
    `precisions` ({table name: "fp32" | "int8"}) must match the --device profile's."""
    from edgenas.data import load_dataset
    from edgenas.search.measure import dataset_config
    from edgenas.train.evaluate import evaluate_archs

    space = supernet.space
    entries = result.top[:args.verify]
    archs = [Arch.parse(e["arch"], space) for e in entries]
    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    accuracies = [100.0 * r.accuracy for r in evaluate_archs(supernet, archs, dataset, split="val", seed=args.seed)]
    measured = _measure(supernet, archs, args.device, dataset, precisions or {}) if args.device else [None] * len(archs)

    rows = []
    # the predictor's accuracy (its mean, when the search ranked by a penalised one) and its spread
    name = "accuracy" if "accuracy" in entries[0] else result.accuracy_name
    print(f"verify: top {len(archs)} re-evaluated with the supernet (BN recalibrated)"
          + (f" and measured on {args.device}" if args.device else ""))
    for e, acc, ms in zip(entries, accuracies, measured):
        sd = e.get(SPREAD)
        row = {"arch": e["arch"], "predicted_accuracy": e[name], "predicted_sd": sd, "accuracy": acc,
               "predicted_latency_ms": e.get("latency_ms", {}), "measured_latency_ms": ms}
        rows.append(row)
        lat = ", ".join(f"{t} {v:.2f}" for t, v in row["predicted_latency_ms"].items())
        spread = f" ± {sd:.2f}" if sd is not None else ""
        off = f" ({(acc - e[name]) / sd:+.1f} sd)" if sd else ""
        print(f"  {e['arch']}\n    accuracy predicted {e[name]:.2f}{spread} true {acc:.2f}{off}"
              + (f"; latency predicted {lat} ms" if lat else "")
              + (f", measured {ms:.2f} ms" if ms is not None else ""))
    return rows


def _measure(supernet, archs: list[Arch], profile_path: str, dataset, precisions: dict[str, str]) -> list[float | None]:
    """Median end-to-end latency (ms) of each subnet on the device, None where it failed; written
    and measured as the profiler writes and measures whole subnets."""
    import torch

    from edgenas.device import load_profile
    from edgenas.errors import EdgeNASError
    from edgenas.latency.formats import model_format
    from edgenas.latency.int8 import ActivationSource
    from edgenas.latency.profiler import measure_networks

    profile = load_profile(profile_path)
    other = {t: p for t, p in precisions.items() if p != profile.precision}
    if other:
        table, p = next(iter(other.items()))
        raise EdgeNASError(f"--device {profile_path} measures {profile.precision} models, but latency table {table} "
                           f"is {p}: verify with a profile of the tables' precision")
    activations = None
    if profile.precision == "int8":
        images = dataset.sample_images("train", 32, torch.Generator().manual_seed(0))
        activations = ActivationSource(supernet, images, f"32 {dataset.name} training images")
    fmt = model_format(profile.runtime, profile.precision, activations)
    results = measure_networks(profile, fmt, supernet.space, archs, progress=False, desc=f"{profile.name} verify")
    out = []
    for a, r in zip(archs, results):
        if not r.ok:
            log.warning("could not measure %s on %s: %s", a, profile.name, r.error)
        out.append(r.median_ms if r.ok else None)
    return out

