"""Search spaces, the `Arch` format, its genome encoding and the cost model."""
from edgenas.space.arch import (
    Arch,
    crossover,
    crossover_genomes,
    decode,
    encode,
    features,
    genome_of,
    largest,
    make_arch,
    mutate,
    mutate_genomes,
    redraw_resolutions,
    resolution_indices,
    sample,
    sample_genomes,
    smallest,
    validate,
)
from edgenas.space.ops import Cost, CostTable, OpSpec, arch_cost, arch_ops
from edgenas.space.space import SearchSpace, UnitSpec, load_space, make_divisible, preset_names

__all__ = [
    "Arch", "Cost", "CostTable", "OpSpec", "SearchSpace", "UnitSpec", "arch_cost", "arch_ops", "crossover",
    "crossover_genomes", "decode", "encode", "features", "genome_of", "largest", "load_space", "make_arch",
    "make_divisible", "mutate", "mutate_genomes", "preset_names", "redraw_resolutions", "resolution_indices",
    "sample", "sample_genomes", "smallest", "validate",
]
