"""The latency lookup table: per-layer latencies of one device, and the latency of whole subnets.

A table file (`latency_tables/NAME.yaml`) is YAML with two parts:

    header:                       # what, where, how; see `LatencyTable.create`
      format: edgenas-latency-table
      format_version: 1
      space: {name: mbv3-w1.0, hash: 1a2b3c4d5e6f}
      device: {profile, profile_key, transport, fingerprint: {cpu_model, cores, os, ...}}
      runtime: onnxruntime, runtime_version: 1.32.0, threads: 1, warmup: 10, runs: 50
      statistic: median           # which value of an entry predictions use
      calibration: {...}          # see `Calibration`; `per_type`: the per-op-type correction
    ops:                          # OFA-style readable keys, values in milliseconds
      expanded_conv-input:56x56x24-output:28x28x40-expand:72-kernel:5-stride:2-idskip:0-se:1-hs:0:
        {mean: 0.41, median: 0.40, std: 0.02, count: 50}

`predict(arch)` sums the layers of `arch` and applies the calibration (the line, or with a
per-type correction each layer scaled by its op type's scale; see edgenas.latency.calibration);
a layer missing from the table raises `MissingKeyError` naming its key (never a silent zero).
`predictor(space)` gives the vectorised form over genomes (`edgenas.space.encode`) for search,
with the per-type scales folded into its lookup arrays (as fast as the line).

OFA's published tables (`{160..224}_lookup_table.yaml`, entries {count, mean, std}) load as a
table for the space mbv3-w1.2 with `LatencyTable.load_ofa(dir)` or `LatencyTable.load(dir)`.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import yaml

from edgenas import __version__
from edgenas.errors import ConfigError, EdgeNASError
from edgenas.io import atomic_write_text
from edgenas.latency.calibration import Calibration, fit_calibration, op_type  # noqa: F401 (re-exported)
from edgenas.latency.schema import check_ofa, check_table, looks_like_ofa
from edgenas.space.arch import Arch, decode, genome_of
from edgenas.space.ops import arch_ops
from edgenas.space.space import SearchSpace, load_space, preset_names
from edgenas.validate import message, read_yaml, user_path

TABLE_FORMAT = "edgenas-latency-table"
FORMAT_VERSION = 1
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_OFA_FILE = re.compile(r"(\d+)_lookup_table\.ya?ml$")


class MissingKeyError(EdgeNASError):
    """A layer a prediction needs is not in the latency table."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def entry(mean: float, median: float | None, std: float, count: int) -> dict:
    """A table entry, rounded to nanoseconds for readable files."""
    e = {"mean": round(float(mean), 6)}
    if median is not None:
        e["median"] = round(float(median), 6)
    e["std"] = round(float(std), 6)
    e["count"] = int(count)
    return e


