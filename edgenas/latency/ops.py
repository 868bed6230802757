"""Op enumeration: every distinct layer the subnets of a space can contain.

Per resolution a subnet is: stem, the fixed first block, for each unit up to max-depth MBConv
blocks, final expand, pooling, feature mix and classifier. Inside a unit the first block differs
(stride, input channels) and all later blocks share one shape, so per unit there are
2 x kernels x expands MBConv variants, and the whole space at one resolution has
6 + units x 2 x kernels x expands distinct layers (96 for the OFA spaces, as in OFA's tables).
Layers that do not depend on the resolution (feature mix, classifier) appear once.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from edgenas.errors import EdgeNASError
from edgenas.space.arch import Arch
from edgenas.space.ops import OpSpec, arch_ops
from edgenas.space.space import SearchSpace


def full_arch(space: SearchSpace, resolution: int) -> Arch:
    """Every slot active (max depth); the block choices are placeholders."""
    block = (space.kernel_sizes[0], space.expand_ratios[0])
    return Arch(resolution, tuple((block,) * space.max_depth for _ in space.units))


def block_variant(space: SearchSpace, slot_op: OpSpec, kernel: int, expand: float) -> OpSpec:
    """The MBConv at a slot's position (shapes, stride, act, SE, residual) with another kernel and expand."""
    mid = space.mid_channels(slot_op.in_ch, expand)
    return OpSpec("mbconv", slot_op.in_size, slot_op.in_ch, slot_op.out_ch, mid_ch=mid, kernel=kernel,
                  stride=slot_op.stride, act=slot_op.act, se_ch=space.se_channels(mid) if slot_op.se_ch else 0,
                  expand_conv=True, residual=slot_op.residual)


def slot_layout(space: SearchSpace, resolution: int) -> tuple[list[OpSpec], list[OpSpec]]:
    """(fixed ops, one placeholder op per block slot) at a resolution, in network order;
    fixed = stem, first block, final expand, pool, feature mix, classifier."""
    ops = arch_ops(space, full_arch(space, resolution))
    return ops[:2] + ops[-4:], ops[2:-4]


def resolutions_of(space: SearchSpace, resolutions: Iterable[int] | None) -> list[int]:
    if resolutions is None:
        return list(space.resolutions)
    chosen = sorted(set(int(r) for r in resolutions))
    bad = [r for r in chosen if r not in space.resolutions]
    if bad or not chosen:
        raise EdgeNASError(f"resolution {bad[0] if bad else '(none)'} is not in space {space.name}: choose from {list(space.resolutions)}")
    return chosen


def enumerate_ops(space: SearchSpace, resolutions: Sequence[int] | None = None) -> list[OpSpec]:
    """The distinct layers of `space` at `resolutions` (default: all), one per latency key,
    ordered by resolution and then network position."""
    seen: dict[str, OpSpec] = {}

    def add(op: OpSpec) -> None:
        other = seen.setdefault(op.key, op)
        if other != op:  # e.g. an expand ratio of 1 with an expand conv looks like the first block
            raise EdgeNASError(f"two different layers share the latency key {op.key}; this space cannot be profiled")

    for r in resolutions_of(space, resolutions):
        fixed, slots = slot_layout(space, r)
        for op in fixed[:2]:
            add(op)
        for slot in slots:
            for k in space.kernel_sizes:
                for e in space.expand_ratios:
                    add(block_variant(space, slot, k, e))
        for op in fixed[2:]:
            add(op)
    return list(seen.values())


def estimate_seconds(ops: Sequence[OpSpec], warmup: int, runs: int, gmacs_per_s: float = 4.0,
                     per_model_s: float = 0.03, per_run_ms: float = 0.02, rounds: int = 1) -> float:
    """A rough duration for measuring `ops`: per model, loading (`per_model_s`) plus
    warmup+runs executions at `gmacs_per_s` with a fixed per-run overhead, plus the agent's
    pauses between measurement rounds."""
    total = 0.0
    for op in ops:
        run_ms = per_run_ms + op.macs / (gmacs_per_s * 1e6)
        total += per_model_s + (warmup + runs) * run_ms / 1e3 + 0.02 * (max(rounds, 1) - 1)
    return total
