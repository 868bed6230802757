"""One validator for every file edgenas reads: safe reading, declarative schemas, one message style.

Reading (every loader goes through these, so size, encoding and nesting are bounded in one place):

    read_bytes(path, what)        bytes of a regular file, at most `max_bytes`
    read_text(path, what)         ... decoded as UTF-8 (a binary or Latin-1 file is a clear error)
    read_yaml(path, what)         ... parsed as YAML with the safe loader: duplicate keys, nesting
                                  deeper than MAX_DEPTH and alias expansion beyond MAX_NODES
                                  ("billion laughs") are errors, never a hang or a RecursionError
    read_json(path, what)         ... parsed as JSON: duplicate keys, NaN/Infinity (unless
                                  allowed), deep nesting and 5000-digit numbers are errors
    load_torch(path, what)        a torch file read with weights_only=True; a file holding other
                                  Python objects is refused without suggesting weights_only=False
    checksum(obj), verify_checksum(...)   sha256 over a payload's tensors and values

Schemas are the loaders' dataclasses themselves: types come from the annotations, ranges and
choices from `field(metadata=spec(...))`, and `build(cls, data, source)` checks a mapping against
them (unknown, missing and mistyped keys, NaN/inf, ranges, choices, lengths) before any work starts.

Every problem is reported in one style, with echoed values cut to a few dozen characters:

    FILE: key 'train.batch_size': got 0, expected an integer >= 1

The contract for callers (and property tests): a loader given malformed input raises an
`EdgeNASError` subclass (`ConfigError` unless the loader passes another), never anything else,
and never changes the file. The loaders that keep it:

    edgenas.space.load_space, SearchSpace.from_dict               ConfigError
    edgenas.train.load_config, apply_overrides (--set)            ConfigError
    edgenas.data.DataConfig.from_dict                             ConfigError
    edgenas.data.load_dataset (IDX, CIFAR-10 pickles, folders)    DataError
    edgenas.device.load_profile, DeviceProfile.from_dict          ConfigError
    edgenas.latency.LatencyTable.load, load_ofa                   ConfigError
    edgenas.search.results.load_results, read_results             ConfigError
    edgenas.search.measure.read_measurements                      CheckpointError
    edgenas.search.predictor.AccuracyPredictor.load               CheckpointError
    edgenas.train.checkpoint.read, load_supernet                  CheckpointError
    edgenas.supernet.convert.load_ofa_checkpoint                  CheckpointError
    edgenas.export.card.load_card                                 EdgeNASError

Why not pydantic: its messages ("Input should be greater than 0 [type=greater_than, ...]") would
need rewriting for every error type to reach the style above, and the loaders' frozen dataclasses
(used across the code base) would have to become models; a small walker over dataclass fields
gives the exact messages with no second class hierarchy.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import reprlib
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml

from edgenas.errors import CheckpointError, ConfigError, EdgeNASError

log = logging.getLogger("edgenas")

MAX_TEXT_BYTES = 64 << 20  # YAML and JSON files edgenas reads (a large latency table is ~2 MB)
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_NODES = 2_000_000  # values after expanding YAML aliases
MAX_STR = 10_000  # characters of one string value
ECHO_CHARS = 40  # characters of a value echoed in a message
INT_MAX = 2**63 - 1  # default bound of integer fields

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = ECHO_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlevel = 2
_repr.maxlong = ECHO_CHARS


def _count(n: int, what: str) -> str:
    return f"a {'mapping' if what == 'key' else 'list'} of {n} {what}{'' if n == 1 else 's'}"


def echo(value: Any) -> str:
    """A short, bounded rendering of `value` for messages (never the whole of a huge value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, float) and not math.isfinite(value):
        return {True: "NaN"}.get(math.isnan(value), "inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        text = _repr.repr(value)  # a few short items, else a count (nested items make a long repr)
        return f"a mapping {text}" if len(value) <= 4 and len(text) <= 2 * ECHO_CHARS else _count(len(value), "key")
    if isinstance(value, (list, tuple)):
        text = _repr.repr(list(value))
        return f"a list {text}" if len(value) <= 4 and len(text) <= 2 * ECHO_CHARS else _count(len(value), "item")
    if isinstance(value, str):
        return repr(value) if len(value) <= ECHO_CHARS else repr(value[:ECHO_CHARS]) + "..."
    text = _repr.repr(value)
    return text if len(text) <= ECHO_CHARS + 5 else text[:ECHO_CHARS] + "..."


def message(source: str, key: str | None, got: str, expected: str) -> str:
    """The one message style: `FILE: key 'X': got Y, expected Z` (`got` already rendered)."""
    where = f"{source}: key '{key}'" if key else str(source)
    return f"{where}: got {got}, expected {expected}"


class Invalid(ConfigError):
    """A problem with one key, raised where the file name is not known yet (e.g. __post_init__);
    `build` adds the source and the key's full path. `got` is the value (echoed short)."""

    def __init__(self, key: str | None, got: Any, expected: str, rendered: bool = False):
        self.key, self.expected = key, expected
        self.got = got if rendered else echo(got)
        super().__init__(message("", key, self.got, expected).lstrip(": ") if key else f"got {self.got}, expected {expected}")

    def under(self, prefix: str) -> "Invalid":
        key = f"{prefix}.{self.key}" if prefix and self.key else (prefix or self.key)
        return Invalid(key, self.got, self.expected, rendered=True)

    def at(self, source: str, error: type[EdgeNASError] = ConfigError) -> EdgeNASError:
        return error(message(source, self.key, self.got, self.expected))


def fail(source: str, key: str | None, value: Any, expected: str, error: type[EdgeNASError] = ConfigError) -> EdgeNASError:
    """The error (to raise) for `value` at `key` of `source`."""
    return error(message(source, key, echo(value), expected))


# ---- reading files ----------------------------------------------------------------------------------

MAX_PATH = 1024  # characters of a path a user gives (255 bytes per name, as file systems allow)


def user_path(path: str | os.PathLike, what: str = "file", error: type[EdgeNASError] = ConfigError) -> Path:
    """`path` as a Path with ~ expanded; a NUL byte, an over-long path or name, or an unknown
    ~user is an `error` (these make os calls raise ValueError, OSError or RuntimeError)."""
    try:
        text = os.fsdecode(path) if not isinstance(path, str) else path
    except TypeError:
        raise error(message("path", None, echo(path), f"a {what} path")) from None
    if "\0" in text:
        raise error(f"{echo(text)}: got a path with a NUL byte, expected a {what} path")
    if len(text) > MAX_PATH or any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in text.split(os.sep)):
        raise error(f"{echo(text)}: got a path of {len(text)} characters, expected a {what} path of at most "
                    f"{MAX_PATH} characters and 255 bytes per name")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise error(f"{echo(text)}: got '~' of an unknown user, expected a {what} path") from None


