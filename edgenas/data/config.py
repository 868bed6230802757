"""`DataConfig`: which dataset to load and how to split it.

Every field is checked when the config is built, whether from code or from a dict read out of a
YAML file, so a typo fails at once with a `ConfigError` instead of deep inside training.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from edgenas.errors import ConfigError

SOURCES = ("digits", "idx", "imagefolder", "cifar10")


@dataclass(frozen=True)
class DataConfig:
    # Source: "digits" (embedded, scikit-learn), "idx" (MNIST / Fashion-MNIST files),
    # "imagefolder" (train/<class>/*.png ...), or "cifar10" (the python-version batches).
    name: str = "digits"
    # Directory holding the files; None for the embedded digits set.
    path: str | None = None
    # Side of the square images the models see; None = the source's native size
    # (28 for IDX, 32 for CIFAR-10, 32 for digits and image folders).
    image_size: int | None = None
    # Share of the training pool held out as the validation split when the source has none.
    val_fraction: float = 0.1
    # Seed of the train/val split (and of the subset kept by `limit`); same seed, same splits.
    seed: int = 0
    # At most this many training images (a seeded subset), for quick runs; None = all.
    limit: int | None = None
    # Class names, overriding the source's own (Fashion-MNIST's are detected from a path
    # containing "fashion"); their number must cover every label.
    class_names: tuple[str, ...] | None = None
    # Image folders only: decode every image up front (True) or read each from disk when it is
    # used (False); None decodes folders of at most 10,000 images up front.
    in_memory: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if isinstance(self.class_names, list):
            object.__setattr__(self, "class_names", tuple(self.class_names))
        if isinstance(self.val_fraction, int) and not isinstance(self.val_fraction, bool):
            object.__setattr__(self, "val_fraction", float(self.val_fraction))
        _check_type("name", self.name, str, "a string")
        _check_type("path", self.path, (str, type(None)), "a directory path or null")
        _check_type("image_size", self.image_size, (int, type(None)), "an integer or null")
        _check_type("val_fraction", self.val_fraction, float, "a number")
        _check_type("seed", self.seed, int, "an integer")
        _check_type("limit", self.limit, (int, type(None)), "an integer or null")
        _check_type("class_names", self.class_names, (tuple, type(None)), "a list of strings or null")
        _check_type("in_memory", self.in_memory, (bool, type(None)), "true, false or null")
        if self.name not in SOURCES:
            raise ConfigError(f"unknown dataset {self.name!r}; expected one of: {', '.join(SOURCES)}")
        if self.name == "digits" and self.path is not None:
            raise ConfigError("data.path must be null for the embedded digits dataset, which needs no files")
        if self.name != "digits" and not self.path:
            raise ConfigError(f"data.path is required for the {self.name} dataset: the directory holding its files")
        if self.image_size is not None and self.image_size < 4:
            raise ConfigError(f"data.image_size must be at least 4, got {self.image_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit must be a positive integer or null, got {self.limit}")
        if self.class_names is not None and (
            not self.class_names or not all(isinstance(c, str) and c for c in self.class_names)
        ):
            raise ConfigError("data.class_names must be a non-empty list of non-empty strings")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataConfig":
        """Build a config from a mapping (a YAML section), rejecting unknown keys and wrong types."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"the data config must be a mapping of keys to values, got {type(d).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in allowed:
                raise ConfigError(f"unknown data config key {key!r}; allowed keys: {', '.join(allowed)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that `from_dict` turns back into an equal config (for YAML and checkpoints)."""
        d = dataclasses.asdict(self)
        if d["class_names"] is not None:
            d["class_names"] = list(d["class_names"])
        return d


def _check_type(key: str, value: Any, types: type | tuple[type, ...], expected: str) -> None:
    # bool is a subclass of int, but `image_size: true` is a mistake, not the number 1.
    wrong_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
    if wrong_bool or not isinstance(value, types):
        raise ConfigError(f"data.{key} must be {expected}, got {type(value).__name__} {value!r}")
