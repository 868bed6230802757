"""Shared helpers of the foundation benchmarks: statistics, the OFA reference, result files.

Each benchmark writes its figures (with the exact command that produced them) into its own
section of README.md, between `<!-- NAME:begin -->` and `<!-- NAME:end -->`, and its raw
numbers into results/NAME.json.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the OFA import helper lives with the tests that use it

from edgenas.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgenas.space import Arch, SearchSpace  # noqa: E402
from ofa_stubs import import_ofa_mbv3  # noqa: E402, F401  (re-exported)


def summary(seconds) -> dict:
    """Median and spread of a list of timings, in milliseconds."""
    ms = np.asarray(seconds, dtype=float) * 1e3
    return {"n": int(ms.size), "median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def ofa_lists(arch: Arch, space: SearchSpace) -> tuple[list[int], list[float], list[int]]:
    """OFA's set_active_subnet(ks=, e=, d=) lists for `arch`; unused slots get the smallest values."""
    dmax = space.max_depth
    ks = [min(space.kernel_sizes)] * space.num_slots
    es = [min(space.expand_ratios)] * space.num_slots
    for u, blocks in enumerate(arch.units):
        for j, (k, e) in enumerate(blocks):
            ks[u * dmax + j], es[u * dmax + j] = k, e
    return ks, es, list(arch.depths)


def environment() -> dict:
    return {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def publish(name: str, results: dict, markdown: str) -> None:
    """Write results/NAME.json and replace NAME's section of README.md."""
    results = {**results, "command": command()}
    results["environment"]["load_average_at_end"] = list(os.getloadavg())
    atomic_write_json(HERE / "results" / f"{name}.json", results)
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else "# Foundation benchmarks\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{markdown.strip()}\n\nCommand (from the repository root): `{results['command']}`\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(readme, text)
