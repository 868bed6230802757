"""The embedded default: scikit-learn's handwritten digits (1797 8x8 grayscale images, 10 classes).

Pixel values 0..16 are scaled to 0..255 so every source shares the uint8 pipeline; the images are
upsampled (bilinear) to `image_size`, 32 by default. There is no test split in the source, so
`splits.carve` holds out a fixed 20% as test.
"""
from __future__ import annotations

import numpy as np

from edgenas.data.config import DataConfig
from edgenas.data.sources import Source
from edgenas.data.splits import Pool


def load(cfg: DataConfig) -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    pool = Pool(labels=bunch.target.astype(np.int64), images=images)
    return Source(train=pool, val=None, test=None, class_names=[str(i) for i in range(10)], native_size=32)
