"""Pools of images as a source delivers them, and the seeded carving of train / val / test.

Rules (the same for every source):
- A source without a test split gets `TEST_FRACTION` of its training pool as test, chosen with the
  fixed `TEST_SEED`, so test accuracy compares across runs whatever `DataConfig.seed` is.
- A source without a val split gets `val_fraction` of what remains as val, chosen with `cfg.seed`.
- `cfg.limit` then keeps a seeded subset of the training split.
All choices use a numpy `Generator`; no global random state is read or changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEST_FRACTION = 0.2
TEST_SEED = 20240601


@dataclass
class Pool:
    """One split as a source delivers it: images in memory or image files on disk."""

    # Class index of every image, int64 [N].
    labels: np.ndarray
    # uint8 [N, C, H, W] with C = 1 (grayscale) or 3 (RGB), at the source's native size; None when `files` is set.
    images: np.ndarray | None = None
    # One image file per label, decoded later; None when `images` is set.
    files: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Pool":
        """The images at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Pool(
            labels=self.labels[indices],
            images=None if self.images is None else self.images[indices],
            files=None if self.files is None else [self.files[i] for i in indices],
        )


def split_off(pool: Pool, fraction: float, rng: np.random.Generator) -> tuple[Pool, Pool]:
    """Split `pool` into (rest, held_out) with round(fraction * N) images held out at random.

    Both parts keep the pool's original order, which keeps reads from disk sequential.
    """
    n = len(pool)
    n_out = int(round(fraction * n)) if fraction > 0 else 0
    if fraction > 0 and n >= 2:
        n_out = min(max(n_out, 1), n - 1)  # never an empty side when both can have an image
    perm = rng.permutation(n)
    return pool.take(np.sort(perm[n_out:])), pool.take(np.sort(perm[:n_out]))


def subset(pool: Pool, limit: int, rng: np.random.Generator) -> Pool:
    """At most `limit` images of `pool`, chosen at random, in the pool's order."""
    if len(pool) <= limit:
        return pool
    return pool.take(np.sort(rng.permutation(len(pool))[:limit]))


def carve(
    train: Pool, val: Pool | None, test: Pool | None, val_fraction: float, seed: int, limit: int | None
) -> tuple[Pool, Pool, Pool]:
    """Apply the rules above: fill in missing test and val splits, then limit train."""
    if test is None:
        train, test = split_off(train, TEST_FRACTION, np.random.default_rng(TEST_SEED))
    rng = np.random.default_rng(seed)
    if val is None:
        train, val = split_off(train, val_fraction, rng)
    if limit is not None:
        train = subset(train, limit, rng)
    return train, val, test