def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_TEXT_BYTES,
               error: type[EdgeNASError] = ConfigError) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; a missing path, a directory or a larger
    file is an error of class `error` naming the file."""
    p = user_path(path, what, error)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: no such file (expected a {what})") from None
    except OSError as exc:
        raise error(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    if p.is_dir():
        raise error(f"{p}: got a directory, expected a {what}")
    if not p.is_file():
        raise error(f"{p}: got a special file, expected a {what}")
    if st.st_size > max_bytes:
        raise error(f"{p}: got {st.st_size} bytes, expected a {what} of at most {max_bytes} bytes")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{p}: got more than {max_bytes} bytes, expected a {what} of at most {max_bytes} bytes")
    return data


def decode_text(data: bytes, source: str, what: str = "text file", error: type[EdgeNASError] = ConfigError) -> str:
    """`data` as UTF-8 text (a leading BOM is dropped); binary data or another encoding is an error."""
    if b"\0" in data[:8192]:
        raise error(f"{source}: got binary data, expected a UTF-8 {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{source}: line {line}: got byte 0x{data[exc.start]:02x}, which is not UTF-8, "
                    f"expected a UTF-8 {what} (re-save it as UTF-8)") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str | os.PathLike, what: str = "text file", max_bytes: int = MAX_TEXT_BYTES,
              error: type[EdgeNASError] = ConfigError) -> str:
    p = user_path(path, what, error)
    return decode_text(read_bytes(p, what, max_bytes, error), str(p), what, error)


# -- YAML

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C speed when available, plain data only


class _Duplicate(yaml.YAMLError):
    def __init__(self, key: Any, mark):
        self.key, self.mark = key, mark


class _Loader(_BaseLoader):
    """The safe loader, refusing a key given twice in one mapping, and reading 3e-5 (no dot) as
    a number as YAML 1.2 does (YAML 1.1 makes it a string)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _Duplicate(key, key_node.start_mark)
                    seen.add(key)
                except TypeError:
                    pass  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _check_structure(text: str, source: str, error) -> None:
    """Bound nesting depth and the size after alias expansion, walking parser events (no recursion)."""
    depth = 0
    stack: list[list] = [[0, None]]  # per open collection: [expanded size, anchor]
    sizes: dict[str, int] = {}
    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = ev.start_mark.line + 1 if ev.start_mark else "?"
                raise error(f"{source}: line {line}: got nesting deeper than {MAX_DEPTH} levels, "
                            f"expected at most {MAX_DEPTH}")
            stack.append([1, ev.anchor])
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            size, anchor = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
            stack[-1][0] += size
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
            stack[-1][0] += 1
        elif isinstance(ev, yaml.AliasEvent):
            stack[-1][0] += sizes.get(ev.anchor, 1)
        else:
            continue
        if stack[-1][0] > MAX_NODES:
            raise error(f"{source}: got more than {MAX_NODES} values once YAML aliases are expanded, "
                        f"expected a plain file (aliases that multiply, a 'billion laughs', are refused)")


