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
     "source": {"checkpoint": "...", "results": "...", "rank": 1}}
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgenas.errors import EdgeNASError
from edgenas.io import atomic_write_json

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
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgeNASError(f"cannot read the model card {path}: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise EdgeNASError(f"{path} is not an edgenas model card (no \"format\": \"{CARD_FORMAT}\")")
    return card
