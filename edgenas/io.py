"""Files that must not be lost are written to a temporary file beside the target and renamed.

A crash or a kill in the middle of a write leaves either the old file or the new one, never a
half-written one (rename is atomic on POSIX file systems).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

import yaml

from edgenas.errors import EdgeNASError


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary binary file next to `path`, fsync it, and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


# ---- output safety: checked before any work -----------------------------------------------------

def checkpoint_files(path: str | os.PathLike | None) -> list[Path]:
    """The files a checkpoint argument is read from: the file itself, or for a run directory its
    supernet.pt, finetuned.pt and checkpoint.pt (and the predictor `edgenas search` looks for there)."""
    if path is None:
        return []
    path = Path(path)
    if path.is_dir():
        return [path / "supernet.pt", path / "finetuned.pt", path / "checkpoint.pt", path / "supernet.predictor.pt"]
    return [path]


def _input_files(value: Any) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _input_files(v)]
    path = Path(value)
    if path.is_dir():  # e.g. a directory of latency tables: every file in it is read
        return [p for p in sorted(path.iterdir()) if p.is_file()]
    return [path]


def same_path(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal once resolved (symlinks, ..), or the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_creatable(flag: str, path: Path, directory: Path) -> None:
    """`directory` exists or can be made, and a file can be created in it (tried, not guessed:
    os.access says yes to root everywhere)."""
    anc = directory
    while not anc.exists():
        if anc.is_symlink():
            break  # a dangling symlink: mkdir will fail below with a clear reason
        anc = anc.parent
    if not anc.is_dir():
        raise EdgeNASError(f"{flag} {path}: {anc} is a file, not a directory; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgenas-write-check.", dir=anc)
    except OSError as exc:
        raise EdgeNASError(f"{flag} {path}: cannot write in {anc} ({exc.strerror or exc}); "
                           "choose a writable location") from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(inputs: Mapping[str, Any], files: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
                  dirs: Mapping[str, tuple[Any, Iterable[str]]] | None = None) -> None:
    """Refuse, before any work, outputs that would replace an input, that cannot be written, or
    that are a directory where a file is written (and the reverse).

    inputs: {flag: path, list of paths, a directory (its files) or None}; for a checkpoint use
        checkpoint_files(path).
    files:  {flag: output file path or None}, or (flag, path) pairs when a flag names several.
    dirs:   {flag: (output directory, names of the files written into it)}.
    """
    targets: list[tuple[str, Path, str]] = []  # (flag, path, how the message names it)
    for flag, value in (files.items() if isinstance(files, Mapping) else files or ()):
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            raise EdgeNASError(f"{flag} {path} is a directory; give a file path")
        _check_creatable(flag, path, path.parent)
        targets.append((flag, path, f"{flag} {path}"))
    for flag, (value, names) in (dirs or {}).items():
        path = Path(value)
        if path.exists() and not path.is_dir():
            raise EdgeNASError(f"{flag} {path} is a file; give a directory")
        _check_creatable(flag, path, path)
        for name in names:
            if (path / name).is_dir():
                raise EdgeNASError(f"{flag} {path}: {path / name} is a directory, but {name} is written there")
            targets.append((flag, path / name, f"{flag} {path} would get {name}, and {path / name}"))
    sources = [(flag, p) for flag, value in inputs.items() for p in _input_files(value)]
    for i, (flag, target, named) in enumerate(targets):
        for in_flag, source in sources:
            if same_path(target, source):
                raise EdgeNASError(f"{named} is the input {in_flag} {source}; writing it would replace that file: "
                                   "choose another output path")
        for other_flag, other, _ in targets[:i]:
            if same_path(target, other):
                raise EdgeNASError(f"{flag} and {other_flag} both name {target}; give them different paths")