def _yaml_problem(exc: Exception) -> tuple[str, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    problem = str(problem)
    return where, problem if len(problem) <= 100 else problem[:100] + "..."


def loads_yaml(text: str, source: str, error: type[EdgeNASError] = ConfigError) -> Any:
    """Parse YAML text safely (see the module docstring); every failure is an `error`."""
    try:
        _check_structure(text, source, error)
        return yaml.load(text, Loader=_Loader)
    except _Duplicate as exc:
        line = exc.mark.line + 1 if exc.mark else "?"
        raise error(message(f"{source}: line {line}", None, f"key {echo(exc.key)} twice", "each key once")) from None
    except yaml.YAMLError as exc:
        where, problem = _yaml_problem(exc)
        raise error(f"{source}: {where}not valid YAML ({problem})") from None
    except ValueError as exc:  # e.g. a 5000-digit integer, an impossible date
        text_ = str(exc)
        if "digits" in text_ or "Exceeds" in text_:
            raise error(f"{source}: got an integer with more than 4300 digits, expected a number of sensible size") from None
        raise error(f"{source}: not valid YAML ({text_[:120]})") from None
    except (OverflowError, RecursionError, TypeError) as exc:
        raise error(f"{source}: not valid YAML ({type(exc).__name__}: {str(exc)[:80]})") from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file", max_bytes: int = MAX_TEXT_BYTES,
              error: type[EdgeNASError] = ConfigError) -> Any:
    p = user_path(path, what, error)
    return loads_yaml(read_text(p, what, max_bytes, error), str(p), error)


# -- JSON

