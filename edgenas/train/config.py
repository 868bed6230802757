"""Training configuration as data: `TrainConfig`, read from YAML, overridable with `--set key=value`.

    space: mbv3-tiny                 # preset name or space YAML path
    data: {name: digits}             # an edgenas.data.DataConfig
    train: {batch_size: 64, ...}     # TrainSettings: optimiser, losses, evaluation, device
    schedule:                        # the phases, in order (default: progressive shrinking)
      name: progressive-shrinking
      phases:
        - {name: full, epochs: 4, lr: 0.05, kernel_sizes: max, expand_ratios: max, depths: max}
        - ...

Every key is type-checked and unknown keys are rejected with a ConfigError naming the key and the
file. A schedule is a list of phases; each phase says which elastic choices it samples from, how
many subnets it trains per step, how they are picked (random or sandwich) and how they are
distilled. Progressive shrinking and the sandwich rule are two such lists (`SCHEDULES`).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import yaml

from edgenas.data import DataConfig
from edgenas.errors import ConfigError
from edgenas.validate import Invalid, _known_key, build, echo, loads_yaml, mapping_of, message, read_yaml, spec, user_path

# A phase's elastic choice for one dimension: "all" the space's values, "max" or "min" only, "topN"
# (the N largest, e.g. depths top2 = {4, 3} in a {2, 3, 4} space), or an explicit list of values.
Choice = Union[str, list[Union[int, float]]]
_CHOICE = spec(min_len=1, max_len=64, each=spec(gt=0, max=4096),
               doc="all, max, min, topN or a non-empty list of positive values")
_CHOICE_WORD = re.compile(r"all|max|min|top[1-9][0-9]{0,3}")
_INT = dict(min=1, max=10**9)


@dataclass
class PhaseConfig:
    name: str = field(metadata=spec(min_len=1, max_len=100))  # shown in logs, the plot and checkpoints
    epochs: int = field(metadata=spec(min=1, max=100_000))  # epochs over the training split
    # peak learning rate (reached after warm-up, then cosine decay to 0 within the phase)
    lr: float = field(metadata=spec(gt=0))
    warmup_epochs: float = field(default=0.0, metadata=spec(min=0, max=100_000))  # linear warm-up from ~0 to `lr` over this many epochs
    subnets_per_step: int = field(default=1, metadata=spec(min=1, max=64))  # subnets whose gradients are summed before each optimiser step
    kernel_sizes: Choice = field(default="all", metadata=_CHOICE)  # depthwise kernel sizes this phase samples (see `Choice`)
    expand_ratios: Choice = field(default="all", metadata=_CHOICE)  # expand ratios this phase samples
    depths: Choice = field(default="all", metadata=_CHOICE)  # unit depths this phase samples
    resolutions: Choice = field(default="all", metadata=_CHOICE)  # input resolutions this phase samples (the batch is resized)
    sampler: Literal["random", "sandwich"] = "random"  # sandwich: largest + smallest + random subnets
    distill: Literal["none", "teacher", "inplace"] = "none"  # teacher: KD from the full network as it
    # was when the first teacher phase started; inplace: the step's first subnet teaches the others
    sort_channels: bool = False  # reorder channels by importance when the phase starts
    arch: Union[str, None] = field(default=None, metadata=spec(max_len=2000))  # train only this subnet (an arch string), e.g. to train it from scratch

    def __post_init__(self) -> None:
        for key in ("kernel_sizes", "expand_ratios", "depths", "resolutions"):
            value = getattr(self, key)
            if isinstance(value, str) and not _CHOICE_WORD.fullmatch(value):
                raise Invalid(key, value, _CHOICE["edgenas_spec"]["doc"])
        if self.warmup_epochs > self.epochs:
            raise Invalid("warmup_epochs", self.warmup_epochs, f"a number from 0 to the phase's {self.epochs} epochs")
        if self.sampler == "sandwich" and self.subnets_per_step < 2:
            raise Invalid("subnets_per_step", self.subnets_per_step,
                          "at least 2 for the sandwich sampler (largest and smallest)")
        if self.distill == "inplace" and self.subnets_per_step < 2:
            raise Invalid("subnets_per_step", self.subnets_per_step,
                          "at least 2 for in-place distillation (a teacher and a student)")


@dataclass
class ScheduleConfig:
    # a preset from SCHEDULES; fills `phases` when the file has none
    name: str = field(default="progressive-shrinking", metadata=spec(max_len=100))
    # the phases, run in order (null or absent: the preset's; an empty list is an error)
    phases: Optional[list[PhaseConfig]] = field(default=None, metadata=spec(min_len=1, max_len=1000))

    def __post_init__(self) -> None:
        if self.phases is None:
            if self.name not in SCHEDULES:
                raise Invalid("name", self.name, f"one of {', '.join(SCHEDULES)}, or a list under 'phases'")
            self.phases = default_phases(self.name)
        names = [p.name for p in self.phases]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise Invalid(f"phases.{i}.name", n, "a phase name not used by another phase")


@dataclass
class TrainSettings:
    batch_size: int = field(default=32, metadata=spec(**_INT))  # images per step over all processes (each of N processes takes 1/N)
    momentum: float = field(default=0.9, metadata=spec(min=0, lt=1))  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = field(default=3e-5, metadata=spec(min=0, max=1))  # L2 penalty on conv and linear weights (not BatchNorm or biases)
    label_smoothing: float = field(default=0.1, metadata=spec(min=0, lt=1))  # label smoothing of the cross-entropy loss
    kd_ratio: float = field(default=1.0, metadata=spec(min=0, max=1000))  # weight of the distillation loss in phases with distill: teacher
    dropout: float = field(default=0.1, metadata=spec(min=0, lt=1))  # dropout before the classifier
    bn_recal_images: int = field(default=2000, metadata=spec(**_INT))  # training images for BatchNorm recalibration before final tests
    val_bn_images: int = field(default=500, metadata=spec(**_INT))  # training images for BatchNorm recalibration before validation
    validate: bool = True  # validate the phase's largest and smallest subnets on the val split
    val_every: int = field(default=1, metadata=spec(min=0, max=10**9))  # ... every N epochs and at the end of each phase (0: at phase ends only)
    eval_batch_size: int = field(default=500, metadata=spec(**_INT))  # batch size of evaluation and recalibration
    test_at_end: bool = True  # test the last phase's largest and smallest subnets at the end (metrics.final)
    steps_per_epoch: Union[int, None] = field(default=None, metadata=spec(**_INT))  # stop each epoch after this many steps (quick runs, tests)
    threads: Union[int, None] = field(default=None, metadata=spec(min=1, max=1024))  # torch CPU threads per process; null: torch's default
    device: str = field(default="cpu", metadata=spec(max_len=20))  # cpu, cuda or auto (cuda when available)
    channels_last: bool = True  # NHWC tensors: depthwise convs train ~2x faster on CPU
    grad_sync: Literal["allreduce", "ddp"] = "allreduce"  # multi-process gradient averaging:
    # one flat all-reduce per step (allreduce) or DistributedDataParallel(find_unused_parameters=True)
    workers: int = field(default=0, metadata=spec(min=0, max=256))  # DataLoader worker processes for datasets read from disk
    crop_padding: int = field(default=0, metadata=spec(min=0, max=1024))  # random crops: pad training images by this many black pixels, crop back at random
    flip: bool = False  # mirror training images left-right at random (not for digits or text)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda|auto|cuda:[0-9]{1,3}", self.device):
            raise Invalid("device", self.device, "cpu, cuda, cuda:N or auto")


@dataclass
class TrainConfig:
    space: str = field(default="mbv3-tiny", metadata=spec(min_len=1, max_len=4096))  # search space preset or YAML path
    seed: int = field(default=0, metadata=spec(min=0, max=2**32 - 1))  # seeds weights, data order, subnet sampling and dropout
    data: DataConfig = field(default_factory=DataConfig)  # the dataset (edgenas.data.DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)  # optimiser, losses, evaluation, device
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # the phases

    # ---- dict / YAML ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        return build(cls, data, source)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# ---- schedules as data ------------------------------------------------------------------------------

# Progressive shrinking (OFA): train the full network, then open up kernel size, depth and expand
# ratio in turn, distilling from the full network. Epochs and learning rates suit the embedded
# digits quickstart on a CPU; configs for other datasets set their own.
PROGRESSIVE_SHRINKING = [
    dict(name="full", epochs=4, lr=0.1, warmup_epochs=0.5, kernel_sizes="max", expand_ratios="max", depths="max"),
    dict(name="kernel", epochs=1, lr=0.03, expand_ratios="max", depths="max", distill="teacher"),
    dict(name="depth-1", epochs=1, lr=0.02, expand_ratios="max", depths="top2", distill="teacher"),
    dict(name="depth-2", epochs=1, lr=0.02, expand_ratios="max", distill="teacher"),
    dict(name="expand-1", epochs=1, lr=0.02, expand_ratios="top2", distill="teacher", sort_channels=True),
    dict(name="expand-2", epochs=1, lr=0.02, distill="teacher"),
]
# The sandwich rule with in-place distillation (BigNAS): every step trains the largest subnet on the
# labels, then the smallest and random subnets on the largest one's predictions.
SANDWICH = [
    dict(name="sandwich", epochs=5, lr=0.1, warmup_epochs=0.5, subnets_per_step=3, sampler="sandwich",
         distill="inplace"),
]
SCHEDULES = {"progressive-shrinking": PROGRESSIVE_SHRINKING, "sandwich": SANDWICH}


def default_phases(name: str) -> list[PhaseConfig]:
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{name}': choose one of {', '.join(SCHEDULES)} or list 'phases'")
    return [PhaseConfig(**p) for p in copy.deepcopy(SCHEDULES[name])]


# ---- loading and overrides --------------------------------------------------------------------------

def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (None: the defaults, i.e. the digits quickstart) and apply `key=value` overrides."""
    source = str(path) if path is not None else "default config"
    raw: dict[str, Any] = {}
    if path is not None:
        p = user_path(path, "training config")
        data = read_yaml(p, "training config YAML file")
        raw = {} if data is None else mapping_of(data, str(p), "a training config: space, seed, data, train, schedule")
    return apply_overrides(raw, overrides or [], source)


