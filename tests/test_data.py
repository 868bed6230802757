"""The dataset layer: every source, the split rules, batching, and every user error."""
from __future__ import annotations

import gzip
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas.data import DataConfig, FileSplit, TensorSplit, batches, load_dataset, sample_images
from edgenas.errors import ConfigError, DataError, MissingDependencyError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig())


def _rows(split) -> set[bytes]:
    """Every image of an in-memory split as bytes, to compare splits by content."""
    return {p.numpy().tobytes() for p in split.pixels}


# ---------------------------------------------------------------- digits, splits, batching


def test_digits_shapes_normalisation_and_classes(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.image_size == 32
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == 359 and len(digits.val) == 144
    x, y = digits.train.tensors()
    assert x.shape == (len(digits.train), 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    # Normalised with the training split's own statistics; grayscale replicated to 3 equal channels.
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert len(digits.mean) == 3 and len(digits.std) == 3 and digits.mean[0] == digits.mean[2]
    image, label = digits.train[5]
    assert torch.allclose(image, x[5]) and isinstance(label, int) and label == int(y[5])


def test_digits_image_size_option():
    ds = load_dataset({"name": "digits", "image_size": 16})
    assert ds.image_size == 16 and ds.train[0][0].shape == (3, 16, 16)


def test_splits_are_disjoint_and_cover_the_source(digits):
    train, val, test = _rows(digits.train), _rows(digits.val), _rows(digits.test)
    assert len(train) == len(digits.train)  # no duplicates, so set sizes count images
    assert not train & val and not train & test and not val & test


def test_same_seed_same_splits_other_seed_other_val(digits):
    again = load_dataset(DataConfig(seed=0))
    other = load_dataset(DataConfig(seed=1))
    assert torch.equal(again.val.pixels, digits.val.pixels) and torch.equal(again.val.labels, digits.val.labels)
    assert torch.equal(again.train.pixels, digits.train.pixels)
    assert _rows(other.val) != _rows(digits.val)
    # The test split is fixed whatever the seed, so test accuracy compares across runs.
    assert torch.equal(other.test.pixels, digits.test.pixels)


def test_limit_keeps_a_seeded_subset_of_train(digits):
    small = load_dataset({"limit": 100, "seed": 3})
    assert len(small.train) == 100 and len(small.val) == len(digits.val)
    assert torch.equal(small.train.pixels, load_dataset({"limit": 100, "seed": 3}).train.pixels)
    assert _rows(small.train) <= _rows(load_dataset({"seed": 3}).train)


def test_batches_cover_the_split_once_and_shuffle_reproducibly(digits):
    n = len(digits.train)
    seen = torch.cat([y for _, y in batches(digits.train, 100)])
    assert torch.equal(seen, digits.train.labels)  # unshuffled: the split's own order
    run = lambda seed: [y for _, y in digits.batches("train", 100, shuffle=True, generator=torch.Generator().manual_seed(seed))]
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))
    assert sorted(torch.cat(a).tolist()) == sorted(digits.train.labels.tolist())
    dropped = list(batches(digits.train, 100, drop_last=True))
    assert len(dropped) == n // 100 and all(x.shape == (100, 3, 32, 32) for x, _ in dropped)
    assert len(list(batches(digits.train, 100))) == -(-n // 100)
    with pytest.raises(ValueError, match="Generator"):
        batches(digits.train, 10, shuffle=True)


def test_sample_images(digits):
    g = lambda: torch.Generator().manual_seed(7)
    s = sample_images(digits.train, 50, g())
    assert s.shape == (50, 3, 32, 32)
    assert torch.equal(s, digits.sample_images("train", 50, g()))
    assert len({row.numpy().tobytes() for row in s}) == 50  # distinct images
    assert torch.equal(sample_images(digits.val, 10), digits.val.tensors()[0][:10])
    assert sample_images(digits.val, 10_000).shape[0] == len(digits.val)


def test_unknown_split_name(digits):
    with pytest.raises(ConfigError, match="unknown split 'valid'; expected one of: train, val, test"):
        digits.split("valid")


# ---------------------------------------------------------------- config


def test_from_dict_rejects_unknown_key_and_lists_allowed():
    with pytest.raises(ConfigError) as err:
        DataConfig.from_dict({"name": "digits", "imgsize": 32})
    assert "key 'data.imgsize': got an unknown key" in str(err.value) and "image_size" in str(err.value) and "val_fraction" in str(err.value)


@pytest.mark.parametrize("d, words", [
    ({"image_size": "32"}, "key 'data.image_size': got '32', expected an integer from 4"),
    ({"seed": True}, "key 'data.seed': got true, expected an integer"),
    ({"val_fraction": "0.1"}, "key 'data.val_fraction': got '0.1', expected a number"),
    ({"val_fraction": 1.0}, "key 'data.val_fraction': got 1.0, expected a number >= 0 and < 1"),
    ({"val_fraction": float("nan")}, "key 'data.val_fraction': got NaN"),
    ({"limit": 0}, "key 'data.limit': got 0, expected an integer >= 1 or null"),
    ({"name": "mnist"}, "key 'data.name': got 'mnist', expected one of digits, idx, imagefolder, cifar10"),
    ({"name": "digits", "path": "/x"}, "key 'data.path': got '/x', expected null for the embedded digits"),
    ({"name": "idx"}, "key 'data.path': got null, expected the directory holding the idx"),
    ({"class_names": "abc"}, "key 'data.class_names': got 'abc', expected a non-empty list of strings"),
    ({"class_names": ["a", ""]}, "key 'data.class_names.1': got '', expected a non-empty string"),
    ([1], "got a list [1], expected a mapping of name, path"),
])
def test_config_errors(d, words):
    with pytest.raises(ConfigError) as err:
        DataConfig.from_dict(d)
    assert words in str(err.value)


def test_config_round_trips_through_a_dict():
    cfg = DataConfig(name="idx", path=Path("/data/mnist"), image_size=32, class_names=["a", "b"], limit=5)
    assert cfg.path == "/data/mnist" and cfg.class_names == ("a", "b")
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    assert load_dataset({"val_fraction": 0}).config.val_fraction == 0.0


# ---------------------------------------------------------------- IDX


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    dtype = {0x08: ">u1", 0x0B: ">i2"}[code]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(dtype).tobytes()


def _write_idx(root: Path, gz: bool, n_train=40, n_test=12, side=6, skip=()):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, side, side)).astype(np.uint8), 0x08),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 0x0B),  # 16-bit big-endian labels
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, side, side)).astype(np.uint8), 0x08),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10, 0x08),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, (array, code) in arrays.items():
        if name in skip:
            continue
        data = _idx_bytes(array, code)
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return {name: array for name, (array, _) in arrays.items()}


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_parse(tmp_path, gz):
    written = _write_idx(tmp_path / "mnist", gz)
    ds = load_dataset({"name": "idx", "path": str(tmp_path / "mnist")})
    assert ds.image_size == 6 and ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (36, 4, 12)
    # The test file is used as is: same images, same labels, same order, replicated to 3 channels.
    assert torch.equal(ds.test.pixels[:, 0], torch.from_numpy(written["t10k-images-idx3-ubyte"]))
    assert ds.test.labels.tolist() == list(written["t10k-labels-idx1-ubyte"])
    assert ds.test[0][0].shape == (3, 6, 6)
    # The 16-bit labels of train decode in the right byte order, each kept with its image.
    train_images = written["train-images-idx3-ubyte"]
    for pixels, label in zip(torch.cat([ds.train.pixels, ds.val.pixels]), torch.cat([ds.train.labels, ds.val.labels])):
        index = next(i for i in range(len(train_images)) if np.array_equal(train_images[i], pixels[0].numpy()))
        assert label == index % 10
    assert load_dataset({"name": "idx", "path": str(tmp_path / "mnist"), "image_size": 12}).train[0][0].shape == (3, 12, 12)


