"""Every numeric flag of every subcommand is checked by argparse at the boundary: a bad value is
exit 2 and one line naming the flag, with no traceback and before any work."""
from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given, settings, strategies as st

from edgenas.cli import build_parser, main
from edgenas.cli import types as T


FLAGS = list(T.walk_flags(build_parser()))
IDS = [f"{' '.join(p)} {a.option_strings[-1]}" for p, a in FLAGS]


def test_every_numeric_flag_uses_a_checked_type():
    assert len(FLAGS) > 30  # the walk found the subcommands' flags
    for path, action in FLAGS:
        assert action.type not in (int, float), f"{' '.join(path)} {action.option_strings}: plain {action.type}"
        assert getattr(action.type, "__module__", "") == T.__name__ or action.type.__name__ == "Path", (path, action)


@pytest.mark.parametrize("path,action", FLAGS, ids=IDS)
def test_the_default_is_a_valid_value(path, action):
    if action.default is None or action.type.__module__ != T.__name__:
        return
    if action.nargs is None and isinstance(action.default, list):  # action="append": each item is a value
        assert all(action.type(str(d)) == d for d in action.default)
        return
    assert action.type(str(action.default)) == action.default


BAD = ["-1", "nan", "inf", "-inf", "1e400", "9" * 5000, "\u0662\u0668", "abc", "", "1_000", "0x10", "1e9999999"]


@pytest.mark.parametrize("path,action", [f for f in FLAGS if f[1].type.__module__ == T.__name__],
                         ids=[i for i, f in zip(IDS, FLAGS) if f[1].type.__module__ == T.__name__])
def test_bad_values_are_one_line_naming_the_flag(path, action, capsys):
    flag = action.option_strings[-1]
    too_big = ["100000000000"] if action.type.__name__.startswith("integer") else ["1e300"] if "inf" not in action.type.__name__ else []
    below = [] if getattr(action.type, "lo", 0) > -1 else ["-1"]  # -1 is a value where the flag allows negatives
    for bad in [b for b in BAD if b not in below] + too_big:
        with pytest.raises(SystemExit) as exc:
            main(path + [f"{flag}={bad}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err, (bad, err[:300])
        assert len(lines[0]) < 300


def test_integer_bounds_and_ascii_digits():
    c = T.count(2, 10)
    assert c("2") == 2 and c(" 10 ") == 10 and c("+3") == 3
    for bad in ("1", "11", "2.0", "\u0662", "1_0", "", "-"):
        with pytest.raises(argparse.ArgumentTypeError):
            c(bad)


def test_float_intervals():
    p = T.probability()
    assert p("0") == 0 and p("1") == 1 and p(".5") == 0.5
    q = T.probability(lo_open=True)
    with pytest.raises(argparse.ArgumentTypeError):
        q("0")
    pos = T.positive()
    assert pos("1e-3") == 1e-3 and pos("5") == 5.0
    for bad in ("0", "-0.1", "nan", "inf", "1e400", "1e"):
        with pytest.raises(argparse.ArgumentTypeError):
            pos(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_value_in_range_or_a_type_error(text):
    for parse, lo, hi in ((T.count(0, 100), 0, 100), (T.positive(1.0), 0.0, 1.0)):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as exc:
            assert len(str(exc)) < 120
        else:
            assert lo <= value <= hi and math.isfinite(value)


@pytest.mark.parametrize("value", ["-1", "0", ".nan", "1e400", "9" * 5000, "[1, 2]", "{a: 1}"])
def test_set_overrides_are_checked_with_a_short_message(value, tmp_path, capsys):
    """`--set` values go through the training config's schema (edgenas.validate) before any work."""
    assert main(["train", "--out", str(tmp_path / "run"), "--set", f"train.batch_size={value}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "train.batch_size" in lines[0] and len(lines[0]) < 300, lines
    assert not (tmp_path / "run").exists()
