"""argparse types for every numeric flag, so a bad number is a one-line usage error at the boundary.

    p.add_argument("--population", type=count(2, MAX_POPULATION), default=100)
    p.add_argument("--mutate-prob", type=probability(), default=0.1)

argparse names the flag in its message (`argument --population: expected an integer from 2 to
100000, got '-1'`); the CLI's parser prints that as one line and exits 2. Integers are ASCII
digits only (Python's int() also takes '٢٨' and '1_000'), at most 12 digits, so a 5000-digit value
is refused before it is converted; floats must be finite (no 'nan', 'inf', or '1e400').
"""
from __future__ import annotations

import argparse
import math
import re

# Sane upper bounds: far above any real use, low enough that nothing allocates or loops forever.
MAX_SEED = 2**32 - 1          # numpy and torch both accept it
MAX_THREADS = 1024
MAX_BATCH = 65536
MAX_IMAGES = 10_000_000       # images sampled for BN recalibration, calibration or evaluation
MAX_POPULATION = 100_000
MAX_GENERATIONS = 1_000_000
MAX_EVALUATIONS = 100_000_000
MAX_SAMPLES = 1_000_000       # subnets measured or evaluated
MAX_EPOCHS = 100_000
MAX_RESOLUTION = 4096         # input pixels per side
MAX_RUNS = 100_000            # warm-up / timed runs per model, models per chunk
MAX_RANK = 1_000_000

_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_SHOW = 32  # characters of a bad value echoed back


def _shown(text: str) -> str:
    shown = ascii(text)
    return shown if len(shown) <= _SHOW else shown[:_SHOW - 3] + "..."


def count(lo: int = 1, hi: int = MAX_SAMPLES):
    """An integer in [lo, hi]."""

    def parse(text: str) -> int:
        text = text.strip()
        if _INT.fullmatch(text):
            value = int(text)
            if lo <= value <= hi:
                return value
        raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {_shown(text)}")

    parse.__name__ = f"integer in [{lo}, {hi}]"
    return parse


def number(lo: float = 0.0, hi: float = math.inf, lo_open: bool = True, hi_open: bool = False):
    """A finite float in the interval from lo to hi (open or closed at each end)."""
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    span = f"{left}{lo:g}, {'inf' if hi == math.inf else f'{hi:g}'}{right}"

    def parse(text: str) -> float:
        text = text.strip()
        if _FLOAT.fullmatch(text):
            value = float(text)
            if math.isfinite(value) and (value > lo if lo_open else value >= lo) and (
                    value < hi if hi_open else value <= hi):
                return value
        raise argparse.ArgumentTypeError(f"expected a finite number in {span}, got {_shown(text)}")

    parse.__name__ = f"number in {span}"
    parse.lo = lo  # the smallest value it accepts (the flag tests read it)
    return parse


def positive(hi: float = math.inf):
    """A finite float > 0 (a budget, a tolerance)."""
    return number(0.0, hi, lo_open=True)


def probability(lo_open: bool = False):
    """A float in [0, 1] (or (0, 1] with lo_open)."""
    return number(0.0, 1.0, lo_open=lo_open, hi_open=False)


seed = count(0, MAX_SEED)
threads = count(1, MAX_THREADS)
batch_size = count(1, MAX_BATCH)
resolution = count(1, MAX_RESOLUTION)


def strategy_list(choices):
    """A comma-separated list of strategy names, each one of `choices`, no repeats."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",")]
        bad = [n for n in names if n not in choices]
        if bad or len(set(names)) != len(names) or len(names) < 1:
            raise argparse.ArgumentTypeError(f"expected distinct names from {','.join(choices)}, separated by commas, "
                                             f"got {_shown(text)}")
        return names

    parse.__name__ = "strategy list"
    return parse


def strategy_option(text: str) -> tuple[str, object]:
    """KEY=VALUE for a search strategy's option: VALUE an integer, a finite number, true/false, or
    a word (e.g. reward=soft). Whether the strategy takes KEY is checked when the search starts."""

    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", key) or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. batch=50), got {_shown(text)}")
    if _INT.fullmatch(value):
        return key, int(value)
    if _FLOAT.fullmatch(value):
        number = float(value)
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"expected a finite number for {key}, got {_shown(value)}")
        return key, number
    if value in ("true", "false"):
        return key, value == "true"
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,40}", value):
        return key, value
    raise argparse.ArgumentTypeError(f"expected a number, true/false or a word for {key}, got {_shown(value)}")


def walk_flags(parser, path: tuple[str, ...] = ()):
    """(subcommand path, action) for every option of `parser` and its subcommands that has a
    type: what the flag tests and the bad-input benchmark feed values to."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk_flags(sub, path + (name,))
        elif action.option_strings and action.type is not None:
            yield list(path), action


def proxy_names(text: str) -> list[str]:
    """A comma-separated list of zero-cost proxy names (`edgenas eval --proxies synflow,naswot`)."""
    from edgenas.search.proxies import PROXIES

    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in PROXIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected proxy names from {', '.join(PROXIES)} separated by commas, "
                                         f"got {_shown(bad[0] if bad else text)}")
    return list(dict.fromkeys(names))


def predictor_feature(text: str) -> str:
    """An accuracy-predictor feature block: onehot, costs or proxy:NAME (`edgenas predictor build --features`)."""
    from edgenas.search.predictor import feature_names, known_feature

    text = text.strip()
    if known_feature(text):
        return text
    from edgenas.search.proxies import PROXIES

    raise argparse.ArgumentTypeError(f"expected one of {feature_names()} with NAME one of {', '.join(PROXIES)}, "
                                     f"got {_shown(text)}")


def accuracy_source(text: str) -> str:
    """"predictor" or "proxy:NAME" (`edgenas search --accuracy`)."""
    from edgenas.search.proxies import PROXIES

    text = text.strip()
    if text == "predictor" or (text.startswith("proxy:") and text[len("proxy:"):] in PROXIES):
        return text
    raise argparse.ArgumentTypeError(f"expected 'predictor' or proxy:NAME with NAME one of {', '.join(PROXIES)}, "
                                     f"got {_shown(text)}")