def test_idx_class_names_from_path(tmp_path):
    _write_idx(tmp_path / "my-fashion-mnist", gz=True)
    _write_idx(tmp_path / "kmnist", gz=True)
    assert load_dataset({"name": "idx", "path": str(tmp_path / "kmnist")}).class_names[0] == "0"
    ds = load_dataset({"name": "idx", "path": str(tmp_path / "my-fashion-mnist")})
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    named = load_dataset({"name": "idx", "path": str(tmp_path / "my-fashion-mnist"), "class_names": list("abcdefghij")})
    assert named.class_names == list("abcdefghij")


def test_real_fashion_mnist():
    if not FASHION_DIR.is_dir():
        reason = f"{FASHION_DIR} missing: apt-get install dataset-fashion-mnist"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    ds = load_dataset({"name": "idx", "path": str(FASHION_DIR)})
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54_000, 6_000, 10_000)
    assert ds.num_classes == 10 and ds.class_names[1] == "Trouser" and ds.image_size == 28
    x, y = next(ds.batches("test", 256))
    assert x.shape == (256, 3, 28, 28) and y.max() <= 9
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10


def _idx_error(path: Path) -> str:
    with pytest.raises(DataError) as err:
        load_dataset({"name": "idx", "path": str(path)})
    return str(err.value)


