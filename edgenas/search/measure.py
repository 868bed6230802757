"""Measuring subnet accuracy for the predictor: resumable, and sharded across torchrun ranks.

    genomes = predictor_sample(space, n=2000, seed=0)          # spread evenly over resolutions
    acc = measure_archs(supernet, decode(space, genomes), val, calib, log)   # {arch string: accuracy %}

Each measured (arch, accuracy) pair is appended to a JSON-lines log and fsynced as soon as it is
known, so a run that is killed loses at most the architecture in progress; run it again with the
same log and it skips what is already there. Under torchrun every rank measures every
WORLD_SIZE-th architecture and appends to its own file (`LOG.rankR`); every file is read back.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from edgenas.errors import CheckpointError
from edgenas.validate import Invalid, echo, loads_json, message, read_text, value_of
from edgenas.space import Arch, SearchSpace, genome_of, resolution_indices, sample_genomes

log = logging.getLogger(__name__)

LOG_FORMAT = "edgenas-arch-accuracy"


def predictor_sample(space: SearchSpace, n: int, seed: int = 0, resolutions: Sequence[int] | None = None) -> np.ndarray:
    """Up to n distinct random genomes (duplicates dropped), the resolutions (default: all of the
    space's) taking turns: every run of R consecutive genomes has each of the R resolutions
    once, in a random order.

    The sample for n is the first rows of the sample for any larger n, so a measurement log
    made with --samples 500 is reused when the same command asks for 2000."""
    allowed = resolution_indices(space, resolutions)
    r = len(allowed)
    genomes = sample_genomes(space, np.random.default_rng(seed), n)
    turns = np.random.default_rng([seed, 1])  # a second stream: one permutation per run of R
    blocks = -(-n // r)
    genomes[:, 0] = allowed[np.argsort(turns.random((blocks, r)), axis=1).reshape(-1)[:n]]
    _, first = np.unique(genomes, axis=0, return_index=True)
    return genomes[np.sort(first)]


# ---- the measurement log ------------------------------------------------------------------------

def shard_paths(path: Path) -> list[Path]:
    """The log and every rank's shard of it that exist."""
    path = Path(path)
    return [p for p in [path, *sorted(path.parent.glob(path.name + ".rank*"))] if p.is_file()]


def read_measurements(path: Path, space: SearchSpace) -> dict[str, float]:
    """{arch string: accuracy} from the log and its shards; a torn last line (a kill mid-write) is skipped."""
    found: dict[str, float] = {}
    for p in shard_paths(path):
        lines = read_text(p, "measurement log (JSON lines)", max_bytes=1 << 30, error=CheckpointError).splitlines()
        for i, line in enumerate(lines):
            try:
                row = loads_json(line, f"{p}: line {i + 1}", error=CheckpointError)
            except CheckpointError as exc:
                if i == len(lines) - 1:
                    continue  # a torn last line
                raise CheckpointError(f"{exc}; delete the file to measure again") from None
            if not isinstance(row, dict):
                raise CheckpointError(message(f"{p}: line {i + 1}", None, echo(row), "a JSON object"))
            if "format" in row:
                if row.get("format") != LOG_FORMAT or row.get("space_hash") != space.hash:
                    raise CheckpointError(
                        f"{p} holds measurements for space hash {echo(row.get('space_hash'))}, not {space.name} "
                        f"(hash {space.hash}); use another --measurements file"
                    )
                continue
            try:
                arch = value_of(str, row.get("arch"), "arch", {"min_len": 1, "max_len": 4000})
                found[arch] = value_of(float, row.get("accuracy"), "accuracy", {"min": 0.0, "max": 100.0})
            except Invalid as exc:
                raise exc.at(f"{p}: line {i + 1}", CheckpointError) from None
    return found


class _Appender:
    """Appends one JSON line per result and fsyncs it (a killed run keeps what it measured)."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop a line torn by a kill mid-write, so appends start on a fresh line
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.f = open(self.path, "a", encoding="utf-8")
        if fresh:
            self.write(header)

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# ---- evaluating one subnet --------------------------------------------------------------------

def subnet_accuracy(supernet, dataset, bn_images: torch.Tensor, split: str = "val",
                    batch_size: int = 500) -> Callable[[Arch], float]:
    """arch -> accuracy (%) on `split` after BatchNorm recalibration on `bn_images`
    (`edgenas.train.evaluate_archs`, one arch at a time so each result can be saved at once)."""
    from edgenas.train.evaluate import evaluate_archs

    def evaluate(arch: Arch) -> float:
        return 100.0 * evaluate_archs(supernet, [arch], dataset, split=split, bn_images=bn_images,
                                      batch_size=batch_size)[0].accuracy

    return evaluate


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def measure_archs(
    supernet,
    archs: Sequence[Arch],
    evaluate: Callable[[Arch], float],
    log_path: str | Path,
    rank: int | None = None,
    world_size: int | None = None,
    on_result: Callable[[Arch, float], None] | None = None,
) -> dict[str, float]:
    """Measure with `evaluate(arch) -> accuracy %` (e.g. `subnet_accuracy(...)`) every arch not
    already in the log (this rank's share of them) and return this process's view of all
    measurements, {arch string: accuracy %}."""
    space: SearchSpace = supernet.space
    r0, w0 = world()
    rank = r0 if rank is None else rank
    world_size = w0 if world_size is None else world_size
    log_path = Path(log_path)
    done = read_measurements(log_path, space)
    mine = [a for i, a in enumerate(archs) if i % world_size == rank and str(a) not in done]
    if not mine:
        return done
    out = _Appender(log_path if world_size == 1 else log_path.with_name(f"{log_path.name}.rank{rank}"),
                    {"format": LOG_FORMAT, "space": space.name, "space_hash": space.hash})
    was_training = supernet.training
    supernet.eval()
    try:
        for i, arch in enumerate(mine):
            acc = float(evaluate(arch))
            out.write({"arch": str(arch), "accuracy": acc})
            done[str(arch)] = acc
            if on_result:
                on_result(arch, acc)
            log.debug("measured %d/%d %s: %.2f%%", i + 1, len(mine), arch, acc)
    finally:
        out.close()
        supernet.train(was_training)
    return done


def pairs(space: SearchSpace, measured: dict[str, float], archs: Iterable[Arch]) -> tuple[np.ndarray, np.ndarray]:
    """(genomes, accuracies) of the archs that have a measurement, in order."""
    from edgenas.space import encode

    chosen = [a for a in archs if str(a) in measured]
    genomes = encode(space, chosen) if chosen else np.zeros((0, genome_of(space).length), np.int64)
    return genomes, np.array([measured[str(a)] for a in chosen])


def build_predictor(
    supernet,
    dataset,
    out: str | Path,
    samples: int = 2000,
    seed: int = 0,
    measurements: str | Path | None = None,
    bn_images: int = 2000,
    batch_size: int = 500,
    evaluate: Callable[[Arch], float] | None = None,
    on_result: Callable[[Arch, float], None] | None = None,
    resolutions: Sequence[int] | None = None,
    features: Sequence[str] | None = None,
    proxy_setup=None,
    on_proxy: Callable[[int], None] | None = None,
    **fit_options,
):
    """Sample `samples` archs (at `resolutions`, default all), measure them on the validation
    split (resumable; sharded under torchrun), train the MLP on 80% and report on 20%, and save
    it to `out` (rank 0 only). With "proxy:NAME" `features`, each subnet's proxies are computed
    on the batches `proxy_setup` names (default: 2 of 32 training images, seeded by `seed`);
    `on_proxy(1)` is called per subnet scored.

    Returns (predictor, report) on rank 0 and (None, None) on the other ranks."""
    from edgenas.search.predictor import DEFAULT_FEATURES, train_predictor
    from edgenas.search.proxies import ProxyFeatures, ProxySetup, proxy_feature
    from edgenas.space import decode
    from edgenas.train.distributed import setup
    from edgenas.train.evaluate import calibration_images

    space = supernet.space
    out = Path(out)
    measurements = Path(measurements) if measurements else out.with_name(out.name + ".measured.jsonl")
    archs = decode(space, predictor_sample(space, samples, seed, resolutions))
    if evaluate is None:
        evaluate = subnet_accuracy(supernet, dataset, calibration_images(dataset, bn_images, seed), "val", batch_size)
    group = setup("cpu")
    try:
        measure_archs(supernet, archs, evaluate, measurements, group.rank, group.world, on_result)
        group.barrier()
        if not group.main:
            return None, None
    finally:
        group.close()
    genomes, acc = pairs(space, read_measurements(measurements, space), archs)
    features = tuple(features or DEFAULT_FEATURES)
    proxies = None
    if any(proxy_feature(n) for n in features):
        proxies = ProxyFeatures(supernet, dataset, proxy_setup or ProxySetup(seed=seed), on_proxy)
    predictor, report = train_predictor(space, genomes, acc, seed=seed, features=features, proxies=proxies,
                                        **fit_options)
    predictor.save(out)
    return predictor, report


def open_checkpoint(path: str | Path):
    """(supernet in eval mode, CheckpointInfo) from a checkpoint, a supernet.pt or a run directory."""
    from edgenas.train.checkpoint import load_supernet

    return load_supernet(path)


def dataset_config(info, name: str | None = None, path: str | None = None):
    """The DataConfig to measure with: the checkpoint's, with --data / --data-path overriding it."""
    from edgenas.data import DataConfig

    cfg = info.data.to_dict()
    if name is not None and name != cfg["name"]:
        cfg = {"name": name, "seed": cfg["seed"]}
    if path is not None:
        cfg["path"] = path
    return DataConfig.from_dict(cfg)
