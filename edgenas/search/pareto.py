"""Pareto fronts and 2-D hypervolume (all objectives minimised)."""
from __future__ import annotations

import numpy as np


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of F (n, m) that no other row dominates (all <=, one <).
    Duplicated rows are all kept."""
    F = np.asarray(F, np.float64)
    n = len(F)
    if n == 0:
        return np.zeros(0, bool)
    if F.shape[1] == 2:
        # Sort by the first objective (ties: the second); a row is on the front when its second
        # objective beats every row before it, or equals the row before it exactly.
        order = np.lexsort((F[:, 1], F[:, 0]))
        f = F[order]
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], f[:-1, 1]]))
        same_as_prev = np.concatenate([[False], (f[1:] == f[:-1]).all(1)])
        keep = (f[:, 1] < best_before) | same_as_prev
        # A duplicate of a dominated row is itself dominated.
        for i in np.nonzero(same_as_prev)[0]:
            keep[i] = keep[i - 1]
        mask = np.zeros(n, bool)
        mask[order[keep]] = True
        return mask
    mask = np.ones(n, bool)
    for start in range(0, n, 512):  # chunked pairwise comparison for m > 2
        block = F[start:start + 512]
        le = (F[None, :, :] <= block[:, None, :]).all(2)
        lt = (F[None, :, :] < block[:, None, :]).any(2)
        mask[start:start + 512] = ~(le & lt).any(1)
    return mask


def hypervolume_2d(F: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by the points of F (n, 2) and bounded by `reference` (minimisation)."""
    F = np.asarray(F, np.float64)
    F = F[(F[:, 0] < reference[0]) & (F[:, 1] < reference[1])]
    if len(F) == 0:
        return 0.0
    F = F[non_dominated(F)]
    F = F[np.lexsort((F[:, 1], F[:, 0]))]
    widths = np.diff(np.concatenate([F[:, 0], [reference[0]]]))
    return float((widths * (reference[1] - F[:, 1])).sum())
