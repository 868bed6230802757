"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST ...) from a directory, each optionally gzipped.

IDX format: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in C order, big-endian. Images are [N, H, W] uint8; labels [N] uint8.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from edgenas.data.config import DataConfig
from edgenas.data.sources import Source
from edgenas.data.splits import Pool
from edgenas.errors import DataError
from edgenas.validate import read_bytes, user_path

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX type code -> big-endian numpy dtype.
DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
HINT = "(Fashion-MNIST: apt-get install dataset-fashion-mnist, files under /usr/share/datasets/fashion-mnist)"


def parse_idx(data: bytes, where: str) -> np.ndarray:
    """Decode the bytes of one IDX file into an array, checking the header against the size."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES:
        raise DataError(f"{where} is not an IDX file: it does not start with the magic number 0x0000 followed by a known type code")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{where} is a corrupt IDX file: its header declares {ndim} dimensions but is cut short")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(DTYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: np.prod would wrap around
    if len(data) != expected:
        raise DataError(f"{where} is a corrupt IDX file: dimensions {dims} need {expected} bytes but it has {len(data)}")
    # A native-byte-order, writable copy (the buffer view is read-only and big-endian).
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


MAX_IDX_BYTES = 4 << 30  # after gunzipping; the MNIST training images are 47 MB


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file, gunzipping it when its name ends in .gz (at most MAX_IDX_BYTES either way)."""
    data = read_bytes(path, "IDX file", MAX_IDX_BYTES, error=DataError)
    if path.suffix == ".gz":
        try:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflate.decompress(data, MAX_IDX_BYTES + 1)
        except zlib.error as exc:
            raise DataError(f"cannot read {path}: got a corrupt gzip file ({exc}), expected a gzipped IDX file") from None
        if len(out) > MAX_IDX_BYTES:
            raise DataError(f"cannot read {path}: got more than {MAX_IDX_BYTES} bytes once gunzipped, expected an IDX file")
        if not inflate.eof:
            raise DataError(f"cannot read {path}: got a truncated gzip file, expected a gzipped IDX file")
        data = out
    return parse_idx(data, str(path))


def find_files(root: Path) -> dict[str, Path]:
    """The four IDX files in `root` (plain preferred over .gz), or a DataError saying which are missing."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: got a file, expected the directory holding the IDX files {HINT}")
    if not root.is_dir():
        raise DataError(f"IDX dataset directory {root} does not exist {HINT}")
    found: dict[str, Path] = {}
    for key, stem in FILES.items():
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                found[key] = root / name
                break
    missing = [FILES[k] + "[.gz]" for k in FILES if k not in found]
    if len(missing) == len(FILES):
        raise DataError(f"no IDX files in {root}: expected {', '.join(missing)} {HINT}")
    if missing:
        raise DataError(f"IDX directory {root} lacks {', '.join(missing)}")
    return found


def load(cfg: DataConfig) -> Source:
    root = user_path(cfg.path, "IDX dataset directory", DataError)
    files = find_files(root)
    arrays = {key: read_idx(path) for key, path in files.items()}
    pools = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = files[f"{split}_images"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{where} must hold uint8 images [N, H, W], but holds {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{files[f'{split}_labels']} must hold one label per image of {where} ({len(images)}), but has shape {labels.shape}")
        if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
            raise DataError(f"{files[f'{split}_labels']} must hold non-negative integer labels, but holds {labels.dtype} values")
        pools[split] = Pool(labels=labels.astype(np.int64), images=images[:, None])
    if pools["train"].images.shape[2:] != pools["test"].images.shape[2:]:
        raise DataError(f"train and test images in {root} differ in size: {pools['train'].images.shape[2:]} vs {pools['test'].images.shape[2:]}")
    num_classes = int(max(pools["train"].labels.max(initial=0), pools["test"].labels.max(initial=0))) + 1
    # Fashion-MNIST: "fashion" in the last three path parts (fashion-mnist/, FashionMNIST/raw/ ...).
    is_fashion = "fashion" in "/".join(root.absolute().parts[-3:]).lower() and num_classes <= len(FASHION_CLASSES)
    names = FASHION_CLASSES if is_fashion else [str(i) for i in range(max(num_classes, 10))]
    return Source(train=pools["train"], val=None, test=pools["test"], class_names=list(names),
                  native_size=int(pools["train"].images.shape[2]))
