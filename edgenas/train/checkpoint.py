"""Checkpoints: everything needed to resume a run exactly, or to use its supernet.

A run directory holds `checkpoint.pt` (rewritten atomically at every epoch and phase boundary and
when a run is stopped) and, at the end, `supernet.pt` (the final weights without optimiser state).
Both are dicts written with `torch.save` and read with `weights_only=True`:

    format, format_version, kind ("checkpoint" | "supernet" | "subnet"), edgenas_version,
    config (TrainConfig as a dict, data config included), space (dict), space_hash,
    model (supernet state dict), progress (phase, epoch, step, ...), metrics (best, last, final),
    train_state (checkpoint only: optimizer, scheduler, RNG states, teacher, partial epoch sums)

A fine-tune run (`edgenas finetune`, edgenas.train.finetune) writes the same files with two more
keys, `arch` (the subnet's arch string; `model` is then that static subnet's state dict) and
`finetune` (its record: supernet, teacher, epochs, accuracy before and after); its final file is
`finetuned.pt`, of kind "subnet".

Search, predictors and export use `load_supernet(path)`; export of a fine-tuned subnet uses
`load_subnet(path)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgenas import __version__
from edgenas.data import DataConfig
from edgenas.errors import CheckpointError, ConfigError
from edgenas.io import atomic_torch_save
from edgenas.validate import build, echo, load_torch, message, spec, user_path, verify_checksum, with_checksum
from edgenas.space import SearchSpace, load_space
from edgenas.supernet import Supernet
from edgenas.train.config import TrainConfig

FORMAT = "edgenas-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"  # the resumable checkpoint in a run directory
SUPERNET_NAME = "supernet.pt"  # the final supernet in a run directory
FINETUNED_NAME = "finetuned.pt"  # the final subnet in a fine-tune run directory


@dataclass
class CheckpointInfo:
    path: Path  # the file this came from
    kind: str  # "checkpoint" (resumable) or "supernet" (final weights only)
    config: TrainConfig  # the training config, data config included
    space: SearchSpace  # the space the weights belong to (classes adapted to the dataset)
    edgenas_version: str  # the edgenas version that wrote the file
    progress: dict[str, Any]  # phase (index), phase_name, epoch, step, global_step, done
    metrics: dict[str, Any]  # "last" and "best" validation, "final" test metrics (when known)
    arch: str | None = None  # a fine-tune run's subnet (its `model` is that static subnet); None: a supernet
    finetune: dict[str, Any] | None = None  # a fine-tune run's record (edgenas.train.finetune)

    @property
    def data(self) -> DataConfig:
        return self.config.data

    def trained(self):
        """The `PhaseSampler` of the last phase: the subnets the final weights were trained for."""
        from edgenas.train.schedule import PhaseSampler

        phases = self.config.schedule.phases
        return PhaseSampler(self.space, phases[-1], len(phases) - 1)

    @property
    def trained_resolutions(self) -> tuple[int, ...]:
        """The input resolutions the last phase trained (a Fashion-MNIST run: 24 and 28, not 32)."""
        trained = self.trained()
        return (trained.arch.resolution,) if trained.arch is not None else trained.resolutions


def payload(kind: str, config: TrainConfig, space: SearchSpace, model: torch.nn.Module, progress: dict,
            metrics: dict, train_state: dict | None = None, subnet: dict | None = None) -> dict[str, Any]:
    """The dict `save` writes; `subnet` ({"arch": ..., "finetune": {...}}) marks a fine-tune run's file."""
    out = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "edgenas_version": __version__,
        "config": config.to_dict(), "space": space.to_dict(), "space_hash": space.hash,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "progress": dict(progress), "metrics": metrics,
    }
    if train_state is not None:
        out["train_state"] = train_state
    if subnet is not None:
        out["arch"], out["finetune"] = subnet["arch"], subnet["finetune"]
    return out


def save(path: str | Path, data: dict[str, Any]) -> Path:
    """Write atomically, with a checksum of every tensor and value (checked by `read`)."""
    return atomic_torch_save(path, with_checksum(data))