def test_idx_errors(tmp_path):
    msg = _idx_error(tmp_path / "nowhere")
    assert "does not exist" in msg and "dataset-fashion-mnist" in msg
    (tmp_path / "empty").mkdir()
    msg = _idx_error(tmp_path / "empty")
    assert msg.startswith(f"no IDX files in {tmp_path / 'empty'}: expected train-images-idx3-ubyte[.gz]")
    assert "/usr/share/datasets/fashion-mnist" in msg
    _write_idx(tmp_path / "partial", gz=False, skip=("t10k-labels-idx1-ubyte",))
    assert "lacks t10k-labels-idx1-ubyte[.gz]" in _idx_error(tmp_path / "partial")


@pytest.mark.parametrize("damage, words", [
    (lambda b: b"\x08\x03" + b[2:], "is not an IDX file"),
    (lambda b: b[:-5], "is a corrupt IDX file: dimensions (40, 6, 6) need"),
    (lambda b: b[:6], "header declares 3 dimensions but is cut short"),
    (lambda b: b[:-1] + b"\x00\x00", "is a corrupt IDX file"),
])
def test_corrupt_idx(tmp_path, damage, words):
    _write_idx(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(damage(f.read_bytes()))
    msg = _idx_error(tmp_path)
    assert str(f) in msg and words in msg


def test_idx_bad_gzip_and_label_count(tmp_path):
    _write_idx(tmp_path / "a", gz=True)
    (tmp_path / "a" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    assert "cannot read" in _idx_error(tmp_path / "a")
    _write_idx(tmp_path / "b", gz=False)
    (tmp_path / "b" / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5), 0x08))
    assert "must hold one label per image" in _idx_error(tmp_path / "b")
    (tmp_path / "b" / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(-np.ones(12), 0x0B))
    assert "must hold non-negative integer labels" in _idx_error(tmp_path / "b")


