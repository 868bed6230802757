"""What a phase samples, and its learning-rate curve.

`PhaseSampler` turns a `PhaseConfig`'s choices ("all", "max", "top2", [3, 5] ...) into concrete values
of the space and draws the subnets of each step from a numpy Generator. Every process of a
distributed run draws from an identically seeded Generator, so all ranks train the same subnets.
"""
from __future__ import annotations

import math
import re

import numpy as np

from edgenas.errors import ArchError, ConfigError
from edgenas.validate import echo, message
from edgenas.space import Arch, SearchSpace
from edgenas.train.config import PhaseConfig

DIMENSIONS = ("kernel_sizes", "expand_ratios", "depths", "resolutions")


def resolve_choice(choice, values: tuple, where: str) -> tuple:
    """The subset of the space's `values` (ascending) that `choice` names."""
    values = tuple(sorted(values))
    if isinstance(choice, str):
        if choice == "all":
            return values
        if choice == "max":
            return values[-1:]
        if choice == "min":
            return values[:1]
        m = re.fullmatch(r"top(\d+)", choice)
        if m and int(m.group(1)) >= 1:
            return values[-int(m.group(1)):]
        raise ConfigError(message("", where, echo(choice), "all, max, min, topN or a list of values").lstrip(": "))
    if not choice:
        raise ConfigError(message("", where, "an empty list", "a non-empty list of values").lstrip(": "))
    picked = []
    for v in choice:
        match = [x for x in values if isinstance(v, (int, float)) and not isinstance(v, bool) and x == v]
        if not match:
            raise ConfigError(message("", where, f"a list that has {echo(v)}",
                                      f"values the space offers: {list(values)}").lstrip(": "))
        picked.append(match[0])
    return tuple(sorted(set(picked)))


class PhaseSampler:
    """Draws the subnets of a phase's steps."""

    def __init__(self, space: SearchSpace, phase: PhaseConfig, index: int = 0):
        self.space, self.phase = space, phase
        where = f"schedule.phases.{index}"
        self.kernels = resolve_choice(phase.kernel_sizes, space.kernel_sizes, f"{where}.kernel_sizes")
        self.expands = resolve_choice(phase.expand_ratios, space.expand_ratios, f"{where}.expand_ratios")
        self.depths = resolve_choice(phase.depths, space.depths, f"{where}.depths")
        self.resolutions = resolve_choice(phase.resolutions, space.resolutions, f"{where}.resolutions")
        self.arch = None
        if phase.arch is not None:
            try:
                self.arch = Arch.parse(phase.arch, space)
            except ArchError as exc:
                raise ConfigError(f"'{where}.arch': {exc}") from None

    def largest(self) -> Arch:
        if self.arch is not None:
            return self.arch
        block = (self.kernels[-1], self.expands[-1])
        return Arch(self.resolutions[-1], tuple((block,) * self.depths[-1] for _ in self.space.units))

    def smallest(self) -> Arch:
        if self.arch is not None:
            return self.arch
        block = (self.kernels[0], self.expands[0])
        return Arch(self.resolutions[0], tuple((block,) * self.depths[0] for _ in self.space.units))

    def random(self, rng: np.random.Generator) -> Arch:
        if self.arch is not None:
            return self.arch
        units = []
        for _ in self.space.units:
            depth = self.depths[rng.integers(len(self.depths))]
            units.append(tuple((self.kernels[rng.integers(len(self.kernels))], self.expands[rng.integers(len(self.expands))])
                               for _ in range(depth)))
        return Arch(self.resolutions[rng.integers(len(self.resolutions))], tuple(units))

    def step(self, rng: np.random.Generator) -> list[Arch]:
        """The subnets of one step: random ones, or largest + smallest + random (sandwich)."""
        n = self.phase.subnets_per_step
        if self.phase.sampler == "sandwich":
            return [self.largest(), self.smallest()] + [self.random(rng) for _ in range(n - 2)]
        return [self.random(rng) for _ in range(n)]

    def choices(self) -> str:
        """What the phase samples: "k{3,5,7} e{3,4,6} d{2,3,4} r{24,28}", or "only ARCH"."""
        if self.arch is not None:
            return f"only {self.arch}"
        fmt = lambda vs: ",".join(str(int(v) if float(v).is_integer() else v) for v in vs)  # noqa: E731
        return f"k{{{fmt(self.kernels)}}} e{{{fmt(self.expands)}}} d{{{fmt(self.depths)}}} r{{{fmt(self.resolutions)}}}"

    def describe(self) -> str:
        if self.arch is not None:
            return f"{self.choices()}, distill {self.phase.distill}"
        return f"{self.choices()} x{self.phase.subnets_per_step} {self.phase.sampler}, distill {self.phase.distill}"


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1 over `warmup_steps`, then a cosine from 1 down to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
