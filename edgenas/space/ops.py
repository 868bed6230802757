"""The layers of a subnet as data (`OpSpec`), and the cost model computed from them.

`arch_ops(space, arch)` lists every layer a subnet runs, with its shapes. The same list drives:
- building the static network (`edgenas.nn.static.build_static`),
- MACs, parameters and peak activation memory (below), without a forward pass,
- the latency-table keys (`OpSpec.key`, in the style of OFA's published tables), and
- the op enumeration of the profiler.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from edgenas.space.arch import Arch, Genome, genome_of
from edgenas.space.space import SearchSpace


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv with an odd kernel."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class OpSpec:
    kind: str  # stem | mbconv | final_expand | pool | feature_mix | classifier
    in_size: int  # input height (= width)
    in_ch: int
    out_ch: int
    mid_ch: int = 0  # mbconv: depthwise channels (in_ch when there is no expand conv)
    kernel: int = 1
    stride: int = 1
    act: str = "hswish"  # relu | hswish | none
    se_ch: int = 0  # mbconv: squeeze-excite hidden channels, 0 = no SE
    expand_conv: bool = False  # mbconv: has a 1x1 expand conv (False for expand ratio 1)
    residual: bool = False  # mbconv: identity shortcut

    @property
    def out_size(self) -> int:
        if self.kind in ("pool", "feature_mix", "classifier"):
            return 1
        return conv_out(self.in_size, self.stride)

    @property
    def key(self) -> str:
        """Readable latency-table key, identical to OFA's keys for the same layers."""
        i, o = self.in_size, self.out_size
        if self.kind == "stem":
            return f"Conv-input:{i}x{i}x{self.in_ch}-output:{o}x{o}x{self.out_ch}"
        if self.kind == "mbconv":
            return (f"expanded_conv-input:{i}x{i}x{self.in_ch}-output:{o}x{o}x{self.out_ch}-expand:{self.mid_ch}"
                    f"-kernel:{self.kernel}-stride:{self.stride}-idskip:{int(self.residual)}"
                    f"-se:{int(self.se_ch > 0)}-hs:{int(self.act == 'hswish')}")
        if self.kind == "final_expand":
            return f"Conv_1-input:{i}x{i}x{self.in_ch}-output:{o}x{o}x{self.out_ch}"
        if self.kind == "pool":
            return f"AvgPool2D-input:{i}x{i}x{self.in_ch}-output:1x1x{self.out_ch}"
        if self.kind == "feature_mix":
            return f"Conv_2-input:1x1x{self.in_ch}-output:1x1x{self.out_ch}"
        if self.kind == "classifier":
            return f"Logits-input:1x1x{self.in_ch}-output:{self.out_ch}"
        raise ValueError(self.kind)

    # ---- cost --------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolutions and linear layers (what FLOP counters count / 2)."""
        i, o = self.in_size, self.out_size
        if self.kind in ("stem", "final_expand"):
            return o * o * self.kernel * self.kernel * self.in_ch * self.out_ch
        if self.kind in ("feature_mix", "classifier"):
            return self.in_ch * self.out_ch
        if self.kind == "pool":
            return 0
        m = self.mid_ch
        total = i * i * self.in_ch * m if self.expand_conv else 0
        total += o * o * self.kernel * self.kernel * m
        total += 2 * m * self.se_ch
        total += o * o * m * self.out_ch
        return total

    @property
    def params(self) -> int:
        """Trainable parameters, BatchNorm scale and shift included."""
        k = self.kernel
        if self.kind in ("stem", "final_expand"):
            return k * k * self.in_ch * self.out_ch + 2 * self.out_ch
        if self.kind == "feature_mix":
            return self.in_ch * self.out_ch
        if self.kind == "classifier":
            return self.in_ch * self.out_ch + self.out_ch
        if self.kind == "pool":
            return 0
        m = self.mid_ch
        total = self.in_ch * m + 2 * m if self.expand_conv else 0
        total += k * k * m + 2 * m
        if self.se_ch:
            total += m * self.se_ch + self.se_ch + self.se_ch * m + m
        total += m * self.out_ch + 2 * self.out_ch
        return total

    @property
    def peak_activations(self) -> int:
        """Most activation elements alive at once while this layer runs.

        Each step (a conv with its BN and activation, the squeeze-excite, the pooling) holds its
        input and its output; inside a residual block the block input is also held from the
        second step on, until the final add.
        """
        i, o = self.in_size, self.out_size
        if self.kind in ("stem", "final_expand", "pool"):
            return self.in_ch * i * i + self.out_ch * o * o
        if self.kind in ("feature_mix", "classifier"):
            return self.in_ch + self.out_ch
        m, x = self.mid_ch, self.in_ch * i * i
        held = x if self.residual else 0
        steps = []
        if self.expand_conv:
            steps.append(x + m * i * i)
        steps.append(m * i * i + m * o * o + (held if self.expand_conv else 0))
        if self.se_ch:
            steps.append(2 * m * o * o + held)
        steps.append(m * o * o + self.out_ch * o * o + held)
        return max(steps)


