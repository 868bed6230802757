"""The search space as data: `SearchSpace`, loaded from a preset name or a YAML file.

A space describes an OFA-MobileNetV3-style network:

    stem (3x3 conv, stride `stem_stride`, h-swish)
    first block (3x3 MBConv, expand ratio 1, ReLU, fixed)
    units[0..U-1]: up to max(depths) MBConv blocks each; per block a kernel size and an
                   expand ratio, per unit a depth (the first D blocks are kept)
    final expand (1x1 conv, h-swish) -> global average pool -> feature mix (1x1 conv, no BN,
    h-swish) -> classifier (linear)

plus the input resolutions the network may run at.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from edgenas.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"
ACTIVATIONS = ("relu", "hswish")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor`, never more than 10% below it (as OFA does)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class UnitSpec:
    channels: int  # output channels of every block in the unit
    stride: int  # stride of the unit's first block (the others use stride 1)
    act: str  # "relu" or "hswish"
    se: bool  # squeeze-and-excite after the depthwise conv


@dataclass(frozen=True)
class SearchSpace:
    name: str  # preset or user name; shown in files and model cards
    units: tuple[UnitSpec, ...]  # the elastic units, in order
    kernel_sizes: tuple[int, ...]  # depthwise kernel choices per block, e.g. (3, 5, 7)
    expand_ratios: tuple[float, ...]  # expand ratio choices per block, e.g. (3, 4, 6)
    depths: tuple[int, ...]  # blocks-per-unit choices, e.g. (2, 3, 4)
    resolutions: tuple[int, ...]  # input resolutions (square), ascending
    stem_channels: int  # output channels of the stem conv
    first_block_channels: int  # output channels of the fixed first MBConv
    final_expand_channels: int  # channels of the last 1x1 conv before pooling
    feature_mix_channels: int  # channels of the 1x1 conv after pooling
    num_classes: int = 1000  # classifier outputs
    in_channels: int = 3  # image channels (grayscale datasets are replicated to 3)
    stem_stride: int = 2  # stride of the stem conv
    se_reduction: int = 4  # squeeze-excite hidden width = make_divisible(mid / se_reduction)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "space") -> "SearchSpace":
        """Build and validate a space; every error names the field and `source`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a search space must be a mapping of fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown field '{unknown[0]}' (allowed: {', '.join(fields)})")
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in data]
        if missing:
            raise ConfigError(f"{source}: missing required field '{missing[0]}'")
        kwargs = dict(data)
        kwargs["name"] = _expect(data["name"], str, "name", source)
        for key in ("stem_channels", "first_block_channels", "final_expand_channels", "feature_mix_channels",
                    "num_classes", "in_channels", "stem_stride", "se_reduction"):
            if key in data:
                kwargs[key] = _positive_int(data[key], key, source)
        for key in ("kernel_sizes", "depths", "resolutions"):
            kwargs[key] = tuple(_positive_int(v, f"{key}[{i}]", source) for i, v in enumerate(_list(data[key], key, source)))
        kwargs["expand_ratios"] = tuple(
            _positive_number(v, f"expand_ratios[{i}]", source) for i, v in enumerate(_list(data["expand_ratios"], "expand_ratios", source))
        )
        kwargs["units"] = tuple(_unit(u, i, source) for i, u in enumerate(_list(data["units"], "units", source)))
        space = cls(**kwargs)
        space._check(source)
        return space

    def _check(self, source: str) -> None:
        def fail(msg):
            raise ConfigError(f"{source}: {msg}")

        for key in ("kernel_sizes", "expand_ratios", "depths", "resolutions"):
            values = getattr(self, key)
            if not values:
                fail(f"'{key}' must list at least one value")
            if list(values) != sorted(set(values)):
                fail(f"'{key}' must be strictly increasing without repeats, got {list(values)}")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            fail(f"'kernel_sizes' must be odd, got {list(self.kernel_sizes)}")
        if not self.units:
            fail("'units' must list at least one unit")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["units"] = [dataclasses.asdict(u) for u in self.units]
        for key in ("kernel_sizes", "expand_ratios", "depths", "resolutions"):
            data[key] = list(data[key])
        return data

    def replace(self, **changes) -> "SearchSpace":
        return dataclasses.replace(self, **changes)

    # ---- derived -----------------------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def num_slots(self) -> int:
        """Block positions over all units (inactive ones included)."""
        return len(self.units) * self.max_depth

    @cached_property
    def hash(self) -> str:
        """Short stable hash of every field; files record it so they are not used with another space."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def mid_channels(self, in_channels: int, expand_ratio: float) -> int:
        return make_divisible(round(in_channels * expand_ratio))

    def se_channels(self, mid_channels: int) -> int:
        return make_divisible(mid_channels // self.se_reduction)

    def num_subnets(self) -> int:
        """Distinct architectures: resolutions x product over units of sum_d (kernels*expands)^d."""
        per_block = len(self.kernel_sizes) * len(self.expand_ratios)
        per_unit = sum(per_block**d for d in self.depths)
        return len(self.resolutions) * per_unit ** len(self.units)

    def describe(self) -> str:
        lines = [f"space {self.name} (hash {self.hash})",
                 f"  stem: {self.stem_channels} ch, stride {self.stem_stride}; first block: {self.first_block_channels} ch",
                 "  units:"]
        for i, u in enumerate(self.units):
            lines.append(f"    {i + 1}: {u.channels:4d} ch  stride {u.stride}  {u.act:6s}  se={'yes' if u.se else 'no'}")
        lines += [f"  head: final expand {self.final_expand_channels} ch, feature mix {self.feature_mix_channels} ch, {self.num_classes} classes",
                  f"  kernel sizes:  {list(self.kernel_sizes)}",
                  f"  expand ratios: {[_num(e) for e in self.expand_ratios]}",
                  f"  depths:        {list(self.depths)}",
                  f"  resolutions:   {list(self.resolutions)}"]
        return "\n".join(lines)

    def __repr__(self) -> str:  # the dataclass repr is a wall of text
        return f"SearchSpace({self.name!r}, hash={self.hash})"


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _expect(value, typ, key, source):
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ConfigError(f"{source}: field '{key}' must be {typ.__name__}, got {value!r}")
    return value


def _positive_int(value, key, source) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source}: field '{key}' must be a positive integer, got {value!r}")
    return value


def _positive_number(value, key, source) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{source}: field '{key}' must be a positive number, got {value!r}")
    return _num(value)


def _list(value, key, source) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{source}: field '{key}' must be a list, got {value!r}")
    return list(value)


def _unit(data, index, source) -> UnitSpec:
    where = f"units[{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping with channels, stride, act, se; got {data!r}")
    allowed = [f.name for f in dataclasses.fields(UnitSpec)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: unknown field '{where}.{unknown[0]}' (allowed: {', '.join(allowed)})")
    missing = [k for k in allowed if k not in data]
    if missing:
        raise ConfigError(f"{source}: missing required field '{where}.{missing[0]}'")
    act = data["act"]
    if act not in ACTIVATIONS:
        raise ConfigError(f"{source}: field '{where}.act' must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    if not isinstance(data["se"], bool):
        raise ConfigError(f"{source}: field '{where}.se' must be true or false, got {data['se']!r}")
    return UnitSpec(
        channels=_positive_int(data["channels"], f"{where}.channels", source),
        stride=_positive_int(data["stride"], f"{where}.stride", source),
        act=act,
        se=data["se"],
    )


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path | SearchSpace) -> SearchSpace:
    """A preset by name (`mbv3-w1.0`, `mbv3-w1.2`, `mbv3-tiny`) or a YAML file path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    text = str(name_or_path)
    path = PRESET_DIR / f"{text}.yaml"
    if not path.exists():
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"unknown search space '{text}': give a preset ({', '.join(preset_names())}) or the path of a space YAML file"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return SearchSpace.from_dict(data, source=str(path))
