"""`Arch`, the one architecture format, and its fixed-length numeric encoding (the genome).

An `Arch` lists only what is active: the resolution and, per unit, the (kernel, expand) of each
kept block; the depth of a unit is the number of its blocks. Its string form is

    r160_k3e4,k5e6_k7e3,k3e3,k5e4_k3e6,k3e6_k5e3,k5e3,k5e3,k5e3_k7e6,k7e6

(resolution, then one `_`-separated group per unit, blocks separated by `,`), which is shell
safe and round-trips exactly.

The genome is the fixed-length integer form used by search and predictors (one row per arch):

    [resolution index | depth index per unit | kernel index per slot | expand index per slot]

with slots = units x max depth. Slots beyond a unit's depth hold 0, so every Arch has exactly
one genome and equal genomes mean equal archs. All random operations take a numpy Generator.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from edgenas.errors import ArchError, ConfigError
from edgenas.space.space import SearchSpace, _num
from edgenas.validate import echo

Block = tuple[int, float]  # (kernel size, expand ratio)


@dataclass(frozen=True)
class Arch:
    resolution: int
    units: tuple[tuple[Block, ...], ...]  # per unit, the active blocks in order

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(u) for u in self.units)

    def __str__(self) -> str:
        groups = [",".join(f"k{k}e{_num(e)}" for k, e in unit) for unit in self.units]
        return f"r{self.resolution}_" + "_".join(groups)

    @classmethod
    def parse(cls, text: str, space: SearchSpace) -> "Arch":
        """Parse the string form and validate it against `space`."""
        text = str(text).strip()
        if len(text) > 4000:
            raise ArchError(f"cannot read arch {echo(text)}: got {len(text)} characters, expected an arch string")
        parts = text.split("_")
        m = re.fullmatch(r"r([0-9]{1,5})", parts[0])  # ASCII digits only: int() would also read '٢٨'
        if not m or len(parts) < 2:
            raise ArchError(
                f"cannot read arch {echo(text)}: expected 'r<resolution>_<unit>_<unit>...' with blocks like k3e4 "
                f"separated by ',' and ASCII digits (e.g. {echo(space_example(space))[1:-1]})"
            )
        units = []
        for u, group in enumerate(parts[1:]):
            blocks = []
            for b, token in enumerate(group.split(",")):
                bm = re.fullmatch(r"k([0-9]{1,3})e([0-9]{1,3}(?:\.[0-9]{1,6})?)", token)
                if not bm:
                    raise ArchError(f"cannot read block {echo(token)} of unit {u + 1} in arch {echo(text)}: "
                                    f"expected k<kernel>e<expand> in ASCII digits, e.g. k5e4")
                blocks.append((int(bm.group(1)), _num(float(bm.group(2)))))
            units.append(tuple(blocks))
        arch = cls(int(m.group(1)), tuple(units))
        validate(arch, space)
        return arch


def space_example(space: SearchSpace) -> str:
    k, e, d = space.kernel_sizes[0], space.expand_ratios[0], space.depths[0]
    unit = ",".join([f"k{k}e{_num(e)}"] * d)
    return f"r{space.resolutions[0]}_" + "_".join([unit] * len(space.units))


def validate(arch: Arch, space: SearchSpace) -> Arch:
    """Raise ArchError naming the field, the unit/block and the allowed values."""
    if arch.resolution not in space.resolutions:
        raise ArchError(f"resolution {arch.resolution} is not in space {space.name}: allowed {list(space.resolutions)}")
    if len(arch.units) != len(space.units):
        raise ArchError(f"arch has {len(arch.units)} units but space {space.name} has {len(space.units)}")
    for u, unit in enumerate(arch.units):
        if len(unit) not in space.depths:
            raise ArchError(f"depth {len(unit)} of unit {u + 1} is not allowed in space {space.name}: allowed {list(space.depths)}")
        for b, (k, e) in enumerate(unit):
            if k not in space.kernel_sizes:
                raise ArchError(f"kernel size {k} of unit {u + 1} block {b + 1} is not allowed: allowed {list(space.kernel_sizes)}")
            if e not in space.expand_ratios:
                raise ArchError(
                    f"expand ratio {_num(e)} of unit {u + 1} block {b + 1} is not allowed: allowed {[_num(x) for x in space.expand_ratios]}"
                )
    return arch


def make_arch(space: SearchSpace, resolution: int, kernels: Sequence[int], expands: Sequence[float], depths: Sequence[int]) -> Arch:
    """From OFA-style lists: one kernel and expand per slot (units x max depth) and a depth per unit."""
    dmax = space.max_depth
    if len(kernels) != space.num_slots or len(expands) != space.num_slots or len(depths) != len(space.units):
        raise ArchError(
            f"expected {space.num_slots} kernel sizes, {space.num_slots} expand ratios and {len(space.units)} depths, "
            f"got {len(kernels)}, {len(expands)} and {len(depths)}"
        )
    units = tuple(
        tuple((int(kernels[u * dmax + j]), _num(expands[u * dmax + j])) for j in range(d)) for u, d in enumerate(depths)
    )
    return validate(Arch(int(resolution), units), space)


def largest(space: SearchSpace, resolution: int | None = None) -> Arch:
    block = (max(space.kernel_sizes), max(space.expand_ratios))
    return Arch(resolution or max(space.resolutions), tuple((block,) * space.max_depth for _ in space.units))


def smallest(space: SearchSpace, resolution: int | None = None) -> Arch:
    block = (min(space.kernel_sizes), min(space.expand_ratios))
    return Arch(resolution or min(space.resolutions), tuple((block,) * min(space.depths) for _ in space.units))


# ---- genome: the fixed-length integer encoding -----------------------------------------------

class Genome:
    """Index layout of the genome of a space (see the module docstring)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.n_units = len(space.units)
        self.n_slots = space.num_slots
        self.res = 0
        self.depth = slice(1, 1 + self.n_units)
        self.kernel = slice(1 + self.n_units, 1 + self.n_units + self.n_slots)
        self.expand = slice(1 + self.n_units + self.n_slots, 1 + self.n_units + 2 * self.n_slots)
        self.length = 1 + self.n_units + 2 * self.n_slots
        # Number of choices per gene, for sampling.
        self.choices = np.array(
            [len(space.resolutions)] + [len(space.depths)] * self.n_units
            + [len(space.kernel_sizes)] * self.n_slots + [len(space.expand_ratios)] * self.n_slots
        )
        self._depth_values = np.array(space.depths)
        self._slot_pos = np.tile(np.arange(space.max_depth), self.n_units)  # position of each slot in its unit
        self._slot_unit = np.repeat(np.arange(self.n_units), space.max_depth)

    def active_mask(self, genomes: np.ndarray) -> np.ndarray:
        """(n, slots) bool: which block slots are inside their unit's depth."""
        depths = self._depth_values[genomes[:, self.depth]]  # (n, units)
        return self._slot_pos[None, :] < depths[:, self._slot_unit]

    def canonical(self, genomes: np.ndarray) -> np.ndarray:
        """Zero the genes of inactive slots (in place) so each arch has one genome."""
        inactive = ~self.active_mask(genomes)
        genomes[:, self.kernel][inactive] = 0
        genomes[:, self.expand][inactive] = 0
        return genomes

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform genes everywhere, not canonicalised (the caller decides)."""
        return (rng.random((n, self.length)) * self.choices).astype(np.int64)


def genome_of(space: SearchSpace) -> Genome:
    cache = space.__dict__.setdefault("_genome_cache", {})
    if "g" not in cache:
        cache["g"] = Genome(space)
    return cache["g"]


def encode(space: SearchSpace, archs: Iterable[Arch]) -> np.ndarray:
    """Archs -> (n, genome length) int64 array."""
    g = genome_of(space)
    res_index = {r: i for i, r in enumerate(space.resolutions)}
    depth_index = {d: i for i, d in enumerate(space.depths)}
    k_index = {k: i for i, k in enumerate(space.kernel_sizes)}
    e_index = {e: i for i, e in enumerate(space.expand_ratios)}
    archs = list(archs)
    out = np.zeros((len(archs), g.length), dtype=np.int64)
    dmax = space.max_depth
    for row, arch in enumerate(archs):
        try:
            out[row, 0] = res_index[arch.resolution]
            for u, unit in enumerate(arch.units):
                out[row, 1 + u] = depth_index[len(unit)]
                for j, (k, e) in enumerate(unit):
                    out[row, g.kernel.start + u * dmax + j] = k_index[k]
                    out[row, g.expand.start + u * dmax + j] = e_index[e]
        except KeyError:
            validate(arch, space)  # raises the precise error
            raise
    return out


def decode(space: SearchSpace, genomes: np.ndarray) -> list[Arch]:
    """(n, genome length) -> Archs. Genes of inactive slots are ignored."""
    g = genome_of(space)
    genomes = np.asarray(genomes)
    dmax = space.max_depth
    res, dep, ks, es = space.resolutions, space.depths, space.kernel_sizes, space.expand_ratios
    archs = []
    for row in genomes.tolist():
        units = []
        for u in range(g.n_units):
            d = dep[row[1 + u]]
            base = u * dmax
            units.append(tuple((ks[row[g.kernel.start + base + j]], es[row[g.expand.start + base + j]]) for j in range(d)))
        archs.append(Arch(res[row[0]], tuple(units)))
    return archs


def features(space: SearchSpace, genomes: np.ndarray) -> np.ndarray:
    """One-hot predictor features (float32): per slot kernel and expand one-hots (zero when the
    slot is inactive), then the resolution one-hot. Fixed length for a space."""
    g = genome_of(space)
    genomes = np.asarray(genomes)
    n = genomes.shape[0]
    active = g.active_mask(genomes)
    nk, ne, nr = len(space.kernel_sizes), len(space.expand_ratios), len(space.resolutions)
    k_onehot = np.zeros((n, g.n_slots, nk), np.float32)
    e_onehot = np.zeros((n, g.n_slots, ne), np.float32)
    rows, slots = np.nonzero(active)
    k_onehot[rows, slots, genomes[:, g.kernel][rows, slots]] = 1.0
    e_onehot[rows, slots, genomes[:, g.expand][rows, slots]] = 1.0
    r_onehot = np.zeros((n, nr), np.float32)
    r_onehot[np.arange(n), genomes[:, 0]] = 1.0
    return np.concatenate([k_onehot.reshape(n, -1), e_onehot.reshape(n, -1), r_onehot], axis=1)


# ---- a subset of the resolutions (those a supernet was trained at) ------------------------------

def resolution_indices(space: SearchSpace, resolutions: Sequence[int] | None) -> np.ndarray:
    """Indices (ascending) into `space.resolutions` of `resolutions` (default: all of them);
    a resolution the space lacks is a ConfigError naming the ones it offers."""
    if resolutions is None:
        return np.arange(len(space.resolutions))
    unknown = sorted(set(resolutions) - set(space.resolutions))
    if unknown or not resolutions:
        offers = ", ".join(map(str, space.resolutions))
        raise ConfigError(f"{space.name} has no resolution {', '.join(map(str, unknown))}; it offers {offers}"
                          if unknown else f"no resolution given; {space.name} offers {offers}")
    return np.array(sorted(space.resolutions.index(r) for r in set(resolutions)), np.int64)


def redraw_resolutions(genomes: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`genomes` (in place) with each resolution gene outside `allowed` (indices) drawn uniformly
    among them, so sampled and mutated genes stay uniform over what is allowed. Nothing is drawn
    when every gene is allowed already."""
    bad = ~np.isin(genomes[:, 0], allowed)
    if bad.any():
        genomes[bad, 0] = allowed[rng.integers(len(allowed), size=int(bad.sum()))]
    return genomes


