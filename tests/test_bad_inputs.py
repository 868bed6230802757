"""Property-based tests: every loader and every numeric CLI flag, fed random and mutated input.

The contract (issue #16): bad input is an `EdgeNASError` from the library loader, and through the
CLI exit status 2 with exactly one line on stderr, `edgenas: error: ...`, under 300 characters, no
traceback; no input file is ever changed. A mutation may leave a file valid (a flipped byte in a
comment), so for most mutations the property is "loads, or fails by the contract"; the mutations
that can never be valid (non-UTF-8 bytes, alias bombs, 5000-deep nesting, duplicate keys, NaN or
inf in a number, flipped bytes inside a checkpoint's tensors, truncation of a binary file) must fail.

The files mutated are real ones: a tiny supernet from `edgenas train`, a predictor from `edgenas
predictor build`, a table from `edgenas profile`, results from `edgenas search`, all built once
per module through `edgenas.cli.main`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from conftest import DELETE, set_in
from edgenas.cli import build_parser, main
from edgenas.errors import EdgeNASError

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- real files, built once -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory, one_thread):
    d = tmp_path_factory.mktemp("real")
    run = d / "run"
    quick = ["--set", "schedule.name=sandwich", "--set", "schedule.phases.0.epochs=1",
             "--set", "train.steps_per_epoch=2", "--set", "train.val_bn_images=16",
             "--set", "train.bn_recal_images=16", "--set", "data.limit=64"]
    assert main(["-q", "train", str(REPO / "configs/digits-tiny.yaml"), "--out", str(run), "--no-progress"] + quick) == 0
    ckpt = run / "supernet.pt"
    assert main(["-q", "predictor", "build", str(ckpt), "--samples", "5", "--calib-images", "16", "--epochs", "2"]) == 0
    table = d / "table.yaml"
    assert main(["-q", "profile", str(REPO / "device_profiles/local-cpu.yaml"), "--space", "mbv3-tiny",
                 "--resolutions", "24", "--calibrate", "0", "--runs", "1", "--warmup", "1", "--out", str(table)]) == 0
    results = d / "search.json"
    assert main(["-q", "search", "--supernet", str(ckpt), "--latency-table", str(table), "--latency-ms", "50",
                 "--resolutions", "24", "--population", "4", "--generations", "1", "--out", str(results)]) == 0
    return {
        "space": REPO / "edgenas/space/presets/mbv3-tiny.yaml",
        "config": run / "config.yaml",
        "profile": REPO / "device_profiles/local-cpu.yaml",
        "table": table,
        "results": results,
        "predictor": run / "supernet.predictor.pt",
        "checkpoint": ckpt,
    }


@pytest.fixture
def scratch():
    with tempfile.TemporaryDirectory(prefix="edgenas-fuzz-") as d:
        yield Path(d)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(text: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text, text[:600]
    assert len(text.strip()) < 300, text[:600]


# ---- loaders ----------------------------------------------------------------------------------------

def _load(kind: str, path: Path):
    if kind == "space":
        from edgenas.space import load_space
        return load_space(path)
    if kind == "config":
        from edgenas.train.config import load_config
        return load_config(path)
    if kind == "profile":
        from edgenas.device import load_profile
        return load_profile(path)
    if kind == "table":
        from edgenas.latency import LatencyTable
        return LatencyTable.load(path)
    if kind == "results":
        from edgenas.search.results import load_results
        return load_results(path)
    if kind == "predictor":
        from edgenas.search.predictor import AccuracyPredictor
        return AccuracyPredictor.load(path)
    if kind == "checkpoint":
        from edgenas.train.checkpoint import load_supernet
        return load_supernet(path)
    raise AssertionError(kind)


def _check_loader(kind: str, path: Path, must_fail: bool) -> None:
    before = _sha(path)
    try:
        _load(kind, path)
    except EdgeNASError as exc:
        _one_line(str(exc))
    else:
        assert not must_fail, f"{kind}: accepted a file that cannot be valid"
    assert _sha(path) == before, f"{kind}: the loader changed its input"


# ---- mutations of text files ------------------------------------------------------------------------

BAD_VALUES = [math.nan, math.inf, -math.inf, -1, 0, -1e300, "@@HUGE@@", "x" * 50, "", [], [1, [2]], {"a": 1},
              None, True, "١٢"]


def _paths(tree, prefix=()):
    """Every (path, value) of a parsed YAML/JSON tree, leaves and inner nodes."""
    yield prefix, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:8]):
            yield from _paths(v, prefix + (i,))




def _dump(tree, fmt: str) -> bytes:
    if fmt == "json":
        text = json.dumps(tree)  # NaN and Infinity come out as JSON's non-standard literals
    else:
        text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    return _unmark(text, "@@HUGE@@", "9" * 5000).encode()  # a 5000-digit integer


def _unmark(text: str, marker: str, value: str) -> str:
    for quoted in (f'"{marker}"', f"'{marker}'", marker):
        text = text.replace(quoted, value)
    return text


def _deep(n: int, fmt: str) -> str:  # n nested lists, in YAML's flow style and in JSON
    return "[" * n + "]" * n


BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n")


@st.composite
def text_mutation(draw, original: bytes, fmt: str):
    """(mutated bytes, must_fail) for a YAML or JSON file."""
    kind = draw(st.sampled_from(["flip", "truncate", "latin1", "binary", "value", "delete", "duplicate",
                                 "nest", "bomb", "nan"]))
    n = len(original)
    if kind == "flip":
        data = bytearray(original)
        for pos in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
            data[pos] ^= draw(st.integers(1, 255))
        return bytes(data), False
    if kind == "truncate":
        # a JSON document cut before its closing bracket never parses
        return original[:draw(st.integers(0, len(original.rstrip()) - 1))], fmt == "json"
    if kind == "latin1":
        pos = draw(st.integers(0, n))
        return original[:pos] + draw(st.sampled_from([b"\xe9", b"\xff\xfe", b"# caf\xe9\n", b"\x80"])) + original[pos:], True
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=2000)) + b"\x00" + original[:100], True
    if kind == "bomb":
        return BOMB.encode() if fmt == "yaml" else original[:0] + _deep(5000, fmt).encode(), True
    if kind == "nest":
        depth = draw(st.sampled_from([100, 1000, 5000]))
        tree = json.loads(original) if fmt == "json" else yaml.safe_load(original)
        paths = [p for p, _ in _paths(tree) if p]
        path = draw(st.sampled_from(paths))
        text = _dump(set_in(tree, path, "@@DEEP@@"), fmt).decode()
        return _unmark(text, "@@DEEP@@", _deep(depth, fmt)).encode(), True
    if kind == "duplicate":
        tree = json.loads(original) if fmt == "json" else yaml.safe_load(original)
        assume(isinstance(tree, dict) and tree)
        key = draw(st.sampled_from(list(tree)))
        if fmt == "json":
            body = json.dumps(tree)
            return ("{" + json.dumps(key) + ": " + json.dumps(tree[key]) + ", " + body[1:]).encode(), True
        return original + b"\n" + yaml.safe_dump({key: tree[key]}).encode(), True
    tree = json.loads(original) if fmt == "json" else yaml.safe_load(original)
    paths = [(p, v) for p, v in _paths(tree) if p]
    if kind == "nan":
        numbers = [p for p, v in paths if isinstance(v, float) and not isinstance(v, bool)]
        assume(numbers)
        return _dump(set_in(tree, draw(st.sampled_from(numbers)), draw(st.sampled_from([math.nan, math.inf, -math.inf]))), fmt), True
    path, _ = draw(st.sampled_from(paths))
    if kind == "delete":
        return _dump(set_in(tree, path, DELETE), fmt), False
    return _dump(set_in(tree, path, draw(st.sampled_from(BAD_VALUES))), fmt), False


TEXT = [("space", "yaml"), ("config", "yaml"), ("profile", "yaml"), ("table", "yaml"), ("results", "json")]


@pytest.mark.parametrize("kind,fmt", TEXT, ids=[k for k, _ in TEXT])
def test_mutated_text_files_load_or_fail_by_the_contract(kind, fmt, real, scratch):
    original = real[kind].read_bytes()

    @SETTINGS
    @given(mutation=text_mutation(original, fmt))
    def prop(mutation):
        data, must_fail = mutation
        path = scratch / f"bad.{fmt}"
        path.write_bytes(data)
        _check_loader(kind, path, must_fail)

    prop()


@SETTINGS
@given(section=st.dictionaries(st.sampled_from(["name", "path", "image_size", "val_fraction", "seed", "limit",
                                                "class_names", "in_memory", "bogus"]),
                               st.sampled_from(BAD_VALUES + ["digits", "cifar10", 28, 0.5, ["a", "b"]]),
                               max_size=4))
def test_data_config_sections(section):
    from edgenas.data.config import DataConfig
    try:
        DataConfig.from_dict(section)
    except EdgeNASError as exc:
        _one_line(str(exc))


# ---- mutations of torch files -----------------------------------------------------------------------

def _flip_middle(data: bytes, start_frac: float, size: int, seed: int) -> bytes:
    import random
    rng = random.Random(seed)
    start = int(len(data) * start_frac)
    out = bytearray(data)
    for i in range(start, min(start + size, len(out))):
        out[i] ^= rng.randrange(1, 256)
    return bytes(out)


@pytest.mark.parametrize("kind", ["predictor", "checkpoint"])
def test_corrupt_torch_files_are_refused(kind, real, scratch):
    original = real[kind].read_bytes()

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(how=st.sampled_from(["flip", "truncate"]), frac=st.floats(0.3, 0.7), size=st.integers(64, 4096),
           seed=st.integers(0, 1000))
    def prop(how, frac, size, seed):
        path = scratch / f"bad.pt"
        path.write_bytes(_flip_middle(original, frac, size, seed) if how == "flip" else original[:int(len(original) * frac)])
        _check_loader(kind, path, must_fail=True)

    prop()


@pytest.mark.parametrize("kind", ["predictor", "checkpoint"])
def test_torch_payload_values_replaced(kind, real, scratch):
    payload = torch.load(real[kind], weights_only=True)
    keys = sorted(payload)

    @settings(max_examples=10, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(key=st.sampled_from(keys), value=st.sampled_from(BAD_VALUES[:-1] + [DELETE]))
    def prop(key, value):
        bad = dict(payload)
        if value is DELETE:
            del bad[key]
        else:
            bad[key] = value
        path = scratch / "bad.pt"
        torch.save(bad, path)
        # Every key is covered by the file's checksum or checked itself: a change is never accepted,
        # except a missing checksum, which is how files written before checksums load (with a warning).
        _check_loader(kind, path, must_fail=not (key == "checksum" and value in (None, DELETE)))

    prop()


# ---- the CLI: files --------------------------------------------------------------------------------

def _cli(argv, inputs, capsys):
    hashes = {p: _sha(p) for p in inputs}
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err[:600])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenas"), (argv, err[:600])
    _one_line(err)
    for p, h in hashes.items():
        assert _sha(p) == h, f"{p} changed"
    return lines[0]


def _argv(kind: str, bad: Path, real, out: Path) -> list[str]:
    ck, tb, pr = str(real["checkpoint"]), str(real["table"]), str(real["predictor"])
    search = ["search", "--supernet", ck, "--latency-table", tb, "--predictor", pr, "--latency-ms", "50",
              "--resolutions", "24", "--population", "4", "--generations", "1", "--out", str(out / "r.json")]
    if kind == "space":
        return ["space", "info", str(bad)]
    if kind == "config":
        return ["train", str(bad), "--out", str(out / "run")]
    if kind == "profile":
        return ["device", "check", str(bad)]
    if kind == "table":
        return [x if x != tb else str(bad) for x in search]
    if kind == "predictor":
        return [x if x != pr else str(bad) for x in search]
    if kind == "checkpoint":
        return [x if x != ck else str(bad) for x in search]
    if kind == "results":
        return ["export", "--supernet", ck, "--from", str(bad), "--out", str(out / "export")]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,fmt", TEXT, ids=[k for k, _ in TEXT])
def test_cli_answers_files_that_cannot_be_valid_in_one_line(kind, fmt, real, scratch, capsys):
    original = real[kind].read_bytes()

    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(mutation=text_mutation(original, fmt))
    def prop(mutation):
        data, must_fail = mutation
        assume(must_fail)
        bad = scratch / f"bad.{fmt}"
        bad.write_bytes(data)
        line = _cli(_argv(kind, bad, real, scratch), [bad, *real.values()], capsys)
        assert line.startswith("edgenas: error:") and "bad." in line, line  # names the file

    prop()


@pytest.mark.parametrize("kind", ["predictor", "checkpoint"])
def test_cli_refuses_corrupt_weights(kind, real, scratch, capsys):
    bad = scratch / "bad.pt"
    bad.write_bytes(_flip_middle(real[kind].read_bytes(), 0.5, 4096, 0))
    line = _cli(_argv(kind, bad, real, scratch), [bad, *real.values()], capsys)
    assert line.startswith("edgenas: error:") and "bad.pt" in line, line


# ---- the CLI: numeric flags -------------------------------------------------------------------------

def _numeric_flags():
    from edgenas.cli.types import walk_flags

    return [(p, a) for p, a in walk_flags(build_parser()) if getattr(a.type, "__module__", "") == "edgenas.cli.types"]


FLAGS = _numeric_flags()
NOT_A_NUMBER = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "", " ", "abc", "0x10", "1_0", "١٢", "二",
                     "1,5", "--", "None", "[1]", "9" * 5000, "-" + "9" * 400]),
    st.text(alphabet=st.characters(blacklist_categories=["Nd", "Cs"]), min_size=1, max_size=20).filter(
        lambda s: s.strip() not in ("", "+", "-") and not s.startswith("-")),
)


@pytest.mark.parametrize("path,action", FLAGS, ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, a in FLAGS])
def test_numeric_flags_refuse_what_is_not_a_number(path, action, real, scratch, capsys):
    flag = action.option_strings[-1]

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(value=NOT_A_NUMBER)
    def prop(value):
        line = _cli(path + [f"{flag}={value}"], list(real.values()), capsys)
        assert flag in line, line

    prop()


@pytest.mark.parametrize("path,action", FLAGS, ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, a in FLAGS])
def test_numeric_flags_accept_only_finite_bounded_values(path, action):
    """Any number either parses to a finite value that parses again to itself, or is refused."""

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(value=st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                           st.integers(-3, 3)))
    def prop(value):
        try:
            parsed = action.type(str(value))
        except argparse.ArgumentTypeError as exc:
            _one_line(str(exc))
            return
        if isinstance(parsed, (int, float)):
            assert math.isfinite(parsed) and parsed >= getattr(action.type, "lo", 0), (value, parsed)
            assert not isinstance(parsed, int) or parsed < 2**63
            assert action.type(str(parsed)) == parsed

    prop()


# ---- hand-picked cases the benchmark (benchmarks/robustness) found ------------------------------------

@pytest.mark.parametrize("argv", [["search", "--out", ""], ["predictor", "build", "x.pt", "--out", " "],
                                  ["export", "--supernet", "x", "--arch", "y", "--out", ""],
                                  ["train", "--out", ""], ["profile", "local-cpu", "--space", "mbv3-tiny", "--plot", ""]])
def test_an_empty_flag_value_is_refused_not_replaced_by_the_default(argv, capsys):
    flag = argv[-2]
    line = _cli(argv, [], capsys)
    assert flag in line and "empty" in line, line


@pytest.mark.parametrize("key,value", [("seconds", -1.0), ("resolutions", "x?y"), ("resolutions", [-24]),
                                       ("seed", -5), ("evaluations", 1.5)])
def test_results_records_are_checked(key, value, real, scratch):
    data = json.loads(real["results"].read_text())
    data[key] = value
    bad = scratch / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(EdgeNASError, match=f"key '{key}"):
        _load("results", bad)


def test_table_runtime_options_have_their_shape(real, scratch):
    data = yaml.safe_load(real["table"].read_text())
    data["header"]["runtime_options"] = {"providers": "x?y"}
    bad = scratch / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(EdgeNASError, match="header.runtime_options.providers"):
        _load("table", bad)


def test_a_whole_file_echoed_in_a_message_stays_short(real, scratch):
    bad = scratch / "bad.yaml"
    bad.write_text(yaml.safe_dump([yaml.safe_load(real["profile"].read_text())]))
    with pytest.raises(EdgeNASError) as exc:
        _load("profile", bad)
    assert len(str(exc.value)) < 300, str(exc.value)


def test_train_config_of_its_own_run_is_refused_in_one_short_line(real, capsys):
    line = _cli(["train", str(real["config"]), "--out", str(real["config"].parent)], list(real.values()), capsys)
    assert "--resume" in line, line
