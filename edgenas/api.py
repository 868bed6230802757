"""The few wrappers the top-level API (`import edgenas`) adds over the library; each is one call into it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def train_supernet(config: Any = None, out: str | Path = "runs/train", *, overrides: Sequence[str] = (),
                   resume: bool = False, progress: bool | None = None):
    """Train a supernet into the run directory `out` and return the `TrainResult`.

    `config` is a training config YAML path, a `TrainConfig`, or None for the embedded default
    (mbv3-tiny on the bundled digits); `overrides` are `edgenas train --set KEY=VALUE` items,
    e.g. ``["train.steps_per_epoch=3"]`` for a short schedule. `resume` continues from
    `out/checkpoint.pt`. Load the result with `edgenas.load_supernet(out)`.
    """
    from edgenas.train.config import TrainConfig, apply_overrides, load_config
    from edgenas.train.trainer import train

    if isinstance(config, TrainConfig):
        cfg = apply_overrides(config, list(overrides)) if overrides else config
    else:
        cfg = load_config(config, list(overrides))
    return train(cfg, out, resume=resume, progress=progress)