class LatencyTable:
    """Per-layer latencies (ms) for one device and space, with header and calibration."""

    def __init__(self, header: dict, ops: dict[str, dict] | None = None, path: str | Path | None = None):
        self.header = header
        self.ops: dict[str, dict] = dict(ops or {})
        self.path = Path(path) if path is not None else None
        self._predictors: dict[str, LatencyPredictor] = {}
        self._space: SearchSpace | None = None  # resolved and checked once

    # ---- creating, loading, saving ---------------------------------------------------------
    @classmethod
    def create(cls, space: SearchSpace, name: str, **fields) -> "LatencyTable":
        """An empty table; `fields` (device, runtime, runtime_version, threads, ...) go into the header."""
        header = {
            "format": TABLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "space": _space_header(space),
            "created": now(),
            "updated": now(),
            "edgenas_version": __version__,
            "units": "ms",
            "statistic": "median",
        }
        header.update(fields)
        return cls(header)

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """An edgenas table file, or OFA's published tables (a directory, or one `R_lookup_table.yaml`)."""
        path = user_path(path, "latency table")
        if path.is_dir():
            return cls.load_ofa(path)
        if not path.is_file():
            raise ConfigError(f"latency table {path} not found; build one with: edgenas profile PROFILE --space NAME")
        data = _read_yaml(path)
        if isinstance(data, dict) and "header" in data:
            return cls._from_dict(data, path)
        if _OFA_FILE.search(path.name) and looks_like_ofa(data):
            return cls.load_ofa(path)
        raise ConfigError(message(str(path), None, "a file without a 'header'",
                                  "a latency table (header and ops) or an OFA R_lookup_table.yaml"))

    @classmethod
    def _from_dict(cls, data: dict, path: Path) -> "LatencyTable":
        header, ops = check_table(data, str(path))
        return cls(header, ops, path)

    @classmethod
    def load_ofa(cls, path: str | Path, space: SearchSpace | str = "mbv3-w1.2") -> "LatencyTable":
        """OFA's `{resolution}_lookup_table.yaml` files (a directory of them, or one file).

        The feature-mix and classifier keys repeat in every file with slightly different values;
        they are merged into one entry (count-weighted mean and pooled std)."""
        path, space = Path(path), load_space(space)
        files = sorted(path.glob("*_lookup_table.yaml")) if path.is_dir() else [path]
        files = [f for f in files if _OFA_FILE.search(f.name)]
        if not files:
            raise ConfigError(f"{path}: no OFA lookup tables (files named like 160_lookup_table.yaml)")
        merged: dict[str, list[dict]] = {}
        resolutions = []
        for f in files:
            data = check_ofa(_read_yaml(f), str(f))
            resolutions.append(int(_OFA_FILE.search(f.name).group(1)))
            for key, e in data.items():
                merged.setdefault(key, []).append(e)
        ops = {key: _pool(es) for key, es in merged.items()}
        table = cls.create(space, f"ofa-note10-{space.name}", source=f"OFA published lookup tables ({path})",
                           device={"profile": "ofa-note10", "description": "Samsung Galaxy Note10, as published by OFA"},
                           runtime="tflite (OFA's measurement)", resolutions=sorted(resolutions), statistic="mean",
                           calibration={"note": "none: OFA's tables carry no calibration", "overhead_ms": 0.0,
                                        "scale": 1.0, "offset_ms": 0.0})
        table.ops = ops
        table.path = path
        return table

    def to_dict(self) -> dict:
        return {"header": self.header, "ops": self.ops}

    def dumps(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=200)

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temporary file + rename) to `path` or where it was loaded from."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise ValueError("no path to save the latency table to")
        self.header["updated"] = now()
        atomic_write_text(path, self.dumps())
        self.path = path
        return path

    # ---- entries ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.header.get("name", self.path.stem if self.path else "latency table"))

    @property
    def resolutions(self) -> list[int]:
        """The input resolutions the table was measured at (a subnet at another one is a missing key)."""
        return [int(r) for r in (self.header.get("resolutions") or self.space().resolutions)]

    @property
    def precision(self) -> str:
        """The precision of the models the table timed ("fp32" for tables that do not say)."""
        return str(self.header.get("precision", "fp32"))

    @property
    def calibration(self) -> Calibration:
        return Calibration.from_header(self.header)

    @property
    def unreliable(self) -> list[str]:
        """Why the table's calibration subnets do not support its predictions (empty: nothing
        against it; see edgenas.latency.calibration). Tables written before the check say nothing."""
        check = (self.header.get("calibration") or {}).get("check") or {}
        return [] if check.get("reliable", True) else list(check.get("reasons") or ["marked unreliable"])

    def set(self, key: str, e: dict) -> None:
        self.ops[key] = e
        self._predictors.clear()

    def update_calibration(self, **fields) -> None:
        """Change `header.calibration` (predictors built before are dropped)."""
        self.header.setdefault("calibration", {}).update(fields)
        self._predictors.clear()

    def __contains__(self, key: str) -> bool:
        return key in self.ops

    def __len__(self) -> int:
        return len(self.ops)

    def value(self, key: str) -> float:
        """The latency (ms) of one layer, by the header's statistic (median; mean if absent)."""
        e = self.ops.get(key)
        if e is None:
            raise MissingKeyError(
                f"latency table {self.name} has no entry for {key}; measure it with: edgenas profile PROFILE "
                f"--space {self.header.get('space', {}).get('name', 'SPACE')} --out {self.path or 'TABLE'}"
            )
        return float(e.get(self.header.get("statistic", "median"), e["mean"]))

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.ops]

    # ---- prediction ------------------------------------------------------------------------
    def space(self, space: SearchSpace | str | None = None) -> SearchSpace:
        """The table's space (from the header), or `space` after checking it is the same one."""
        info = self.header.get("space") or {}
        if space is None and self._space is not None:
            return self._space
        if isinstance(space, SearchSpace) and self._space is not None and space.hash == self._space.hash:
            return space
        if space is None:
            if "definition" in info:
                space = SearchSpace.from_dict(info["definition"], source=f"{self.name} header")
            elif info.get("name") in preset_names():
                space = load_space(info["name"])
            else:
                raise EdgeNASError(f"latency table {self.name} does not say which space it is for; pass the space")
        space = load_space(space)
        if info.get("hash") not in (None, space.hash):
            raise EdgeNASError(
                f"latency table {self.name} was built for space {info.get('name')} (hash {info.get('hash')}), "
                f"not {space.name} (hash {space.hash}); profile this space or pass the right table"
            )
        self._space = space
        return space

    def breakdown(self, arch: Arch, space: SearchSpace | str | None = None) -> list[tuple[str, float]]:
        """(key, ms) for every layer of `arch`, raw table values in network order."""
        return [(op.key, self.value(op.key)) for op in arch_ops(self.space(space), arch)]

    def predict_raw(self, arch: Arch, space: SearchSpace | str | None = None) -> float:
        """Sum of the layers of `arch`, each less the per-call overhead; no scale or offset."""
        ov = self.calibration.overhead_ms
        return float(sum(max(v - ov, 0.0) for _, v in self.breakdown(arch, space)))

    def type_sums(self, arch: Arch, space: SearchSpace | str | None = None) -> dict[str, float]:
        """{op type: sum of the arch's layers of that type, each less the per-call overhead}
        (the inputs of the per-type correction, `edgenas.latency.calibration.op_type`)."""
        ov = self.calibration.overhead_ms
        out: dict[str, float] = {}
        for op in arch_ops(self.space(space), arch):
            t = op_type(op)
            out[t] = out.get(t, 0.0) + max(self.value(op.key) - ov, 0.0)
        return out

    def predict(self, arch: Arch | Iterable[Arch], space: SearchSpace | str | None = None, *,
                calibration: Calibration | None = None):
        """Predicted latency (ms) of one arch, or an array for a list of archs; `calibration`
        (default: the header's) is for the profiler, which checks one before it records it."""
        if isinstance(arch, Arch):
            cal = self.calibration if calibration is None else calibration
            if cal.per_type:
                ov = cal.overhead_ms
                return float(sum(cal.layer_scale(op_type(op)) * max(self.value(op.key) - ov, 0.0)
                                 for op in arch_ops(self.space(space), arch)) + cal.offset_ms)
            return float(cal.apply(self.predict_raw(arch, space)))
        return np.array([self.predict(a, space, calibration=calibration) for a in arch])

    def underprediction(self, space: SearchSpace | str | None = None, quantile: float = 0.9) -> float:
        """How far whole subnets measure above the table's prediction: the `quantile` of
        (measured / predicted - 1) over the calibration subnets, floored at 0.0 (also with no
        calibration). A search that must hold a *measured* budget can aim this much below it;
        a quantile rather than the maximum keeps one subnet measured in a slow spell of the
        device from pulling every search far under its budget."""
        nets = (self.header.get("calibration") or {}).get("networks") or {}
        space = self.space(space)
        stat = self.header.get("statistic", "median")
        excess = []
        for arch, e in nets.items():
            predicted = self.predict(Arch.parse(arch, space), space)
            if predicted > 0:
                excess.append(float(e.get(stat, e["mean"])) / predicted - 1.0)
        return max(0.0, float(np.quantile(excess, quantile))) if excess else 0.0

    def predictor(self, space: SearchSpace | str | None = None) -> "LatencyPredictor":
        """The vectorised predictor for `space` (built once per table and calibration)."""
        space = self.space(space)
        if space.hash not in self._predictors:
            self._predictors[space.hash] = LatencyPredictor(self, space)
        return self._predictors[space.hash]

    def predict_genomes(self, genomes: np.ndarray, space: SearchSpace | str | None = None) -> np.ndarray:
        return self.predictor(space)(genomes)


