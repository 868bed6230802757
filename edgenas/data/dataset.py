"""The dataset interface every consumer uses: `ImageDataset`, its splits, and batching helpers.

A split yields `(image, label)`: a float32 tensor [3, H, W] normalised with the dataset's
per-channel `mean` and `std`, and an int class index. Grayscale images are replicated to three
channels, so every model has a 3-channel input.

Two kinds of split:
- `TensorSplit` holds its pixels in memory as uint8 (4x smaller than float) and normalises a
  batch at a time; `.tensors()` materialises the whole split as float32 when a caller wants it.
- `FileSplit` reads and decodes each image from disk when it is used (large image folders).
`batches()` indexes a `TensorSplit` directly (fast on CPU) and goes through a DataLoader otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from edgenas.data.config import DataConfig
from edgenas.errors import ConfigError

SPLITS = ("train", "val", "test")

Stats = tuple[float, float, float]


class _Normalized(Dataset):
    """Shared part of both splits: labels and the uint8 -> normalised float conversion."""

    def __init__(self, labels: np.ndarray, mean: Stats, std: Stats):
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))  # int64 [N]
        self.mean = tuple(mean)  # per-channel mean of pixel/255, 3 values
        self.std = tuple(std)  # per-channel standard deviation of pixel/255, 3 values
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] (C = 1 or 3) -> normalised float32 [B, 3, H, W]."""
        x = pixels.to(torch.float32).div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self._mean) / self._std


class TensorSplit(_Normalized):
    """A split held in memory: `pixels` uint8 [N, C, H, W], C = 1 (grayscale) or 3 (RGB)."""

    def __init__(self, pixels: torch.Tensor, labels: np.ndarray, mean: Stats, std: Stats):
        super().__init__(labels, mean, std)
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or len(pixels) != len(self.labels):
            raise ValueError(f"expected uint8 [N, C, H, W] pixels for {len(self.labels)} labels, got {pixels.dtype} {tuple(pixels.shape)}")
        self.pixels = pixels

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.pixels[i : i + 1])[0], int(self.labels[i])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images float32 [B, 3, H, W] and labels int64 [B] at `indices`."""
        return self.normalize(self.pixels[indices]), self.labels[indices]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split: images float32 [N, 3, H, W] normalised, labels int64 [N] (N*3*H*W*4 bytes)."""
        return self.normalize(self.pixels), self.labels.clone()


class FileSplit(_Normalized):
    """A split read from disk one image at a time with `decode(path, image_size) -> uint8 [C, H, W]`."""

    def __init__(
        self,
        files: Sequence[Path],
        labels: np.ndarray,
        image_size: int,
        mean: Stats,
        std: Stats,
        decode: Callable[[Path, int], np.ndarray],
    ):
        super().__init__(labels, mean, std)
        self.files = list(files)
        self.image_size = image_size
        self.decode = decode

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(self.decode(self.files[i], self.image_size))
        return self.normalize(pixels[None])[0], int(self.labels[i])


@dataclass
class ImageDataset:
    """A loaded dataset: three splits and what a model needs to know about them."""

    # Source name from the config: "digits", "idx", "imagefolder" or "cifar10".
    name: str
    # Training split; yields (float32 [3, H, W] normalised, int label).
    train: TensorSplit | FileSplit
    # Validation split (carved out of the training pool when the source has none).
    val: TensorSplit | FileSplit
    # Test split (a fixed 20% of the training pool when the source has none).
    test: TensorSplit | FileSplit
    # Number of classes; labels are 0 .. num_classes - 1.
    num_classes: int
    # Human-readable name of every class, indexed by label.
    class_names: list[str]
    # Side of the square images, in pixels.
    image_size: int
    # Per-channel mean of pixel/255 over the training split (3 values; see `channel_stats`).
    mean: Stats
    # Per-channel standard deviation of pixel/255 over the training split (3 values).
    std: Stats
    # The config this dataset was loaded from.
    config: DataConfig

    def split(self, name: str) -> TensorSplit | FileSplit:
        """The split called `name`: "train", "val" or "test"."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; expected one of: {', '.join(SPLITS)}")
        return getattr(self, name)

    def batches(self, split: str, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False, num_workers: int = 0,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`batches()` on the split called `split`."""
        return batches(self.split(split), batch_size, shuffle, generator, drop_last, num_workers)

    def sample_images(self, split: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`sample_images()` on the split called `split`."""
        return sample_images(self.split(split), n, generator)

    def describe(self) -> str:
        """One line for logs: name, classes, size and split sizes."""
        return (f"{self.name}: {self.num_classes} classes, {self.image_size}x{self.image_size}, "
                f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}")


def batches(
    split: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images float32 [B, 3, H, W], labels int64 [B]) over `split`.

    Shuffling draws from `generator`, which is required when `shuffle` is true, so every epoch's
    order is reproducible and no global random state is used. In-memory splits are indexed
    directly; others go through a DataLoader with `num_workers` worker processes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if shuffle and generator is None:
        raise ValueError("shuffle=True needs a torch.Generator, so the order is reproducible")
    if isinstance(split, TensorSplit):
        return _tensor_batches(split, batch_size, shuffle, generator, drop_last)
    loader = DataLoader(split, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        drop_last=drop_last, num_workers=num_workers)
    return iter(loader)


def _tensor_batches(split: TensorSplit, batch_size: int, shuffle: bool,
                    generator: torch.Generator | None, drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield split.batch(order[start : start + batch_size])


def sample_images(split: Dataset, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """min(n, len(split)) distinct normalised images float32 [n, 3, H, W] (BN recalibration, int8 calibration).

    With a generator they are drawn at random; without one they are the split's first n images.
    """
    count = min(n, len(split))
    if count < 1:
        raise ValueError(f"cannot sample {n} images from a split of {len(split)}")
    indices = torch.randperm(len(split), generator=generator)[:count] if generator is not None else torch.arange(count)
    if isinstance(split, TensorSplit):
        return split.batch(indices)[0]
    return torch.stack([split[int(i)][0] for i in indices])


def resize_pixels(pixels: np.ndarray, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, h, w] -> uint8 [N, C, size, size], bilinear (antialiased when shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(pixels))
    n, c, h, w = t.shape
    if (h, w) == (size, size):
        return t
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        x = t[start : start + chunk].to(torch.float32)
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < max(h, w))
        out[start : start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(chunks: Iterable[torch.Tensor]) -> tuple[Stats, Stats]:
    """Per-channel mean and std of pixel/255 over uint8 chunks [B, C, H, W]; grayscale gives 3 equal values."""
    total = None
    squares = None
    count = 0
    for chunk in chunks:
        x = chunk.to(torch.float64).div_(255.0)
        s, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        squares = sq if squares is None else squares + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if total is None or count == 0:
        raise ValueError("cannot compute normalisation statistics of an empty training split")
    mean = total / count
    std = (squares / count - mean * mean).clamp_(min=0).sqrt_().clamp_(min=1e-6)
    if len(mean) == 1:
        mean, std = mean.expand(3), std.expand(3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
