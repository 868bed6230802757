"""What every strategy works on: the space, a memoised accuracy evaluator, the constraints and
the cost objectives (NSGA-II)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgenas.search.constraints import Constraints
from edgenas.search.objectives import ArchBatch, Metric
from edgenas.space import SearchSpace, genome_of


class Evaluator:
    """Calls the objective metric once per distinct architecture, keeps every result (the
    archive), and counts evaluations against an optional budget. Returns fitness: the metric's
    values when its goal is "max", their negation when it is "min" (strategies maximise)."""

    def __init__(self, space: SearchSpace, metric: Metric, max_evals: int | None = None):
        self.space = space
        self.metric = metric
        self.max_evals = max_evals
        self._index: dict[int, int] = {}
        self._genome = genome_of(space)
        self._hash = np.random.default_rng(0x5EED).integers(1, 2**63, self._genome.length, dtype=np.uint64) | np.uint64(1)
        self._genomes = np.zeros((1024, self._genome.length), np.int64)
        self._values = np.zeros(1024, np.float64)
        self.count = 0
        self.sign = 1.0 if metric.goal == "max" else -1.0

    @property
    def exhausted(self) -> bool:
        return self.max_evals is not None and self.count >= self.max_evals

    @property
    def remaining(self) -> int | None:
        return None if self.max_evals is None else max(0, self.max_evals - self.count)

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """Fitness of each genome; genes of blocks outside a unit's depth are ignored."""
        genomes = self._genome.canonical(np.array(genomes, dtype=np.int64))
        # Key each row by a 64-bit hash (a random linear map, wrapping); rows found in the
        # archive are compared gene by gene below, so a collision cannot pass unnoticed.
        keys = (genomes.astype(np.uint64) @ self._hash).tolist()
        index = self._index
        fresh: dict[int, int] = {}
        for i, k in enumerate(keys):
            if k not in index and k not in fresh:
                fresh[k] = i
        if fresh:
            rows = np.fromiter(fresh.values(), np.int64, len(fresh))
            values = self.metric(ArchBatch(self.space, genomes[rows]))
            self._append(genomes[rows], values)
            index.update(zip(fresh, range(self.count - len(rows), self.count)))
        idx = np.fromiter(map(index.__getitem__, keys), np.int64, len(keys))
        if not np.array_equal(self._genomes[idx], genomes):
            raise RuntimeError("two different architectures got the same archive key")  # pragma: no cover
        return self.sign * self._values[idx]

    def _append(self, genomes: np.ndarray, values: np.ndarray) -> None:
        end = self.count + len(genomes)
        if end > len(self._values):
            size = max(end, 2 * len(self._values))
            self._genomes = np.resize(self._genomes, (size, self._genomes.shape[1]))
            self._values = np.resize(self._values, size)
        self._genomes[self.count:end] = genomes
        self._values[self.count:end] = values
        self.count = end

    @property
    def genomes(self) -> np.ndarray:
        """Every distinct genome evaluated so far, in evaluation order."""
        return self._genomes[:self.count]

    @property
    def values(self) -> np.ndarray:
        """The metric's values for `genomes` (not sign-adjusted)."""
        return self._values[:self.count]


@dataclass
class Problem:
    space: SearchSpace
    evaluate: Evaluator  # accuracy, maximised
    constraints: Constraints
    objectives: list[Metric] = field(default_factory=list)  # costs, minimised (NSGA-II)
    # Records a strategy adds to the results file (e.g. "differentiable": its run); "note" is
    # appended to the result's note.
    extra: dict = field(default_factory=dict)