class LatencyPredictor:
    """Vectorised `LatencyTable.predict` over genomes, for search.

    Precomputes per resolution the fixed layers' sum and a [resolution, slot, kernel, expand]
    table of block latencies (overhead already subtracted), like `edgenas.space.CostTable`; a
    call is then a gather and a masked row sum. With a per-type calibration each entry is
    already multiplied by its op type's scale, so a call costs the same as with the line.
    Entries missing from the table are NaN; if a genome needs one, the call raises
    `MissingKeyError` naming the key. `calibration` (default: the table's) is for the profiler,
    which checks a calibration before it writes it.
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, calibration: Calibration | None = None):
        from edgenas.latency.ops import block_variant, slot_layout

        self.table, self.space = table, space
        self.calibration = cal = table.calibration if calibration is None else calibration
        self.genome = g = genome_of(space)
        ks, es = space.kernel_sizes, space.expand_ratios
        nr, ns, nk, ne = len(space.resolutions), space.num_slots, len(ks), len(es)
        ov = self.calibration.overhead_ms

        def get(op) -> float:
            if op.key not in table.ops:
                return math.nan
            v = max(table.value(op.key) - ov, 0.0)
            return cal.layer_scale(op_type(op)) * v if cal.per_type else v

        self.fixed = np.zeros(nr)
        slot = np.zeros((nr, ns, nk, ne))
        for ri, r in enumerate(space.resolutions):
            fixed, slots = slot_layout(space, r)
            self.fixed[ri] = sum(get(op) for op in fixed)
            for s, op in enumerate(slots):
                for ki, k in enumerate(ks):
                    for ei, e in enumerate(es):
                        slot[ri, s, ki, ei] = get(block_variant(space, op, k, e))
        self.slot = slot.reshape(-1)
        self._slot_base = np.arange(ns) * nk * ne  # flat offset of each slot within a resolution
        self._res_base = np.arange(nr) * ns * nk * ne
        self._ne = ne
        # [depth index, position in unit] -> is that block active
        self._active = np.arange(space.max_depth)[None, :] < np.asarray(space.depths)[:, None]

    def lowest(self) -> np.ndarray:
        """Per resolution of the space, the least `raw` of any subnet (NaN where an entry it may
        need is missing): the fixed layers, and each unit's first min-depth blocks at their
        cheapest kernel and expand. Every term is >= 0, so fewer blocks never cost more."""
        nr, ns = len(self.space.resolutions), self.space.num_slots
        cheapest = self.slot.reshape(nr, ns, -1).min(-1)  # NaN if any variant is missing
        first = self._active[np.zeros(len(self.space.units), int)].reshape(-1)[:ns]  # min depth per unit
        return self.fixed + np.where(first, cheapest, 0.0).sum(1)

    def raw(self, genomes: np.ndarray) -> np.ndarray:
        """Summed layers less the overhead (with a per-type calibration, each x its type's scale)."""
        g = self.genome
        genomes = np.asarray(genomes)
        res = genomes[:, 0]
        idx = genomes[:, g.kernel] * self._ne  # flat index into self.slot, built in place
        idx += genomes[:, g.expand]
        idx += self._slot_base
        idx += self._res_base[res][:, None]
        active = self._active[genomes[:, g.depth]].reshape(len(genomes), -1)
        out = self.fixed[res] + (self.slot[idx] * active).sum(1)
        if np.isnan(out).any():
            # Name the first missing key through the scalar path (it raises MissingKeyError). NaN * 0
            # is NaN, so a missing entry in an inactive slot must not count: recheck without it.
            out = self.fixed[res] + np.where(active, self.slot[idx], 0.0).sum(1)
            bad = np.flatnonzero(np.isnan(out))
            if bad.size:
                self.table.predict_raw(decode(self.space, genomes[bad[:1]])[0], self.space)
                raise AssertionError("a NaN prediction without a missing key")  # pragma: no cover
        return out

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """Predicted latency (ms), one float64 per genome."""
        if self.calibration.per_type:
            return self.raw(genomes) + self.calibration.offset_ms
        return self.calibration.apply(self.raw(genomes))


def _space_header(space: SearchSpace) -> dict:
    info = {"name": space.name, "hash": space.hash}
    if space.name not in preset_names() or load_space(space.name).hash != space.hash:
        info["definition"] = space.to_dict()  # a custom space: keep it so the table is self-contained
    return info


def _read_yaml(path: Path):
    return read_yaml(path, "latency table YAML file")


def _pool(entries: list[dict]) -> dict:
    counts = np.array([float(e.get("count", 1)) for e in entries])
    means = np.array([float(e["mean"]) for e in entries])
    stds = np.array([float(e.get("std", 0.0)) for e in entries])
    n = counts.sum()
    mean = float((counts * means).sum() / n)
    var = float((counts * (stds**2 + means**2)).sum() / n - mean**2)
    return entry(mean, None, math.sqrt(max(var, 0.0)), int(n))
