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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml

from edgenas.data import DataConfig
from edgenas.errors import ConfigError

# A phase's elastic choice for one dimension: "all" the space's values, "max" or "min" only, "topN"
# (the N largest, e.g. depths top2 = {4, 3} in a {2, 3, 4} space), or an explicit list of values.
Choice = Union[str, list]


@dataclass
class PhaseConfig:
    name: str  # shown in logs, the plot and checkpoints
    epochs: int  # epochs over the training split
    lr: float  # peak learning rate (reached after warm-up, then cosine decay to 0 within the phase)
    warmup_epochs: float = 0.0  # linear warm-up from ~0 to `lr` over this many epochs
    subnets_per_step: int = 1  # subnets whose gradients are summed before each optimiser step
    kernel_sizes: Choice = "all"  # depthwise kernel sizes this phase samples (see `Choice`)
    expand_ratios: Choice = "all"  # expand ratios this phase samples
    depths: Choice = "all"  # unit depths this phase samples
    resolutions: Choice = "all"  # input resolutions this phase samples (the batch is resized)
    sampler: Literal["random", "sandwich"] = "random"  # sandwich: largest + smallest + random subnets
    distill: Literal["none", "teacher", "inplace"] = "none"  # teacher: KD from the full network as it
    # was when the first teacher phase started; inplace: the step's first subnet teaches the others
    sort_channels: bool = False  # reorder channels by importance when the phase starts
    arch: Union[str, None] = None  # train only this subnet (an arch string), e.g. to train it from scratch


@dataclass
class ScheduleConfig:
    name: str = "progressive-shrinking"  # a preset from SCHEDULES; fills `phases` when the file has none
    phases: list[PhaseConfig] = field(default_factory=list)  # the phases, run in order


@dataclass
class TrainSettings:
    batch_size: int = 32  # images per step over all processes (each of N processes takes 1/N)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = 3e-5  # L2 penalty on conv and linear weights (not BatchNorm or biases)
    label_smoothing: float = 0.1  # label smoothing of the cross-entropy loss
    kd_ratio: float = 1.0  # weight of the distillation loss in phases with distill: teacher
    dropout: float = 0.1  # dropout before the classifier
    bn_recal_images: int = 2000  # training images for BatchNorm recalibration before final tests
    val_bn_images: int = 500  # training images for BatchNorm recalibration before validation
    validate: bool = True  # validate the phase's largest and smallest subnets on the val split
    val_every: int = 1  # ... every N epochs and at the end of each phase (0: at phase ends only)
    eval_batch_size: int = 500  # batch size of evaluation and recalibration
    test_at_end: bool = True  # test the last phase's largest and smallest subnets at the end (metrics.final)
    steps_per_epoch: Union[int, None] = None  # stop each epoch after this many steps (quick runs, tests)
    threads: Union[int, None] = None  # torch CPU threads per process; null: torch's default
    device: str = "cpu"  # cpu, cuda or auto (cuda when available)
    channels_last: bool = True  # NHWC tensors: depthwise convs train ~2x faster on CPU
    grad_sync: Literal["allreduce", "ddp"] = "allreduce"  # multi-process gradient averaging:
    # one flat all-reduce per step (allreduce) or DistributedDataParallel(find_unused_parameters=True)
    workers: int = 0  # DataLoader worker processes for datasets read from disk
    crop_padding: int = 0  # random crops: pad training images by this many black pixels, crop back at random
    flip: bool = False  # mirror training images left-right at random (not for digits or text)


@dataclass
class TrainConfig:
    space: str = "mbv3-tiny"  # search space preset or YAML path
    seed: int = 0  # seeds weights, data order, subnet sampling and dropout
    data: DataConfig = field(default_factory=DataConfig)  # the dataset (edgenas.data.DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)  # optimiser, losses, evaluation, device
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # the phases

    def __post_init__(self) -> None:
        if not self.schedule.phases:
            self.schedule.phases = default_phases(self.schedule.name)

    # ---- dict / YAML ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        try:
            cfg = _build(cls, data, "", source)
        except ConfigError as exc:
            raise exc if str(exc).startswith(source) else ConfigError(f"{source}: {exc}") from None
        _check(cfg, source)
        return cfg

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
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: a training config must be a mapping of sections, got {type(raw).__name__}")
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
                raise ConfigError(f"{source}: 'schedule' must be a mapping")
            raw["schedule"]["name"] = value
            raw["schedule"].pop("phases", None)
    resolved = TrainConfig.from_dict(raw, source).to_dict()
    for key, value in pairs:
        if key != "schedule.name":
            _set_path(resolved, key, value)
    return TrainConfig.from_dict(resolved, f"{source} with --set {' '.join(overrides)}" if overrides else source)


