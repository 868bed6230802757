"""What a latency table file must hold, checked by `edgenas.validate` before a table is used.

An edgenas table is `{header, ops}`; the header is open metadata (the profiler adds records to it)
but the keys that predictions read are checked: format, format_version, name, space, statistic,
resolutions, the calibration (overhead_ms, scale, offset_ms, per_type, networks) and a few-shot
table's records (few_shot: k, seed, subnets, target_overhead; few_shot_history: subnets), and the
device load the profiler records (device_load: per phase steal, other, cpu_seconds). Every entry of `ops`
and of `calibration.networks` is a latency in milliseconds: finite, never negative. OFA's
published `R_lookup_table.yaml` files are a mapping of layer keys to {count, mean, std}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from edgenas.errors import ConfigError
from edgenas.validate import Invalid, echo, mapping_of, message, section_of, spec, value_of

_MS = spec(min=0.0, max=1e9)  # a latency in milliseconds
STATISTICS = ("mean", "median")


@dataclass(frozen=True)
class Entry:
    """One measured layer (or network): milliseconds over `count` timed runs."""

    mean: float = field(metadata=_MS)
    median: Optional[float] = field(default=None, metadata=_MS)
    std: float = field(default=0.0, metadata=_MS)
    count: int = field(default=1, metadata=spec(min=0, max=10**12))


@dataclass(frozen=True)
class DeviceLoad:
    """One phase of `header.device_load` (edgenas.device.CpuLoad.to_dict)."""

    steal: float = field(metadata=spec(min=0.0, max=1.0))
    other: float = field(metadata=spec(min=0.0, max=1.0))
    cpu_seconds: float = field(metadata=spec(min=0.0, max=1e12))


@dataclass(frozen=True)
class SpaceInfo:
    name: str = field(metadata=spec(min_len=1, max_len=200))
    hash: Optional[str] = field(default=None, metadata=spec(max_len=64))
    definition: Optional[dict] = None  # a custom space, checked by SearchSpace.from_dict when used


def _entry(value: Any, key: str, extra_ok: bool) -> None:
    """Check one entry; network entries may carry more records (repeat_median, ...)."""
    if extra_ok and isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k in Entry.__dataclass_fields__}
    section_of(Entry, value, key)


def check_table(data: Any, source: str) -> tuple[dict, dict]:
    """(header, ops) of an edgenas table file's contents, or a ConfigError in the one style."""
    data = mapping_of(data, source, "a latency table: header, ops")
    for key in data:
        if key not in ("header", "ops"):
            raise ConfigError(message(source, str(key)[:60], "an unknown key", "one of header, ops"))
    header, ops = data.get("header"), data.get("ops")
    if not isinstance(header, Mapping):
        raise ConfigError(message(source, "header", echo(header), "a mapping (format, format_version, space, ...)"))
    if header.get("format") != "edgenas-latency-table":
        raise ConfigError(message(source, "header.format", echo(header.get("format")), "'edgenas-latency-table'"))
    if header.get("format_version") != 1:
        raise ConfigError(message(source, "header.format_version", echo(header.get("format_version")),
                                  "1 (this edgenas reads format_version 1; rebuild the table with edgenas profile)"))
    try:
        if "name" in header:
            value_of(str, header["name"], "header.name", spec(min_len=1, max_len=200))
        if header.get("space") is not None:
            section_of(SpaceInfo, header["space"], "header.space")
        if "statistic" in header:
            value_of(str, header["statistic"], "header.statistic", {"choices": STATISTICS})
        if header.get("resolutions") is not None:
            value_of(list[int], header["resolutions"], "header.resolutions",
                     {"min_len": 1, "increasing": True, "each": {"min": 1, "max": 4096}})
        if header.get("runtime_options") is not None:  # recorded from the profile: a mapping, providers a list
            opts = value_of(dict, header["runtime_options"], "header.runtime_options")
            if opts.get("providers") is not None:
                value_of(list[str], opts["providers"], "header.runtime_options.providers")
        cal = header.get("calibration")
        if cal is not None:
            if not isinstance(cal, Mapping):
                raise Invalid("header.calibration", cal, "a mapping (overhead_ms, scale, offset_ms, ...)")
            for key, sp in (("overhead_ms", _MS["edgenas_spec"]), ("scale", {"gt": 0.0, "max": 1e6}),
                            ("offset_ms", {"min": -1e9, "max": 1e9})):
                if key in cal:
                    value_of(float, cal[key], f"header.calibration.{key}", sp)
            per_type = cal.get("per_type")
            if per_type is not None:  # the per-type correction (edgenas.latency.calibration)
                if not isinstance(per_type, Mapping):
                    raise Invalid("header.calibration.per_type", per_type, "a mapping (used, scales, offset_ms, ...)")
                if "used" in per_type:
                    value_of(bool, per_type["used"], "header.calibration.per_type.used")
                if "offset_ms" in per_type:
                    value_of(float, per_type["offset_ms"], "header.calibration.per_type.offset_ms", {"min": -1e9, "max": 1e9})
                scales = per_type.get("scales")
                if scales is not None or per_type.get("used"):
                    if not isinstance(scales, Mapping) or not scales:
                        got = scales if "scales" in per_type else "nothing (the key is missing)"
                        raise Invalid("header.calibration.per_type.scales", got, "a mapping of op type: scale > 0",
                                      rendered="scales" not in per_type)
                    for t, v in scales.items():
                        value_of(float, v, f"header.calibration.per_type.scales.{echo(t)[1:-1]}", {"gt": 0.0, "max": 1e6})
            nets = cal.get("networks")
            if nets is not None:
                if not isinstance(nets, Mapping):
                    raise Invalid("header.calibration.networks", nets, "a mapping of arch: {mean, median, ...}")
                for arch, e in nets.items():
                    _entry(e, f"header.calibration.networks.{echo(arch)[1:-1]}", extra_ok=True)
        _few_shot(header)
        load = header.get("device_load")
        if load is not None:  # edgenas.device.CpuLoad per phase, what else the device did (profiler.record_load)
            if not isinstance(load, Mapping):
                raise Invalid("header.device_load", load, "a mapping of phase: {steal, other, cpu_seconds}")
            for phase, rec in load.items():
                section_of(DeviceLoad, rec, f"header.device_load.{echo(phase)[1:-1]}")
        if ops is None:
            ops = {}
        if not isinstance(ops, Mapping):
            raise Invalid("ops", ops, "a mapping of layer key: {mean, median, std, count}")
        for key, e in ops.items():
            if not isinstance(key, str):
                raise Invalid("ops", f"the key {echo(key)}", "layer keys that are strings", rendered=True)
            _entry(e, f"ops.{key}", extra_ok=False)
    except Invalid as exc:
        raise exc.at(source) from None
    return dict(header), dict(ops)


