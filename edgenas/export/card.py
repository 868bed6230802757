"""The model card: `model.json` beside the exported files, written atomically.

    {"format": "edgenas-model-card", "format_version": 1, "edgenas_version": "0.1.0",
     "valid": true,                        # every file passed its checks
     "arch": "r32_k3e3,k3e3_...", "space": {"name": "mbv3-tiny", "hash": "..."},
     "dataset": {"name": "digits", "num_classes": 10, "class_names": [...]},
     "input": {"resolution": 32, "channels": 3, "mean": [...], "std": [...], "preprocess": "..."},
     "macs": 1234567, "params": 123456, "peak_activation_bytes": 65536,
     "accuracy": {"fp32": 95.3, "int8": 95.0, "split": "test", "images": 360},
     "latency": {"predicted_ms": {TABLE: ms}, "tables": {TABLE: PROFILE_KEY}, "budget_ms": 10.0,
                 "measured": [{"format", "file", "device", "profile_key", "median_ms", ...}]},
     "files": {"onnx": {"file": "model.onnx", "sha256": "...", "bytes": 123, "valid": true,
                        "error": null, "layout": "NCHW", "max_abs_diff": 3e-7, "atol": 1e-4, ...},
               "tflite-int8": {..., "input": {"quantization": {"scale", "zero_point"}}, "agreement": 0.99}},
     "source": {"checkpoint": "...", "results": "...", "rank": 1},
     "finetune": null}                     # or, for a subnet fine-tuned by `edgenas finetune`:
    "finetune": {"epochs": 4, "supernet": "runs/digits/supernet.pt", "kd_ratio": 1.0, "lr": 0.01,
                 "teacher": {"what": "the supernet's largest subnet", "arch": "...", "checkpoint": null},
                 "accuracy_before": 91.2, "accuracy_after": 94.0,   # test accuracy (%), PyTorch, whole split
                 "split": "test", "images": 359, "seconds": 61.5}   # seconds of training
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

from edgenas.errors import EdgeNASError
from edgenas.io import atomic_write_json
from edgenas.validate import Invalid, echo, message, read_json, user_path, value_of

CARD_FORMAT = "edgenas-model-card"
CARD_VERSION = 1
CARD_NAME = "model.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_card(path: str | Path, card: dict[str, Any]) -> Path:
    return atomic_write_json(path, card)


def load_card(path: str | Path) -> dict[str, Any]:
    """Read and check a model card (a directory means its model.json); an EdgeNASError in the
    validator's style names the file and key of anything a reader of the card relies on."""
    path = user_path(path, "model card", EdgeNASError)
    if path.is_dir():
        path = path / CARD_NAME
    card = read_json(path, "edgenas model card (model.json)", max_bytes=16 << 20, allow_nan=True, error=EdgeNASError)
    check_card(card, str(path))
    return card


_MS = {"min": 0.0, "max": 1e9}


def check_card(card: Any, source: str) -> None:
    """The keys that `measure_exports` and deployments read: format, version, arch, space, input,
    files (each a plain file name beside the card) and latency."""
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        got = echo(card.get("format")) if isinstance(card, dict) else echo(card)
        raise EdgeNASError(message(source, "format", got, f"'{CARD_FORMAT}': it is not an edgenas model card"))
    try:
        version = value_of(int, card.get("format_version"), "format_version", {"min": 1})
        if version > CARD_VERSION:
            raise Invalid("format_version", version, f"at most {CARD_VERSION}: upgrade edgenas to read this card")
        value_of(str, card.get("arch"), "arch", {"min_len": 1, "max_len": 4000})
        space = value_of(dict, card.get("space"), "space")
        value_of(str, space.get("name"), "space.name", {"min_len": 1, "max_len": 200})
        value_of(Optional[str], space.get("hash"), "space.hash", {"max_len": 64})
        files = value_of(dict, card.get("files", {}), "files")
        for fmt, entry in files.items():
            entry = value_of(dict, entry, f"files.{fmt}")
            name = value_of(Optional[str], entry.get("file"), f"files.{fmt}.file", {"max_len": 255})
            if name is not None and (name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name):
                raise Invalid(f"files.{fmt}.file", name, "a file name beside the card (no directories)")
        latency = value_of(dict, card.get("latency") or {}, "latency")
        value_of(Optional[float], latency.get("budget_ms"), "latency.budget_ms", {"gt": 0.0, "max": 1e9})
        for key in ("predicted_ms", "tables"):
            value_of(dict, latency.get(key) or {}, f"latency.{key}")
        for name, ms in (latency.get("predicted_ms") or {}).items():
            value_of(float, ms, f"latency.predicted_ms.{name}", _MS)
        value_of(list, latency.get("measured") or [], "latency.measured")
        finetune = value_of(Optional[dict], card.get("finetune"), "finetune")
        if finetune is not None:
            value_of(int, finetune.get("epochs"), "finetune.epochs", {"min": 1, "max": 10**6})
            for key in ("accuracy_before", "accuracy_after"):
                value_of(Optional[float], finetune.get(key), f"finetune.{key}", {"min": 0.0, "max": 100.0})
            value_of(dict, finetune.get("teacher"), "finetune.teacher")
    except Invalid as exc:
        raise exc.at(source, EdgeNASError) from None