def arch_ops(space: SearchSpace, arch: Arch) -> list[OpSpec]:
    """Every layer of the subnet `arch`, in order."""
    size = arch.resolution
    ops = [OpSpec("stem", size, space.in_channels, space.stem_channels, kernel=3, stride=space.stem_stride, act="hswish")]
    size = ops[-1].out_size
    c = space.stem_channels
    first = OpSpec("mbconv", size, c, space.first_block_channels, mid_ch=c, kernel=3, stride=1, act="relu",
                   residual=c == space.first_block_channels)
    ops.append(first)
    c = space.first_block_channels
    for unit, blocks in zip(space.units, arch.units):
        for j, (k, e) in enumerate(blocks):
            stride = unit.stride if j == 0 else 1
            mid = space.mid_channels(c, e)
            op = OpSpec("mbconv", size, c, unit.channels, mid_ch=mid, kernel=k, stride=stride, act=unit.act,
                        se_ch=space.se_channels(mid) if unit.se else 0, expand_conv=True,
                        residual=stride == 1 and c == unit.channels)
            ops.append(op)
            size, c = op.out_size, unit.channels
    ops.append(OpSpec("final_expand", size, c, space.final_expand_channels, kernel=1, act="hswish"))
    c = space.final_expand_channels
    ops.append(OpSpec("pool", size, c, c, act="none"))
    ops.append(OpSpec("feature_mix", 1, c, space.feature_mix_channels, act="hswish"))
    ops.append(OpSpec("classifier", 1, space.feature_mix_channels, space.num_classes, act="none"))
    return ops


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int
    peak_activation_bytes: int  # fp32

    @property
    def mflops(self) -> float:  # millions of MACs, the unit OFA and most papers call "MFLOPs"
        return self.macs / 1e6


def arch_cost(space: SearchSpace, arch: Arch) -> Cost:
    ops = arch_ops(space, arch)
    return Cost(
        macs=sum(op.macs for op in ops),
        params=sum(op.params for op in ops),
        peak_activation_bytes=4 * max(op.peak_activations for op in ops),
    )


class CostTable:
    """Vectorised cost of many genomes at once, for search constraints.

    Per-slot costs depend on the resolution, the slot, its kernel and expand ratio, and whether
    the block before it changed size; in these spaces only a unit's first block is special, so
    a table indexed [resolution, slot, kernel, expand] is exact.
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        self.genome: Genome = genome_of(space)
        nr, ns = len(space.resolutions), space.num_slots
        nk, ne = len(space.kernel_sizes), len(space.expand_ratios)
        self.slot = {name: np.zeros((nr, ns, nk, ne), np.int64) for name in ("macs", "params", "peak")}
        self.fixed = {name: np.zeros(nr, np.int64) for name in ("macs", "params", "peak")}
        dmax = space.max_depth
        for ri, r in enumerate(space.resolutions):
            ops = arch_ops(space, _full_arch(space, r))
            fixed = ops[:2] + ops[-4:]
            self.fixed["macs"][ri] = sum(op.macs for op in fixed)
            self.fixed["params"][ri] = sum(op.params for op in fixed)
            self.fixed["peak"][ri] = max(op.peak_activations for op in fixed)
            for s, op in enumerate(ops[2:-4]):
                for ki, k in enumerate(space.kernel_sizes):
                    for ei, e in enumerate(space.expand_ratios):
                        mid = space.mid_channels(op.in_ch, e)
                        v = OpSpec("mbconv", op.in_size, op.in_ch, op.out_ch, mid_ch=mid, kernel=k, stride=op.stride,
                                   act=op.act, se_ch=space.se_channels(mid) if op.se_ch else 0,
                                   expand_conv=True, residual=op.residual)
                        self.slot["macs"][ri, s, ki, ei] = v.macs
                        self.slot["params"][ri, s, ki, ei] = v.params
                        self.slot["peak"][ri, s, ki, ei] = v.peak_activations
        assert len(ops) - 6 == len(space.units) * dmax

    def __call__(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """{'macs', 'params', 'peak_activation_bytes'}: one int64 value per genome."""
        g = self.genome
        genomes = np.asarray(genomes)
        res = genomes[:, 0]
        active = g.active_mask(genomes)
        slots = np.arange(g.n_slots)[None, :]
        k, e = genomes[:, g.kernel], genomes[:, g.expand]
        out = {}
        for name in ("macs", "params"):
            per_slot = self.slot[name][res[:, None], slots, k, e]
            out[name] = self.fixed[name][res] + np.where(active, per_slot, 0).sum(1)
        peak = np.where(active, self.slot["peak"][res[:, None], slots, k, e], 0).max(1)
        out["peak_activation_bytes"] = 4 * np.maximum(self.fixed["peak"][res], peak)
        return out


def _full_arch(space: SearchSpace, resolution: int) -> Arch:
    block = (space.kernel_sizes[0], space.expand_ratios[0])
    return Arch(resolution, tuple((block,) * space.max_depth for _ in space.units))
