"""`DataConfig`: which dataset to load and how to split it.

Every field is checked when the config is built, whether from code or from a dict read out of a
YAML file, so a typo fails at once with a `ConfigError` instead of deep inside training.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from edgenas.validate import Invalid, build, check_fields, spec

SOURCES = ("digits", "idx", "imagefolder", "cifar10")


@dataclass(frozen=True)
class DataConfig:
    # Source: "digits" (embedded, scikit-learn), "idx" (MNIST / Fashion-MNIST files),
    # "imagefolder" (train/<class>/*.png ...), or "cifar10" (the python-version batches).
    name: str = field(default="digits", metadata=spec(choices=SOURCES))
    # Directory holding the files; None for the embedded digits set.
    path: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=4096, doc="a directory path or null"))
    # Side of the square images the models see; None = the source's native size
    # (28 for IDX, 32 for CIFAR-10, 32 for digits and image folders).
    image_size: Optional[int] = field(default=None, metadata=spec(min=4, max=4096))
    # Share of the training pool held out as the validation split when the source has none.
    val_fraction: float = field(default=0.1, metadata=spec(min=0.0, lt=1.0))
    # Seed of the train/val split (and of the subset kept by `limit`); same seed, same splits.
    seed: int = field(default=0, metadata=spec(min=0, max=2**32 - 1))
    # At most this many training images (a seeded subset), for quick runs; None = all.
    limit: Optional[int] = field(default=None, metadata=spec(min=1))
    # Class names, overriding the source's own (Fashion-MNIST's are detected from a path
    # containing "fashion"); their number must cover every label.
    class_names: Optional[tuple[str, ...]] = field(
        default=None, metadata=spec(min_len=1, max_len=1_000_000, each=spec(min_len=1, max_len=200)))
    # Image folders only: decode every image up front (True) or read each from disk when it is
    # used (False); None decodes folders of at most 10,000 images up front.
    in_memory: Optional[bool] = None

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        check_fields(self)
        if self.name == "digits" and self.path is not None:
            raise Invalid("path", self.path, "null for the embedded digits dataset, which needs no files")
        if self.name != "digits" and not self.path:
            raise Invalid("path", self.path, f"the directory holding the {self.name} dataset's files")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "data config") -> "DataConfig":
        """Build a config from a mapping (a YAML section), rejecting unknown keys and wrong types;
        keys are named `data.KEY` in messages."""
        return build(cls, d, source, path="data")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that `from_dict` turns back into an equal config (for YAML and checkpoints)."""
        d = dataclasses.asdict(self)
        if d["class_names"] is not None:
            d["class_names"] = list(d["class_names"])
        return d
