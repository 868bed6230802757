"""One module per dataset source. Each `load(cfg) -> Source` reads its files and returns pools at native size."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgenas.data.splits import Pool


@dataclass
class Source:
    """What a source delivers before splitting, resizing and normalising."""

    # The training pool (val and, when `test` is None, test are carved out of it).
    train: Pool
    # The source's own validation split, or None.
    val: Pool | None
    # The source's own test split, or None.
    test: Pool | None
    # Name of every class, indexed by label.
    class_names: list[str]
    # Image side used when DataConfig.image_size is None.
    native_size: int
    # For pools of files: decode(path, image_size) -> uint8 [C, image_size, image_size].
    decode: Callable[[Path, int], np.ndarray] | None = None