RESAVE = "train it again"


@dataclass(frozen=True)
class _Progress:
    """Where a resumable checkpoint stopped (other progress records are kept but not checked)."""

    phase: int = field(metadata=spec(min=0, max=10**6))
    epoch: int = field(metadata=spec(min=0, max=10**6))
    step: int = field(metadata=spec(min=0, max=10**12))
    started: bool
    global_epoch: int = field(metadata=spec(min=0, max=10**9))
    done: bool

_KINDS = ("checkpoint", "supernet", "subnet")


def read(path: str | Path) -> tuple[dict[str, Any], CheckpointInfo]:
    """The raw checkpoint dict and its parsed info; CheckpointError if it is missing, corrupt or foreign."""
    path = user_path(path, "checkpoint", CheckpointError)
    if path.is_dir():
        for name in (SUPERNET_NAME, FINETUNED_NAME, CHECKPOINT_NAME):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: give a run directory or its supernet.pt / checkpoint.pt")
    data = load_torch(path, "edgenas checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(message(str(path), "format", echo(data.get("format")) if isinstance(data, dict) else echo(data),
                                      f"'{FORMAT}': it is not an edgenas checkpoint"))
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(message(str(path), "format_version", echo(version),
                                      f"at most {FORMAT_VERSION}: it was written by a newer edgenas "
                                      f"({echo(data.get('edgenas_version'))}); upgrade edgenas to read it"))
    verify_checksum(data, str(path), RESAVE)
    for key, tp in (("kind", str), ("config", dict), ("space", dict), ("model", dict), ("progress", dict),
                    ("metrics", dict), ("edgenas_version", str), ("space_hash", str)):
        if not isinstance(data.get(key), tp):
            got = "nothing (the key is missing)" if key not in data else echo(data[key])
            raise CheckpointError(message(str(path), key, got, f"{'a string' if tp is str else 'a mapping'}: "
                                          "the checkpoint is damaged"))
    if data["kind"] not in _KINDS:
        raise CheckpointError(message(str(path), "kind", echo(data["kind"]), "checkpoint, supernet or subnet"))
    # A fine-tune run's files carry its arch and record together; a supernet's carry neither.
    for key, other in (("arch", "finetune"), ("finetune", "arch")):
        if other in data and key not in data:
            raise CheckpointError(message(str(path), key, "nothing (the key is missing)",
                                          f"present beside '{other}' (a fine-tuned subnet's file): the checkpoint is damaged"))
    if (data["kind"] == "subnet") != ("arch" in data) and data["kind"] != "checkpoint":
        raise CheckpointError(message(str(path), "kind", echo(data["kind"]),
                                      f"{'subnet' if 'arch' in data else 'supernet'}: the checkpoint is damaged"))
    if "arch" in data:
        if not isinstance(data["arch"], str) or not 0 < len(data["arch"]) <= 4000:
            raise CheckpointError(message(str(path), "arch", echo(data["arch"]), "an arch string: the checkpoint is damaged"))
        if not isinstance(data["finetune"], dict):
            raise CheckpointError(message(str(path), "finetune", echo(data["finetune"]),
                                          "a mapping (the fine-tune's record): the checkpoint is damaged"))
    bad = next((k for k, v in data["model"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(message(str(path), f"model.{echo(bad)[1:-1]}", echo(data["model"][bad]),
                                      "a tensor: the checkpoint is damaged"))
    if data["kind"] == "checkpoint":  # resumable: the trainer reads these
        known = {k: v for k, v in data["progress"].items() if k in _Progress.__dataclass_fields__}
        build(_Progress, known, str(path), path="progress", error=CheckpointError)
        if not isinstance(data.get("train_state"), dict):
            raise CheckpointError(message(str(path), "train_state", echo(data.get("train_state")),
                                          "a mapping (optimizer, scheduler, RNG states): the checkpoint is damaged"))
    space = build(SearchSpace, data["space"], str(path), path="space", error=CheckpointError)
    try:
        config = TrainConfig.from_dict(data["config"], source=f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    info = CheckpointInfo(path, data["kind"], config, space, data["edgenas_version"], data["progress"], data["metrics"],
                          data.get("arch"), data.get("finetune"))
    if space.hash != data.get("space_hash"):
        raise CheckpointError(message(str(path), "space_hash", echo(data.get("space_hash")),
                                      f"{space.hash}, the hash of its space: the checkpoint is damaged"))
    return data, info


def check_space(info: CheckpointInfo, expected: SearchSpace | str) -> None:
    """CheckpointError unless the checkpoint belongs to `expected` (a space or preset name/path)."""
    expected = load_space(expected)
    if expected.num_classes != info.space.num_classes:  # the classifier follows the dataset
        expected = expected.replace(num_classes=info.space.num_classes)
    if expected.hash != info.space.hash:
        raise CheckpointError(
            f"{info.path} belongs to space {info.space.name} (hash {info.space.hash}), not to {expected.name} "
            f"(hash {expected.hash}); use a checkpoint trained on that space, or the space it was trained on"
        )


def load_supernet(path: str | Path, device: str | torch.device = "cpu",
                  space: SearchSpace | str | None = None) -> tuple[Supernet, CheckpointInfo]:
    """The supernet stored in `path` (a checkpoint, a supernet.pt or a run directory), in eval mode
    on `device`, and its info. With `space`, a checkpoint of another space is a CheckpointError."""
    data, info = read(path)
    if space is not None:
        check_space(info, space)
    if info.arch is not None:
        raise CheckpointError(f"{info.path} holds a fine-tuned subnet ({_short(info.arch)}), not a supernet: export it "
                              f"with `edgenas export --checkpoint {info.path}`, or give the supernet it came from")
    net = Supernet(info.space, dropout=info.config.train.dropout)
    try:
        net.load_state_dict(data["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{info.path} is damaged: its weights do not fit space {info.space.name} "
                              f"({str(exc).splitlines()[0][:200]})") from None
    return net.to(device).eval(), info


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def subnet_skeleton(space: SearchSpace, arch, dropout: float = 0.0):
    """A StaticNet of `arch` (an Arch) in `space`, with initial weights: what a subnet state dict loads into."""
    from edgenas.nn.static import StaticNet
    from edgenas.space import arch_ops

    return StaticNet(arch_ops(space, arch), arch=str(arch), space=space.name, dropout=dropout)


def load_subnet(path: str | Path, device: str | torch.device = "cpu",
                space: SearchSpace | str | None = None):
    """The fine-tuned subnet in `path` (a fine-tune run directory or its finetuned.pt) as a StaticNet
    in eval mode on `device`, with the BatchNorm statistics it was saved with, and its info
    (`info.arch`, `info.finetune`). A supernet, or a fine-tune that has not finished, is a CheckpointError."""
    from edgenas.errors import ArchError
    from edgenas.space import Arch

    data, info = read(path)
    if space is not None:
        check_space(info, space)
    if info.arch is None:
        raise CheckpointError(f"{info.path} is a supernet checkpoint, not a fine-tuned subnet: give it as --supernet "
                              "(with --arch or --from), or fine-tune a subnet of it with `edgenas finetune`")
    if info.kind != "subnet":
        raise CheckpointError(f"the fine-tune in {info.path.parent} has not finished ({info.path.name} is resumable, "
                              f"not final): continue it with `edgenas finetune --out {info.path.parent} --resume`")
    try:
        arch = Arch.parse(info.arch, info.space)
    except ArchError as exc:
        raise CheckpointError(f"{info.path} is damaged: its arch does not fit space {info.space.name} ({exc})") from None
    net = subnet_skeleton(info.space, arch, info.config.train.dropout)
    try:
        net.load_state_dict(data["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{info.path} is damaged: its weights do not fit subnet {_short(info.arch)} "
                              f"({str(exc).splitlines()[0][:200]})") from None
    return net.to(device).eval(), info
