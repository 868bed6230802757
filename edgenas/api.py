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


def finetune_subnet(supernet: str | Path, arch: Any, out: str | Path = "runs/finetune", *, epochs: int = 4,
                    teacher: str | Path | None = None, lr: float | None = None, overrides: Sequence[str] = (),
                    resume: bool = False, progress: bool | None = None):
    """Fine-tune `arch` (an Arch or its string) of the supernet checkpoint `supernet` into `out`,
    distilled from the supernet's largest subnet (or `teacher`), and return the `FinetuneResult`
    (`.record` holds the accuracy before and after). `overrides` are `edgenas finetune --set`
    items. Load the subnet with `edgenas.load_subnet(out)`; export it with `export_subnet(net, ...,
    metadata={"finetune": info.finetune})` so that its model card records the fine-tune. With
    `resume`, pass None for `supernet` and `arch`: the run in `out` continues."""
    from edgenas.train.finetune import finetune

    return finetune(supernet, arch, out, None if resume else epochs, teacher=teacher, lr=lr,
                    overrides=list(overrides), resume=resume, progress=progress)