def test_idx_path_that_is_a_file_and_huge_or_bombed_files(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    msg = _idx_error(tmp_path / "file")
    assert "got a file, expected the directory holding the IDX files" in msg and "does not exist" not in msg
    _write_idx(tmp_path / "big", gz=False)
    # A header declaring 2**32-1 x 2**32-1 x 2**32-1 values (np.prod would wrap around to a small number).
    (tmp_path / "big" / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"\xff" * 12 + b"\0" * 16)
    assert "is a corrupt IDX file" in _idx_error(tmp_path / "big")
    _write_idx(tmp_path / "gz", gz=True)
    data = gzip.compress(_idx_bytes(np.zeros((40, 6, 6), np.uint8), 0x08))
    (tmp_path / "gz" / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    assert "truncated gzip" in _idx_error(tmp_path / "gz")


def test_too_few_class_names(tmp_path):
    _write_idx(tmp_path, gz=False)
    with pytest.raises(DataError, match="labels of idx go up to 9, but there are only 2 class names"):
        load_dataset({"name": "idx", "path": str(tmp_path), "class_names": ["a", "b"]})


# ---------------------------------------------------------------- image folders

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_folder(root: Path, per_class: int, size=(12, 10), mode="RGB"):
    from PIL import Image

    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", size, colour)
            image.putpixel((0, 0), (i, i, i))  # every file distinct
            image.convert(mode).save(root / name / f"{i}.png")


def test_imagefolder_with_split_folders(tmp_path):
    _write_folder(tmp_path / "train", 6)
    _write_folder(tmp_path / "val", 2)
    _write_folder(tmp_path / "test", 3)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset({"name": "imagefolder", "path": str(tmp_path), "image_size": 8})
    assert ds.class_names == ["cat", "dog", "emu"] and ds.num_classes == 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 9)
    assert isinstance(ds.train, TensorSplit) and ds.train.pixels.shape == (18, 3, 8, 8)
    # Each image keeps its class's colour at the centre, and its label.
    for pixels, label in zip(ds.train.pixels, ds.train.labels):
        assert tuple(pixels[:, 4, 4].tolist()) == COLOURS[ds.class_names[label]]
    x, y = ds.test.tensors()
    assert x.shape == (9, 3, 8, 8) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_imagefolder_crops_the_centre_square(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (24, 8), (0, 0, 0))
    image.paste((255, 255, 255), (8, 0, 16, 8))  # only the middle third is white
    (tmp_path / "wide").mkdir()
    image.save(tmp_path / "wide" / "a.jpg", quality=100)
    ds = load_dataset({"name": "imagefolder", "path": str(tmp_path), "image_size": 8})
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1, 0, 0)
    assert int(ds.train.pixels[:, :, :, 2:6].min()) > 240


def test_imagefolder_streamed_matches_in_memory(tmp_path):
    _write_folder(tmp_path, 5, mode="L")  # grayscale files become 3 equal channels
    cfg = {"name": "imagefolder", "path": str(tmp_path), "image_size": 8, "val_fraction": 0.2}
    memory = load_dataset(cfg)
    streamed = load_dataset({**cfg, "in_memory": False})
    assert isinstance(streamed.train, FileSplit) and not hasattr(streamed.train, "tensors")
    assert (len(memory.train), len(memory.val), len(memory.test)) == (10, 2, 3)
    assert streamed.mean == pytest.approx(memory.mean) and streamed.std == pytest.approx(memory.std)
    x_mem, y_mem = memory.train.tensors()
    x, y = next(streamed.batches("train", 100))
    assert torch.allclose(x, x_mem, atol=1e-5) and torch.equal(y, y_mem)
    assert torch.equal(x[:, 0], x[:, 1])
    g = lambda: torch.Generator().manual_seed(1)
    assert torch.allclose(sample_images(streamed.val, 2, g()), sample_images(memory.val, 2, g()), atol=1e-5)
    shuffled = torch.cat([y for _, y in streamed.batches("train", 4, shuffle=True, generator=g())])
    assert sorted(shuffled.tolist()) == sorted(y_mem.tolist())


