"""CIFAR-10, "python version": pickled batches data_batch_1..5, test_batch and batches.meta.

Each batch is a dict with b"data" (uint8 [N, 3072], channel-major 3x32x32) and b"labels" (N ints).
The path is the `cifar-10-batches-py` directory or its parent. Unpickling is restricted to the
numpy classes these files need, so a hostile file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.data.config import DataConfig
from edgenas.data.sources import Source
from edgenas.data.splits import Pool
from edgenas.errors import DataError
from edgenas.validate import read_bytes, user_path

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
SUBDIR = "cifar-10-batches-py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The only globals a CIFAR batch pickle refers to: numpy arrays (under numpy 1 and 2 module names,
# pickle protocols 2 to 5) and the bytes encoder that Python 3's protocol 2 uses.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((f"numpy.{core}.{mod}", name) for core in ("core", "_core")
      for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


MAX_BATCH_BYTES = 1 << 30  # a CIFAR-10 batch is 31 MB


def read_batch(path: Path) -> dict:
    """Unpickle one batch file (keys stay bytes, as the files were written by Python 2).

    The file is read whole (at most MAX_BATCH_BYTES), its opcodes are scanned without building
    anything (so a pickle that declares a 2**62-byte object is an error, not a MemoryError), and
    only numpy's array classes may be loaded."""
    data = read_bytes(path, "CIFAR-10 python batch (a pickled dict)", MAX_BATCH_BYTES, error=DataError)
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except Exception as exc:  # pickletools reports declared lengths beyond the data as ValueError
        raise DataError(f"{path}: got a corrupt or truncated pickle ({str(exc)[:80]}), "
                        f"expected a CIFAR-10 python batch") from None
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, RecursionError) as exc:
        raise DataError(f"{path}: got a pickle that is not a CIFAR-10 python batch ({type(exc).__name__}: "
                        f"{str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: got a pickled {type(obj).__name__}, expected a CIFAR-10 python batch (a dict)")
    return obj


def _pool(path: Path) -> Pool:
    batch = read_batch(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch: it lacks the b'data' or b'labels' entry")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path} must hold uint8 data [N, 3072] and N labels, but holds {data.dtype} {data.shape} and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path} has labels outside 0..9")
    return Pool(labels=labels, images=data.reshape(-1, 3, 32, 32))


def find_dir(path: Path) -> Path:
    """The directory holding the batches: `path` itself or `path/cifar-10-batches-py`."""
    for candidate in (path, path / SUBDIR):
        if (candidate / TRAIN_BATCHES[0]).is_file():
            return candidate
    raise DataError(
        f"no CIFAR-10 batches in {path}: expected {', '.join(TRAIN_BATCHES)} and {TEST_BATCH} there or in "
        f"{path / SUBDIR} (the python version from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked)"
    )


def load(cfg: DataConfig) -> Source:
    root = find_dir(user_path(cfg.path, "CIFAR-10 directory", DataError))
    missing = [n for n in TRAIN_BATCHES + [TEST_BATCH] if not (root / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 directory {root} lacks {', '.join(missing)}")
    parts = [_pool(root / n) for n in TRAIN_BATCHES]
    train = Pool(labels=np.concatenate([p.labels for p in parts]), images=np.concatenate([p.images for p in parts]))
    names = CLASSES
    if (root / META).is_file():
        meta = read_batch(root / META).get(b"label_names")
        if isinstance(meta, list) and len(meta) == len(CLASSES):
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta]
    return Source(train=train, val=None, test=_pool(root / TEST_BATCH), class_names=list(names), native_size=32)