def _few_shot(header: Mapping) -> None:
    """The few-shot records (edgenas.latency.fewshot) that refining and a later full profile read."""
    fs = header.get("few_shot")
    if fs is not None:
        if not isinstance(fs, Mapping):
            raise Invalid("header.few_shot", fs, "a mapping (k, seed, subnets, target_overhead, reference, fit, ...)")
        if "k" in fs:
            value_of(int, fs["k"], "header.few_shot.k", {"min": 3, "max": 10**6})
        if "seed" in fs:
            value_of(int, fs["seed"], "header.few_shot.seed", {"min": 0, "max": 2**32 - 1})
        if fs.get("subnets") is not None:
            value_of(list[str], fs["subnets"], "header.few_shot.subnets")
        if fs.get("target_overhead") is not None:
            _entry(fs["target_overhead"], "header.few_shot.target_overhead", extra_ok=True)
        for key in ("reference", "fit", "design"):
            if fs.get(key) is not None and not isinstance(fs[key], Mapping):
                raise Invalid(f"header.few_shot.{key}", fs[key], "a mapping")
    history = header.get("few_shot_history")
    if history is not None:
        if not isinstance(history, Mapping):
            raise Invalid("header.few_shot_history", history, "a mapping (k, reference, subnets, converted)")
        if history.get("subnets") is not None:
            value_of(list[str], history["subnets"], "header.few_shot_history.subnets")


def looks_like_ofa(data: Any) -> bool:
    """A mapping of keys to mappings with a 'mean': what OFA's files look like (before checking)."""
    return isinstance(data, Mapping) and bool(data) and all(isinstance(v, Mapping) and "mean" in v for v in data.values())


def check_ofa(data: Any, source: str) -> dict:
    """The entries of one OFA `R_lookup_table.yaml`, each checked, or a ConfigError."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(message(source, None, "an empty file" if not data else echo(data),
                                  "an OFA lookup table (layer keys mapping to {count, mean, std})"))
    try:
        for key, e in data.items():
            if not isinstance(key, str):
                raise Invalid(None, f"the key {echo(key)}", "layer keys that are strings", rendered=True)
            _entry(e, key, extra_ok=False)
    except Invalid as exc:
        raise exc.at(source) from None
    return dict(data)