def test_imagefolder_errors(tmp_path):
    def error(path: Path) -> str:
        with pytest.raises(DataError) as err:
            load_dataset({"name": "imagefolder", "path": str(path)})
        return str(err.value)

    assert "does not exist: expected train/<class>/*.png" in error(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    assert f"no class folders in {tmp_path / 'bare'}" in error(tmp_path / "bare")
    (tmp_path / "hollow" / "cat").mkdir(parents=True)
    assert "no images in the class folders" in error(tmp_path / "hollow")
    _write_folder(tmp_path / "extra" / "train", 2)
    (tmp_path / "extra" / "val" / "yak").mkdir(parents=True)
    assert "has class folders that" in error(tmp_path / "extra") and "yak" in error(tmp_path / "extra")
    _write_folder(tmp_path / "broken", 2)
    (tmp_path / "broken" / "dog" / "bad.png").write_bytes(b"\x89PNG garbage")
    assert f"cannot read image {tmp_path / 'broken' / 'dog' / 'bad.png'}" in error(tmp_path / "broken")


def test_imagefolder_without_pillow(tmp_path, monkeypatch):
    _write_folder(tmp_path, 1)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(MissingDependencyError, match="Pillow is not installed; image folders need it: pip install pillow"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path)})


# ---------------------------------------------------------------- CIFAR-10


def _write_cifar(root: Path, per_batch=8, protocol=pickle.HIGHEST_PROTOCOL, py2_names=False):
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)], b"batch_label": name.encode()}
        data = pickle.dumps(batch, protocol=protocol)
        if py2_names:  # as the real files, written by Python 2 and numpy 1
            data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (root / name).write_bytes(data)
        written[name] = batch
    names = [n.encode() for n in ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=protocol))
    return written


@pytest.mark.parametrize("py2", [False, True])
def test_cifar10_batches(tmp_path, py2):
    written = _write_cifar(tmp_path / "cifar-10-batches-py", protocol=2 if py2 else 5, py2_names=py2)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent or the directory itself
        ds = load_dataset({"name": "cifar10", "path": str(path)})
        assert ds.image_size == 32 and ds.num_classes == 10 and ds.class_names[1] == "car"
        assert (len(ds.train), len(ds.val), len(ds.test)) == (36, 4, 8)
        test = written["test_batch"]
        assert torch.equal(ds.test.pixels, torch.from_numpy(test[b"data"].reshape(-1, 3, 32, 32)))
        assert ds.test.labels.tolist() == test[b"labels"]
        assert len(set(ds.mean)) == 3  # per-channel statistics of RGB data
    assert load_dataset({"name": "cifar10", "path": str(tmp_path), "image_size": 16}).train[0][0].shape == (3, 16, 16)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_cifar10_errors(tmp_path):
    def error(path: Path) -> str:
        with pytest.raises(DataError) as err:
            load_dataset({"name": "cifar10", "path": str(path)})
        return str(err.value)

    msg = error(tmp_path)
    assert msg.startswith(f"no CIFAR-10 batches in {tmp_path}: expected data_batch_1") and "cifar-10-python.tar.gz" in msg
    _write_cifar(tmp_path / "a")
    (tmp_path / "a" / "data_batch_4").unlink()
    assert "lacks data_batch_4" in error(tmp_path / "a")
    _write_cifar(tmp_path / "b")
    (tmp_path / "b" / "test_batch").write_bytes(b"plain text")
    assert "test_batch: got a corrupt or truncated pickle" in error(tmp_path / "b")
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_2").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    assert "refusing to load builtins.print" in error(tmp_path / "c")
    _write_cifar(tmp_path / "d")
    (tmp_path / "d" / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    assert "must hold uint8 data [N, 3072]" in error(tmp_path / "d")
    import struct

    for opcode in (b"\x8e", b"\x96"):  # BINBYTES8, BYTEARRAY8 declaring 2**62 bytes: a MemoryError before
        (tmp_path / "d" / "data_batch_3").write_bytes(b"\x80\x04" + opcode + struct.pack("<Q", 2**62) + b"abc.")
        assert "data_batch_3: got a corrupt or truncated pickle" in error(tmp_path / "d")
    (tmp_path / "d" / "data_batch_3").write_bytes(pickle.dumps([1, 2]))
    assert "got a pickled list, expected a CIFAR-10 python batch" in error(tmp_path / "d")