def apply_overrides(data: Mapping[str, Any] | TrainConfig, overrides: list[str], source: str = "config") -> TrainConfig:
    """Apply `dotted.key=value` overrides (values read as YAML) to a config or a config dict.

    `schedule.name` is applied first, so that a schedule preset replaces the phases the file did not
    list; every other key must already exist (`schedule.phases.0.epochs=2`, `train.batch_size=64`).
    """
    pairs = [_split_override(o) for o in overrides]
    raw = data.to_dict() if isinstance(data, TrainConfig) else copy.deepcopy(dict(data))
    for key, value in pairs:
        if key == "schedule.name":
            raw.setdefault("schedule", {})
            if not isinstance(raw["schedule"], dict):
                raise ConfigError(message(source, "schedule", echo(raw["schedule"]), "a mapping of name, phases"))
            raw["schedule"]["name"] = value
            raw["schedule"].pop("phases", None)
    resolved = TrainConfig.from_dict(raw, source).to_dict()
    for key, value in pairs:
        if key != "schedule.name":
            _set_path(resolved, key, value)
    shown = " ".join(o if len(o) <= 60 else o[:57] + "..." for o in overrides)  # never echo a huge value whole
    return TrainConfig.from_dict(resolved, f"{source} with --set {shown}" if overrides else source)


def _split_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(message("--set", None, echo(text), "key=value (e.g. train.batch_size=64)"))
    try:
        parsed = loads_yaml(value, f"--set {key.strip()}") if value.strip() else None
    except ConfigError:
        parsed = value  # not YAML: the text itself (the schema then says what the key expects)
    return key.strip(), parsed


def _set_path(root: dict, key: str, value: Any) -> None:
    node: Any = root
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, dict):
            if part not in node:
                raise ConfigError(message("--set", where, "an unknown key", _known_key(part, list(node))))
            if last:
                node[part] = value
            else:
                node = node[part]
        elif isinstance(node, list):
            if not (part.isascii() and part.isdigit()) or int(part) >= len(node):
                raise ConfigError(message("--set", where, "an unknown key", f"an index 0..{len(node) - 1} of '{'.'.join(parts[:i])}'"))
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            raise ConfigError(message("--set", where, "an unknown key", f"nothing below '{'.'.join(parts[:i])}', which is a value, not a section"))


def _to_dict(obj: Any) -> Any:
    if isinstance(obj, DataConfig):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(v) for v in obj]
    return obj