def _split_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. train.batch_size=64), got '{text}'")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _set_path(root: dict, key: str, value: Any) -> None:
    node: Any = root
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, dict):
            if part not in node:
                raise ConfigError(f"--set: unknown key '{where}' (allowed here: {', '.join(node)})")
            if last:
                node[part] = value
            else:
                node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set: unknown key '{where}': '{'.'.join(parts[:i])}' has indices 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            raise ConfigError(f"--set: unknown key '{where}': '{'.'.join(parts[:i])}' is a value, not a section")


# ---- typed construction from dicts -------------------------------------------------------------------

def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _build(cls, data: Any, path: str, source: str):
    if cls is DataConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: '{path}' must be a mapping of data settings, got {data!r}")
        try:
            return DataConfig.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: bad '{path}' section: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{path or 'the config'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{_join(path, key)}' (allowed: {', '.join(fields)})")
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{_join(path, name)}'")
    return cls(**{k: _coerce(v, hints[k], _join(path, k), source) for k, v in data.items()})


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list or tp is list:
        return "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp, path: str, source: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, source)
    if origin is Union:
        for arm in args:
            try:
                return _coerce(value, arm, path, source)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin is list or tp is list:
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            return [_coerce(v, item, f"{path}.{i}", source) for i, v in enumerate(value)]
    elif tp is Any:
        return value
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 3e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{source}: '{path}' must be {_describe(tp)}, got {value!r}")


def _to_dict(obj: Any) -> Any:
    if isinstance(obj, DataConfig):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(v) for v in obj]
    return obj


def _check(cfg: TrainConfig, source: str) -> None:
    """Range checks that types cannot express; choices are checked against the space later."""
    def fail(msg):
        raise ConfigError(f"{source}: {msg}")

    t = cfg.train
    for key in ("batch_size", "eval_batch_size", "bn_recal_images", "val_bn_images"):
        if getattr(t, key) < 1:
            fail(f"'train.{key}' must be at least 1, got {getattr(t, key)}")
    for key in ("val_every", "workers", "crop_padding"):
        if getattr(t, key) < 0:
            fail(f"'train.{key}' must be 0 or more, got {getattr(t, key)}")
    if t.steps_per_epoch is not None and t.steps_per_epoch < 1:
        fail(f"'train.steps_per_epoch' must be at least 1 or null, got {t.steps_per_epoch}")
    if t.threads is not None and t.threads < 1:
        fail(f"'train.threads' must be at least 1 or null, got {t.threads}")
    if t.device not in ("cpu", "cuda", "auto") and not t.device.startswith("cuda:"):
        fail(f"'train.device' must be cpu, cuda or auto, got {t.device!r}")
    if not 0 <= t.label_smoothing < 1:
        fail(f"'train.label_smoothing' must be in [0, 1), got {t.label_smoothing}")
    if not 0 <= t.dropout < 1:
        fail(f"'train.dropout' must be in [0, 1), got {t.dropout}")
    if not cfg.schedule.phases:
        fail("'schedule.phases' must list at least one phase")
    names = [p.name for p in cfg.schedule.phases]
    for i, p in enumerate(cfg.schedule.phases):
        where = f"schedule.phases.{i}"
        if p.epochs < 1:
            fail(f"'{where}.epochs' must be at least 1, got {p.epochs}")
        if p.lr <= 0:
            fail(f"'{where}.lr' must be positive, got {p.lr}")
        if p.warmup_epochs < 0 or p.warmup_epochs > p.epochs:
            fail(f"'{where}.warmup_epochs' must be between 0 and the phase's {p.epochs} epochs, got {p.warmup_epochs}")
        if p.subnets_per_step < 1:
            fail(f"'{where}.subnets_per_step' must be at least 1, got {p.subnets_per_step}")
        if p.sampler == "sandwich" and p.subnets_per_step < 2:
            fail(f"'{where}.subnets_per_step' must be at least 2 for the sandwich sampler (largest and smallest)")
        if p.distill == "inplace" and p.subnets_per_step < 2:
            fail(f"'{where}.subnets_per_step' must be at least 2 for in-place distillation (a teacher and a student)")
        if names.count(p.name) > 1:
            fail(f"phase name '{p.name}' is used twice; phase names must be unique")
