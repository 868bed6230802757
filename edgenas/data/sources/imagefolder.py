"""A folder of image files, one subfolder per class, read with Pillow.

Layouts:
- `root/train/<class>/*.png|jpg|...`, optionally with `root/val/<class>/...` and `root/test/<class>/...`;
- `root/<class>/*.png|jpg|...`, split into train / val / test by `splits.carve`.
Classes are the subfolders of train (or of the root), sorted by name. Every image is converted
to RGB, its shorter side resized (bilinear) to `image_size`, and the centre square cropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgenas.data.config import DataConfig
from edgenas.data.sources import Source
from edgenas.data.splits import Pool
from edgenas.validate import user_path
from edgenas.errors import DataError, MissingDependencyError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LAYOUT = "train/<class>/*.png (or .jpg ...), optionally with val/ and test/, or <class>/*.png at the top level"


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError("Pillow is not installed; image folders need it: pip install pillow") from exc
    return Image


def decode(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 [3, size, size]: RGB, shorter side resized to `size`, centre crop."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.resize((nw, nh), Image.BILINEAR).crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> Pool:
    """Every image under folder/<class>/ (recursively), labelled by its class's index."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        found = sorted(p for p in class_dir.rglob("*")
                       if p.suffix.lower() in EXTENSIONS and p.is_file() and not p.name.startswith("."))
        files += found
        labels += [label] * len(found)
    return Pool(labels=np.asarray(labels, dtype=np.int64), files=files)


def load(cfg: DataConfig) -> Source:
    _pil()  # fail early, before scanning, when Pillow is missing
    root = user_path(cfg.path, "image folder", DataError)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: got a file, expected an image folder: {LAYOUT}")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: expected {LAYOUT}")
    has_splits = (root / "train").is_dir()
    train_dir = root / "train" if has_splits else root
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"no class folders in {train_dir}: expected {LAYOUT}")
    pools: dict[str, Pool | None] = {"train": _scan(train_dir, classes), "val": None, "test": None}
    for split in ("val", "test") if has_splits else ():
        folder = root / split
        if folder.is_dir():
            extra = sorted(set(_class_dirs(folder)) - set(classes))
            if extra:
                raise DataError(f"{folder} has class folders that {train_dir} lacks: {', '.join(extra)}")
            pools[split] = _scan(folder, classes)
    for split, pool in pools.items():
        if pool is not None and len(pool) == 0:
            folder = train_dir if split == "train" else root / split
            raise DataError(f"no images in the class folders of {folder}: expected {LAYOUT}")
    return Source(train=pools["train"], val=pools["val"], test=pools["test"], class_names=classes,
                  native_size=32, decode=decode)
