"""The shared reader and schema of edgenas.validate, and hand-picked bad files for every loader.

Every malformed input must end in an EdgeNASError subclass whose message names the file (and
the key where there is one) in the one style `FILE: key 'X': got Y, expected Z`, short enough
to read; good files still load.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional

import pytest

from edgenas.errors import ConfigError, EdgeNASError
from edgenas.validate import (
    Invalid, build, checksum, echo, loads_json, loads_yaml, read_json, read_text, read_yaml, spec,
)

BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f'{c}: &{c} [{",".join(["*" + p] * 9)}]\n' for p, c in zip("abcdefgh", "bcdefghi"))
        + "name: *i\n")


@pytest.mark.parametrize("text, words", [
    ("a: 1\na: 2\n", "line 2: got key 'a' twice, expected each key once"),
    (BOMB, "aliases are expanded"),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nesting deeper than 64"),
    ("x: " + "1" * 5000 + "\n", "more than 4300 digits"),
    ("x: [unclosed\n", "not valid YAML"),
    ("x: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ("--- 1\n--- 2\n", "not valid YAML"),
    ("? [1, 2]\n: x\n", "not valid YAML"),
])
def test_bad_yaml_text_is_a_short_config_error(text, words):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        loads_yaml(text, "f.yaml")
    msg = str(err.value)
    assert msg.startswith("f.yaml: ") and words in msg and len(msg) < 300, msg
    assert time.perf_counter() - start < 5


def test_yaml_aliases_and_merge_keys_that_stay_small_load():
    assert loads_yaml("a: &x {k: 1}\nb: *x\nc: {<<: *x, j: 2}\n", "f.yaml") == {"a": {"k": 1}, "b": {"k": 1}, "c": {"k": 1, "j": 2}}


@pytest.mark.parametrize("text, words", [
    ('{"a": 1, "a": 2}', "got key 'a' twice"),
    ('{"a": NaN}', "got NaN, expected finite numbers"),
    ('{"a": -Infinity}', "got -Infinity"),
    ("[" * 5000 + "]" * 5000, "nesting deeper"),
    ("[" * 100 + "]" * 100, "nesting deeper than 64"),
    ("1" * 5000, "more than 4300 digits"),
    ('{"a": ', "line 1: not valid JSON"),
])
def test_bad_json_text_is_a_short_config_error(text, words):
    with pytest.raises(ConfigError) as err:
        loads_json(text, "r.json")
    msg = str(err.value)
    assert msg.startswith("r.json: ") and words in msg and len(msg) < 300, msg


def test_nan_in_json_only_where_allowed():
    assert str(loads_json('{"a": NaN}', "r.json", allow_nan=True)["a"]) == "nan"


@pytest.mark.parametrize("data, words", [
    (b"a: 1  # caf\xe9\n", "line 1: got byte 0xe9, which is not UTF-8"),
    (b"PK\x03\x04\x00\x00\x08\x00", "got binary data, expected a UTF-8 "),
])
def test_files_that_are_not_utf8_text(tmp_path, data, words):
    path = tmp_path / "x.yaml"
    path.write_bytes(data)
    for reader in (read_text, read_yaml, read_json):
        with pytest.raises(ConfigError) as err:
            reader(path)
        assert str(err.value).startswith(str(path)) and words in str(err.value)


def test_a_bom_is_dropped_and_missing_dirs_and_big_files_are_named(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes("\ufeffa: 1\n".encode())
    assert read_yaml(path) == {"a": 1}
    with pytest.raises(ConfigError, match="no such file"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="got a directory, expected a"):
        read_yaml(tmp_path)
    with pytest.raises(ConfigError, match="got 8 bytes, expected a YAML file of at most 4 bytes"):
        read_yaml(path, max_bytes=4)


def test_echo_is_bounded():
    assert len(echo("x" * 10**6)) < 50
    assert echo(list(range(10**6))) == "a list of 1000000 items"
    assert echo(float("nan")) == "NaN" and echo(None) == "null" and echo(True) == "true"
    assert "digits" in echo(10**4000)


@dataclass(frozen=True)
class Inner:
    k: int = field(metadata=spec(min=1))


@dataclass
class Outer:
    lr: float = field(metadata=spec(gt=0))
    name: str = "x"
    mode: str = field(default="a", metadata=spec(choices=("a", "b")))
    sizes: tuple[int, ...] = field(default=(1,), metadata=spec(min_len=1, each=spec(min=1)))
    inner: Inner = field(default_factory=lambda: Inner(1))
    limit: Optional[int] = field(default=None, metadata=spec(min=1))

    def __post_init__(self):
        if self.name == "bad":
            raise Invalid("name", self.name, "anything but 'bad'")


@pytest.mark.parametrize("data, words", [
    ({"lr": float("nan")}, "key 'lr': got NaN, expected a number > 0 (finite)"),
    ({"lr": float("inf")}, "key 'lr': got inf"),
    ({"lr": -1}, "key 'lr': got -1, expected a number > 0"),
    ({"lr": True}, "key 'lr': got true, expected a number"),
    ({}, "key 'lr': got nothing (the key is missing), expected a number > 0"),
    ({"lr": 1, "lrr": 1}, "key 'lrr': got an unknown key, expected one of lr, name"),
    ({"lr": 1, "mode": "c"}, "key 'mode': got 'c', expected one of a, b"),
    ({"lr": 1, "sizes": "abc"}, "key 'sizes': got 'abc', expected a non-empty list of integers >= 1"),
    ({"lr": 1, "sizes": [1, 0]}, "key 'sizes.1': got 0, expected an integer >= 1"),
    ({"lr": 1, "inner": [1]}, "key 'inner': got a list [1], expected a mapping of k"),
    ({"lr": 1, "inner": {"k": 0}}, "key 'inner.k': got 0, expected an integer >= 1"),
    ({"lr": 1, "limit": 0}, "key 'limit': got 0, expected an integer >= 1 or null"),
    ({"lr": 1, "limit": 10**30}, "key 'limit': got 1000000000000000000000000000000, expected an integer from 1 to 9223372036854775807 or null"),
    ({"lr": 1, "name": "bad"}, "key 'name': got 'bad', expected anything but 'bad'"),
    ({"lr": 1, "name": "y" * 20000}, "key 'name': got a string of 20000 characters"),
    ([1, 2], "got a list [1, 2], expected a mapping of lr, name"),
])
def test_schema_messages(data, words):
    with pytest.raises(ConfigError) as err:
        build(Outer, data, "c.yaml")
    msg = str(err.value)
    assert msg.startswith("c.yaml: ") and words in msg and len(msg) < 300, msg


def test_schema_builds_and_normalises_good_data():
    out = build(Outer, {"lr": 3, "sizes": [2, 3], "inner": {"k": 2}, "limit": None}, "c.yaml")
    assert out == Outer(lr=3.0, sizes=(2, 3), inner=Inner(2)) and isinstance(out.lr, float)
    assert build(Outer, loads_yaml("lr: 3e-5", "c.yaml"), "c.yaml").lr == 3e-5  # YAML 1.1 reads 3e-5 as a string
    with pytest.raises(ConfigError, match="key 'lr': got '0.1', expected a number"):
        build(Outer, {"lr": "0.1"}, "c.yaml")


def test_checksum_sees_every_tensor_byte_and_value():
    import torch

    payload = {"model": {"w": torch.arange(6.0), "b": torch.zeros(2, dtype=torch.bfloat16)}, "epoch": 3}
    base = checksum(payload)
    assert checksum({"epoch": 3, "model": {"b": torch.zeros(2, dtype=torch.bfloat16), "w": torch.arange(6.0)}}) == base
    payload["model"]["w"][3] += 1e-6
    assert checksum(payload) != base
    assert checksum({**payload, "epoch": 4}) != checksum(payload)


def test_every_problem_is_an_edgenas_error():
    assert issubclass(Invalid, EdgeNASError) and issubclass(ConfigError, EdgeNASError)


# ---- every text loader, one set of bad bytes -----------------------------------------------------

def _loaders():
    from edgenas.device.profile import load_profile
    from edgenas.export.card import load_card
    from edgenas.latency.table import LatencyTable
    from edgenas.space import load_space
    from edgenas.train.config import load_config

    return {"space": load_space, "config": load_config, "profile": load_profile, "table": LatencyTable.load,
            "card": load_card}


BAD_BYTES = {
    "latin-1 comment": b"name: x  # caf\xe9\n",
    "binary": bytes(range(256)) * 4,
    "torch zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 64,
    "billion laughs": BOMB.encode(),
    "deep nesting": b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "duplicate key": b"name: a\nname: b\n",
    "huge integer": b"name: " + b"7" * 5000 + b"\n",
    "a list": b"- 1\n- 2\n",
    "empty": b"",
    "yaml tag": b"name: !!python/object/apply:os.system ['true']\n",
}


@pytest.mark.parametrize("kind", ["space", "config", "profile", "table", "card"])
@pytest.mark.parametrize("case", list(BAD_BYTES))
def test_every_loader_turns_bad_bytes_into_one_short_error_naming_the_file(tmp_path, kind, case):
    path = tmp_path / ("model.json" if kind == "card" else "bad.yaml")
    path.write_bytes(BAD_BYTES[case])
    loader = _loaders()[kind]
    start = time.perf_counter()
    try:
        loader(path)
    except EdgeNASError as exc:
        msg = str(exc)
        assert str(path) in msg and "\n" not in msg and len(msg) < 300, msg
        assert "weights_only" not in msg
    else:  # only an empty training config is valid (it means the defaults)
        assert kind == "config" and case == "empty"
    assert time.perf_counter() - start < 10
    assert path.read_bytes() == BAD_BYTES[case]  # a loader never changes its input


@pytest.mark.parametrize("case", ["latin-1 comment", "billion laughs", "deep nesting", "torch zip"])
def test_cli_reports_bad_files_in_one_line_with_exit_2(tmp_path, capsys, case):
    from edgenas.cli import main

    path = tmp_path / "bad.yaml"
    path.write_bytes(BAD_BYTES[case])
    assert main(["space", "info", str(path)]) == 2
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("edgenas: error: ") and str(path) in line for line in err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["space", "config", "profile", "table", "card", "supernet", "predictor", "idx"])
@pytest.mark.parametrize("path", ["a\0b", "~no-such-user-here/x.yaml", "x" * 5000, "/".join(["a"] * 1000), "/dev/zero"])
def test_every_loader_turns_odd_paths_into_one_short_error(kind, path):
    from edgenas.data import load_dataset
    from edgenas.search.predictor import AccuracyPredictor
    from edgenas.train.checkpoint import load_supernet

    loader = {**_loaders(), "supernet": load_supernet, "predictor": AccuracyPredictor.load,
              "idx": lambda p: load_dataset({"name": "idx", "path": p})}[kind]
    with pytest.raises(EdgeNASError) as err:
        loader(path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300, str(err.value)


def test_a_real_torch_file_given_as_yaml_or_json_is_binary(tmp_path):
    import torch

    path = tmp_path / "supernet.yaml"
    torch.save({"model": {"w": torch.zeros(3)}}, path)
    for loader in _loaders().values():
        with pytest.raises(EdgeNASError, match="got binary data, expected a UTF-8"):
            loader(path)
