"""Datasets: one interface for training, evaluation, BN recalibration, predictors and export calibration.

    from edgenas.data import DataConfig, load_dataset, batches
    ds = load_dataset(DataConfig(name="digits"))           # embedded, no download
    for x, y in ds.batches("train", 64, shuffle=True, generator=torch.Generator().manual_seed(0)):
        ...                                                 # x float32 [64, 3, 32, 32], y int64 [64]

Sources: "digits" (scikit-learn's 8x8 digits, resized), "idx" (MNIST / Fashion-MNIST files),
"imagefolder" (class subfolders of images), "cifar10" (the python-version batches).

Normalisation: `mean` and `std` are computed per channel over the training split (after the val
split and `limit` are taken out), on pixel/255; for an image folder streamed from disk they come
from a seeded sample of at most `STATS_SAMPLE` training images. Grayscale sources get three equal
values, as their images are replicated to three channels.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

import numpy as np
import torch

from edgenas.data.config import SOURCES, DataConfig
from edgenas.data.dataset import (
    SPLITS, FileSplit, ImageDataset, TensorSplit, batches, channel_stats, resize_pixels, sample_images,
)
from edgenas.data.splits import TEST_FRACTION, Pool, carve
from edgenas.errors import DataError

__all__ = [
    "DataConfig", "ImageDataset", "TensorSplit", "FileSplit", "load_dataset", "batches", "sample_images",
    "SOURCES", "SPLITS", "TEST_FRACTION",
]

# Image folders with at most this many images are decoded up front when DataConfig.in_memory is None.
IN_MEMORY_MAX_FILES = 10_000
# Streamed image folders compute mean and std from this many training images at most.
STATS_SAMPLE = 500
_CHUNK = 4096


def load_dataset(cfg: DataConfig | Mapping[str, Any] | None = None) -> ImageDataset:
    """Load, split and normalise the dataset `cfg` names (a DataConfig, a dict, or None for digits)."""
    if cfg is None:
        cfg = DataConfig()
    elif not isinstance(cfg, DataConfig):
        cfg = DataConfig.from_dict(cfg)
    source = importlib.import_module(f"edgenas.data.sources.{cfg.name}").load(cfg)
    class_names = list(cfg.class_names) if cfg.class_names is not None else list(source.class_names)
    for split, pool in (("train", source.train), ("val", source.val), ("test", source.test)):
        if pool is not None and len(pool) and int(pool.labels.max()) >= len(class_names):
            raise DataError(f"the {split} labels of {cfg.name} go up to {int(pool.labels.max())}, "
                            f"but there are only {len(class_names)} class names: {', '.join(class_names)}")
    train, val, test = carve(source.train, source.val, source.test, cfg.val_fraction, cfg.seed, cfg.limit)
    if len(train) == 0:
        raise DataError(f"the {cfg.name} dataset at {cfg.path} leaves no training images after splitting")
    size = cfg.image_size or source.native_size

    streamed = source.decode is not None and not (
        cfg.in_memory if cfg.in_memory is not None
        else len(train) + len(val) + len(test) <= IN_MEMORY_MAX_FILES
    )
    if streamed:
        rng = np.random.default_rng(cfg.seed)
        sample = np.sort(rng.permutation(len(train))[:STATS_SAMPLE])
        mean, std = channel_stats(_decoded(train.take(sample), size, source.decode, chunk=64))
        splits = [FileSplit(p.files, p.labels, size, mean, std, source.decode) for p in (train, val, test)]
    else:
        pixels = [_pixels(p, size, source.decode) for p in (train, val, test)]
        mean, std = channel_stats(pixels[0][i : i + _CHUNK] for i in range(0, len(pixels[0]), _CHUNK))
        splits = [TensorSplit(px, p.labels, mean, std) for px, p in zip(pixels, (train, val, test))]

    return ImageDataset(name=cfg.name, train=splits[0], val=splits[1], test=splits[2],
                        num_classes=len(class_names), class_names=class_names, image_size=size,
                        mean=mean, std=std, config=cfg)


def _pixels(pool: Pool, size: int, decode) -> torch.Tensor:
    """All of a pool's images as uint8 [N, C, size, size]."""
    if pool.images is not None:
        return resize_pixels(pool.images, size)
    return torch.cat(list(_decoded(pool, size, decode, chunk=_CHUNK)) or [torch.empty((0, 3, size, size), dtype=torch.uint8)])


def _decoded(pool: Pool, size: int, decode, chunk: int):
    """Decode a pool of files, yielding uint8 chunks [B, 3, size, size]."""
    for start in range(0, len(pool), chunk):
        yield torch.from_numpy(np.stack([decode(f, size) for f in pool.files[start : start + chunk]]))