# ---- seeded sampling, mutation, crossover (vectorised over rows) --------------------------------

def sample_genomes(space: SearchSpace, rng: np.random.Generator, n: int) -> np.ndarray:
    g = genome_of(space)
    return g.canonical(g.random(rng, n))


def mutate_genomes(space: SearchSpace, genomes: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Resample each gene with probability `prob`. Blocks that a deeper depth brings in get
    random genes rather than the canonical zeros."""
    g = genome_of(space)
    genomes = np.asarray(genomes)
    out = genomes.copy()
    inactive = ~g.active_mask(out)
    fresh = g.random(rng, len(out))
    slots = np.concatenate([inactive, inactive], axis=1)
    gene_slots = out[:, g.kernel.start:]
    gene_slots[slots] = fresh[:, g.kernel.start:][slots]
    flip = rng.random(out.shape) < prob
    out[flip] = g.random(rng, len(out))[flip]
    return g.canonical(out)


def crossover_genomes(space: SearchSpace, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each gene from either parent with equal chance (uniform crossover)."""
    g = genome_of(space)
    a, b = np.asarray(a).copy(), np.asarray(b).copy()
    # Give inactive slots random genes first, so a deeper child does not inherit canonical zeros.
    for parent in (a, b):
        inactive = np.concatenate([~g.active_mask(parent)] * 2, axis=1)
        tail = parent[:, g.kernel.start:]
        tail[inactive] = g.random(rng, len(parent))[:, g.kernel.start:][inactive]
    take_a = rng.random(a.shape) < 0.5
    return g.canonical(np.where(take_a, a, b))


def sample(space: SearchSpace, rng: np.random.Generator, n: int | None = None) -> Arch | list[Arch]:
    """One random arch (n=None) or a list of n, uniform per gene."""
    archs = decode(space, sample_genomes(space, rng, 1 if n is None else n))
    return archs[0] if n is None else archs


def mutate(space: SearchSpace, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch:
    return decode(space, mutate_genomes(space, encode(space, [arch]), rng, prob))[0]


def crossover(space: SearchSpace, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    return decode(space, crossover_genomes(space, encode(space, [a]), encode(space, [b]), rng))[0]