def loads_json(text: str, source: str, allow_nan: bool = False, error: type[EdgeNASError] = ConfigError) -> Any:
    """Parse JSON text: duplicate keys, NaN/Infinity (unless `allow_nan`), nesting deeper than
    MAX_DEPTH and huge numbers are `error`s."""

    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise _JSONProblem(message(source, None, f"key {echo(k)} twice", "each key once"))
            out[k] = v
        return out

    def constant(name):
        if not allow_nan:
            raise _JSONProblem(message(source, None, name, "finite numbers (NaN and Infinity are not JSON)"))
        return float(name.replace("Infinity", "inf"))

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except _JSONProblem as exc:
        raise error(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise error(f"{source}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise error(f"{source}: got nesting deeper than Python can read, expected at most {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise error(f"{source}: got an integer with more than 4300 digits, expected a number of sensible size"
                    if "digits" in str(exc) else f"{source}: not valid JSON ({str(exc)[:120]})") from None
    if _depth(data) > MAX_DEPTH:
        raise error(f"{source}: got nesting deeper than {MAX_DEPTH} levels, expected at most {MAX_DEPTH}")
    return data


class _JSONProblem(Exception):
    pass


def _depth(data: Any) -> int:
    """Nesting depth of plain JSON data, iteratively."""
    best, todo = 0, [(data, 1)]
    while todo:
        node, d = todo.pop()
        if isinstance(node, dict):
            best = max(best, d)
            todo.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            best = max(best, d)
            todo.extend((v, d + 1) for v in node)
    return best


def read_json(path: str | os.PathLike, what: str = "JSON file", max_bytes: int = MAX_TEXT_BYTES,
              allow_nan: bool = False, error: type[EdgeNASError] = ConfigError) -> Any:
    p = user_path(path, what, error)
    return loads_json(read_text(p, what, max_bytes, error), str(p), allow_nan, error)


# ---- torch files and checksums ------------------------------------------------------------------

MAX_TORCH_BYTES = 8 << 30


def load_torch(path: str | os.PathLike, what: str = "edgenas checkpoint",
               error: type[EdgeNASError] = CheckpointError) -> Any:
    """A torch file read with `weights_only=True` (plain tensors and data, no code). A file that
    holds other Python objects, or is not a torch file at all, is an `error` saying so; it never
    suggests `weights_only=False`, which would run whatever the file holds."""
    import pickle

    import torch

    p = Path(path).expanduser()
    if p.is_dir():
        raise error(f"{p}: got a directory, expected a {what}")
    if not p.is_file():
        raise error(f"{p}: no such file (expected a {what})")
    if p.stat().st_size > MAX_TORCH_BYTES:
        raise error(f"{p}: got {p.stat().st_size} bytes, expected a {what} of at most {MAX_TORCH_BYTES} bytes")
    a = "an" if what[:1].lower() in "aeiou" else "a"
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "unsupported global" in text.lower() or "unsupported class" in text.lower():
            # weights_only refused a global: the file holds Python objects, which could run code.
            raise error(f"{p}: got a file holding Python objects other than tensors and plain data, expected "
                        f"{a} {what}; it is not loaded, because such a file can run code (do not trust its source)") from None
        raise error(f"{p}: got a corrupt, truncated or non-torch file (not a pickle), expected {a} {what}") from None
    except MemoryError:
        raise error(f"{p}: got a file declaring more data than fits in memory, expected {a} {what}") from None
    except Exception as exc:  # truncated zip, corrupt record, not a torch file at all ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "weights_only" in reason or "pickle" in reason.lower():
            reason = type(exc).__name__
        raise error(f"{p}: got a corrupt, truncated or non-torch file ({reason[:100]}), expected {a} {what}") from None


def checksum(obj: Any) -> str:
    """sha256 over a payload: every tensor's name, dtype, shape and bytes, and every other value,
    in a fixed order (mapping keys sorted). The key 'checksum' itself is left out."""
    import torch

    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(x, Mapping):
            h.update(b"{")
            for k in sorted(x, key=lambda k: (type(k).__name__, repr(k))):
                if k == "checksum":
                    continue
                h.update(repr(k).encode() + b":")
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
                h.update(b",")
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    walk(obj)
    return "sha256:" + h.hexdigest()


def with_checksum(payload: dict) -> dict:
    """`payload` with its 'checksum' entry set (call just before saving)."""
    payload["checksum"] = checksum(payload)
    return payload


def verify_checksum(payload: Mapping, source: str, resave: str, error: type[EdgeNASError] = CheckpointError) -> None:
    """Raise `error` when the payload's recorded checksum does not match its contents.

    Files written before checksums existed have none: they are accepted with a logged warning
    (and `resave` says how to write them again with one)."""
    recorded = payload.get("checksum")
    try:
        actual = checksum(payload) if recorded is not None else None
    except RecursionError:
        raise error(f"{source}: got data nested too deep to check, expected a file written by edgenas") from None
    if recorded is None:
        log.warning("%s has no checksum (written by an older edgenas), so it is loaded without an integrity "
                    "check; %s to write one with a checksum", source, resave)
        return
    if not isinstance(recorded, str) or actual != recorded:
        raise error(message(source, "checksum", "contents that do not match it",
                            f"the recorded checksum: the file is corrupt (changed since it was written); "
                            f"restore it from a backup or {resave}"))


# ---- declarative schemas over dataclasses ----------------------------------------------------------

def spec(*, min: float | None = None, max: float | None = None, gt: float | None = None,
         lt: float | None = None, choices: tuple | None = None, min_len: int | None = None,
         max_len: int | None = None, each: dict | None = None, finite: bool = True,
         increasing: bool = False, doc: str | None = None) -> dict:
    """Field metadata for `build`: numeric bounds (min/max inclusive, gt/lt exclusive), choices,
    list length bounds, `each` (a spec applied to every item of a list), `finite` (NaN/inf
    refused, the default), `increasing` (a list strictly increasing, no repeats) and `doc`
    (replaces the generated 'expected ...' text)."""
    if each is not None and "edgenas_spec" in each:
        each = each["edgenas_spec"]
    return {"edgenas_spec": {k: v for k, v in dict(min=min, max=max, gt=gt, lt=lt, choices=choices, min_len=min_len,
                                                     max_len=max_len, each=each, finite=finite,
                                                     increasing=increasing, doc=doc).items()
                             if v is not None}}


def fspec(f: dataclasses.Field) -> dict:
    return dict(f.metadata.get("edgenas_spec", {}))


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def describe(tp: Any, sp: Mapping | None = None) -> str:
    """'expected ...' text for a type and its spec."""
    sp = sp or {}
    if sp.get("doc"):
        return sp["doc"]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if sp.get("choices") is not None:
        return "one of " + ", ".join(echo(c) if not isinstance(c, str) else c for c in sp["choices"])
    if origin is Union or origin is getattr(__import__("types"), "UnionType", None):
        parts = [describe(a, sp if a is not type(None) else None) for a in args]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        item = args[0] if args else Any
        inner = describe(item, sp.get("each")) if item is not Any else "values"
        inner = inner[3:] if inner.startswith("an ") else inner[2:] if inner.startswith("a ") else inner
        first, _, rest = inner.partition(" ")
        inner = (_PLURAL.get(first, first) + " " + rest).strip()
        size = "non-empty " if sp.get("min_len") == 1 else ""
        if sp.get("min_len", 0) > 1:
            size = f"at least {sp['min_len']}-item "
        return f"a {size}list of {inner}" + (", strictly increasing" if sp.get("increasing") else "")
    if origin in (dict, Mapping) or tp in (dict, Mapping) or origin is typing.Mapping:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {_names([f.name for f in dataclasses.fields(tp) if f.init])}"
    base = _NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    def num(x):
        return f"{x:g}" if isinstance(x, float) else str(x)

    lo = f">= {num(sp['min'])}" if "min" in sp else f"> {num(sp['gt'])}" if "gt" in sp else None
    hi = f"<= {num(sp['max'])}" if "max" in sp else f"< {num(sp['lt'])}" if "lt" in sp else None
    if "min" in sp and "max" in sp:
        return f"{base} from {num(sp['min'])} to {num(sp['max'])}"
    return base + "".join(f" {b}" for b in (lo, hi) if b).replace("  ", " ") if not (lo and hi) else f"{base} {lo} and {hi}"


_PLURAL = {"integer": "integers", "number": "numbers", "string": "strings", "mapping": "mappings", "list": "lists"}


def _names(names: list[str], limit: int = 90) -> str:
    text = ", ".join(names)
    return text if len(text) <= limit else text[:limit].rsplit(", ", 1)[0] + ", ..."


def _known_key(key: Any, names: list[str]) -> str:
    """'expected ...' for an unknown key: the list of known keys, or the closest one when long."""
    text = ", ".join(names)
    if len(text) <= 120:
        return f"one of {text}"
    import difflib

    close = difflib.get_close_matches(str(key), names, 1, 0.6)
    return f"a known key (did you mean '{close[0]}'?)" if close else f"one of {_names(names)}"


def _hints(cls) -> dict:
    cache = cls.__dict__.get("_edgenas_hints")
    if cache is None:
        cache = typing.get_type_hints(cls)
        try:
            setattr(cls, "_edgenas_hints", cache)
        except (AttributeError, TypeError):
            pass
    return cache


def build(cls, data: Any, source: str, path: str = "", error: type[EdgeNASError] = ConfigError):
    """An instance of dataclass `cls` from `data` (a mapping read from `source`), every key
    checked against the field types and specs. Raises `error` in the one message style."""
    try:
        return _build(cls, data, path)
    except Invalid as exc:
        raise exc.at(source, error) from None


def check(tp: Any, value: Any, key: str, source: str, sp: Mapping | None = None,
          error: type[EdgeNASError] = ConfigError) -> Any:
    """`value` checked (and normalised: lists to tuples where the type says so, ints to floats)
    against a type and spec, outside any dataclass."""
    try:
        return _coerce(value, tp, sp or {}, key)
    except Invalid as exc:
        raise exc.at(source, error) from None


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _build(cls, data: Any, path: str):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if not isinstance(data, Mapping):
        raise Invalid(path or None, data, f"a mapping of {_names(list(fields))}")
    hints = _hints(cls)
    kwargs = {}
    for key in data:
        if key not in fields:
            name = _join(path, key) if isinstance(key, str) else _join(path, echo(key))
            raise Invalid(name, "an unknown key", _known_key(key, list(fields)), rendered=True)
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Invalid(_join(path, name), "nothing (the key is missing)", describe(hints[name], fspec(f)),
                              rendered=True)
            continue
        kwargs[name] = _coerce(data[name], hints[name], fspec(f), _join(path, name))
    try:
        return cls(**kwargs)
    except Invalid as exc:
        raise exc.under(path) from None


def _coerce(value: Any, tp: Any, sp: Mapping, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Union or origin is getattr(__import__("types"), "UnionType", None):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms:
            try:
                return _coerce(value, arm, sp, path)
            except Invalid as exc:
                if exc.key != path or len(arms) == 1:  # the problem is inside the arm's shape
                    if exc.key == path and type(None) in args and "choices" not in sp:
                        raise Invalid(path, exc.got, exc.expected + " or null", rendered=True) from None
                    raise
        raise Invalid(path, value, describe(tp, sp))
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise Invalid(path, value, describe(tp, sp))
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise Invalid(path, value, describe(tp, sp))
        item = args[0] if args else Any
        each = sp.get("each", {})
        out = [_coerce(v, item, each, f"{path}.{i}") for i, v in enumerate(value)]
        if len(out) < sp.get("min_len", 0) or len(out) > sp.get("max_len", math.inf):
            raise Invalid(path, value, describe(tp, sp))
        if sp.get("increasing") and any(b <= a for a, b in zip(out, out[1:])):
            raise Invalid(path, value, describe(tp, sp))
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise Invalid(path, value, describe(tp, sp))
        ktp, vtp = (args + (Any, Any))[:2] if args else (Any, Any)
        return {_coerce(k, ktp, {}, path): _coerce(v, vtp, sp.get("each", {}), _join(path, k)) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise Invalid(path, value, describe(tp, sp))
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, value, describe(tp, sp))
        _range(value, tp, sp, path, default_max=INT_MAX, default_min=-INT_MAX)
        return value
    if tp is float:
        orig = value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, value, describe(tp, sp))
        if isinstance(value, int) and abs(value) > 2**1023:
            raise Invalid(path, value, describe(tp, sp))
        value = float(value)
        if sp.get("finite", True) and not math.isfinite(value):
            raise Invalid(path, orig, describe(tp, sp) + " (finite)")
        try:
            _range(value, tp, sp, path)
        except Invalid:
            raise Invalid(path, orig, describe(tp, sp)) from None
        return value
    if tp is str:
        if not isinstance(value, str):
            raise Invalid(path, value, describe(tp, sp))
        if len(value) > sp.get("max_len", MAX_STR):
            raise Invalid(path, f"a string of {len(value)} characters",
                          f"at most {sp.get('max_len', MAX_STR)} characters", rendered=True)
        if len(value) < sp.get("min_len", 0):
            raise Invalid(path, value, "a non-empty string")
        if "choices" in sp and value not in sp["choices"]:
            raise Invalid(path, value, describe(tp, sp))
        return value
    if tp is type(None):
        if value is None:
            return None
        raise Invalid(path, value, "null")
    raise TypeError(f"edgenas.validate cannot check type {tp!r} at {path}")  # a bug in a schema


def _range(value, tp, sp, path, default_max=None, default_min=None) -> None:
    lo, hi = sp.get("min", default_min), sp.get("max", default_max)
    bad = (lo is not None and value < lo) or (hi is not None and value > hi) or \
          ("gt" in sp and not value > sp["gt"]) or ("lt" in sp and not value < sp["lt"])
    if "choices" in sp and value not in sp["choices"]:
        bad = True
    if bad:
        shown = dict(sp)
        if "min" not in shown and "gt" not in shown and default_min is not None and value < default_min:
            shown["min"] = default_min
        if "max" not in shown and "lt" not in shown and default_max is not None and value > default_max:
            shown["max"] = default_max
        raise Invalid(path, value, describe(tp, shown))


def check_fields(obj: Any, path: str = "") -> None:
    """Check (and normalise, in place) every field of a dataclass instance against its type and
    spec; for `__post_init__` of dataclasses that are also built in code. Raises `Invalid`."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = _coerce(getattr(obj, f.name), hints[f.name], fspec(f), _join(path, f.name))
        if value is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, value)


def mapping_of(data: Any, source: str, what: str, error: type[EdgeNASError] = ConfigError) -> dict:
    """`data` if it is a mapping, else the one-style error (for a file's top level)."""
    if not isinstance(data, Mapping):
        raise error(message(source, None, "an empty file" if data is None else echo(data), f"a mapping ({what})"))
    return dict(data)


def value_of(tp: Any, value: Any, key: str, sp: Mapping | None = None) -> Any:
    """`check` without a source: raises `Invalid` (for checks that `Invalid.at` reports later)."""
    return _coerce(value, tp, (sp or {}).get("edgenas_spec", sp or {}), key)


def section_of(cls, data: Any, key: str):
    """`build` without a source: raises `Invalid` naming `key` and below."""
    return _build(cls, data, key)
