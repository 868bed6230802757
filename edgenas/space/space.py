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

from edgenas.errors import ConfigError
from edgenas.validate import Invalid, build, echo, read_yaml, spec, user_path

PRESET_DIR = Path(__file__).parent / "presets"
ACTIVATIONS = ("relu", "hswish")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor`, never more than 10% below it (as OFA does)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


_CH = dict(min=1, max=16384)  # channel counts


@dataclass(frozen=True)
class UnitSpec:
    channels: int = field(metadata=spec(**_CH))  # output channels of every block in the unit
    stride: int = field(metadata=spec(min=1, max=4))  # stride of the unit's first block (the others use stride 1)
    act: str = field(metadata=spec(choices=ACTIVATIONS))  # "relu" or "hswish"
    se: bool  # squeeze-and-excite after the depthwise conv


@dataclass(frozen=True)
class SearchSpace:
    name: str = field(metadata=spec(min_len=1, max_len=200))  # preset or user name; shown in files and model cards
    units: tuple[UnitSpec, ...] = field(metadata=spec(min_len=1, max_len=64))  # the elastic units, in order
    # depthwise kernel choices per block, e.g. (3, 5, 7); odd
    kernel_sizes: tuple[int, ...] = field(metadata=spec(min_len=1, increasing=True, each=spec(min=1, max=15)))
    # expand ratio choices per block, e.g. (3, 4, 6)
    expand_ratios: tuple[float, ...] = field(metadata=spec(min_len=1, increasing=True, each=spec(gt=0, max=64)))
    depths: tuple[int, ...] = field(metadata=spec(min_len=1, increasing=True, each=spec(min=1, max=32)))  # blocks-per-unit choices, e.g. (2, 3, 4)
    resolutions: tuple[int, ...] = field(metadata=spec(min_len=1, increasing=True, each=spec(min=1, max=4096)))  # input resolutions (square), ascending
    stem_channels: int = field(metadata=spec(**_CH))  # output channels of the stem conv
    first_block_channels: int = field(metadata=spec(**_CH))  # output channels of the fixed first MBConv
    final_expand_channels: int = field(metadata=spec(**_CH))  # channels of the last 1x1 conv before pooling
    feature_mix_channels: int = field(metadata=spec(**_CH))  # channels of the 1x1 conv after pooling
    num_classes: int = field(default=1000, metadata=spec(min=1, max=1_000_000))  # classifier outputs
    in_channels: int = field(default=3, metadata=spec(min=1, max=64))  # image channels (grayscale datasets are replicated to 3)
    stem_stride: int = field(default=2, metadata=spec(min=1, max=8))  # stride of the stem conv
    se_reduction: int = field(default=4, metadata=spec(min=1, max=256))  # squeeze-excite hidden width = make_divisible(mid / se_reduction)

    def __post_init__(self) -> None:
        # Expand ratios stay ints when whole (3, not 3.0), so that hashes and arch strings are stable.
        object.__setattr__(self, "expand_ratios", tuple(_num(e) for e in self.expand_ratios))
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise Invalid("kernel_sizes", list(self.kernel_sizes), "odd kernel sizes")

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "space") -> "SearchSpace":
        """Build and validate a space; every error names the key and `source`."""
        return build(cls, data, source)

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


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path | SearchSpace) -> SearchSpace:
    """A preset by name (`mbv3-w1.0`, `mbv3-w1.2`, `mbv3-tiny`) or a YAML file path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    text = str(name_or_path)
    path = PRESET_DIR / f"{text}.yaml"
    if text not in preset_names():
        path = user_path(text, "search space YAML")
        if not path.is_file():
            raise ConfigError(
                f"unknown search space {echo(text)}: give a preset ({', '.join(preset_names())}) or the path of a space YAML file"
            )
    return SearchSpace.from_dict(read_yaml(path, "search space YAML"), source=str(path))
