"""A minimal lookup-table adaptor over OFA's published Note10 tables, for this benchmark only
(edgenas.latency.LatencyTable is the real one): per-slot arrays built from `arch_ops` keys, so
predicting a batch of genomes is a few gathers and a sum."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from edgenas.space import SearchSpace, arch_ops, genome_of, largest


class Note10Table:
    def __init__(self, space: SearchSpace, directory: Path, name: str = "note10"):
        self.name = name
        self.space = space
        g = genome_of(space)
        R, S = len(space.resolutions), space.num_slots
        K, E = len(space.kernel_sizes), len(space.expand_ratios)
        self.fixed = np.zeros(R)
        self.slot = np.zeros((R, S, K, E))
        self.luts = {}
        for ri, r in enumerate(space.resolutions):
            lut = yaml.safe_load((Path(directory) / f"{r}_lookup_table.yaml").read_text())
            self.luts[r] = {k: v["mean"] for k, v in lut.items()}
            for ki, k in enumerate(space.kernel_sizes):
                for ei, e in enumerate(space.expand_ratios):
                    full = largest(space, r)
                    arch = type(full)(r, tuple(((k, e),) * space.max_depth for _ in space.units))
                    ops = arch_ops(space, arch)
                    self.fixed[ri] = sum(self.luts[r][op.key] for op in ops[:2] + ops[-4:])
                    self.slot[ri, :, ki, ei] = [self.luts[r][op.key] for op in ops[2:-4]]
        self._g = g
        self._slots = np.arange(S)[None, :]

    def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
        g = self._g
        r = genomes[:, 0]
        per = self.slot[r[:, None], self._slots, genomes[:, g.kernel], genomes[:, g.expand]]
        return self.fixed[r] + np.where(g.active_mask(genomes), per, 0.0).sum(1)

    def predict_arch(self, arch) -> float:
        """Reference: sum of the table entries of every op (slow, for checking)."""
        return sum(self.luts[arch.resolution][op.key] for op in arch_ops(self.space, arch))
