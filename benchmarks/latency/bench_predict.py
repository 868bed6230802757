"""Vectorised latency prediction speed: archs scored per millisecond.

    python benchmarks/latency/bench_predict.py [TABLE] [--n 20000]

Without TABLE it uses OFA's Note10 tables (latency_tables/ofa-note10) for mbv3-w1.2, or a
synthetic table for mbv3-w1.0 when they are absent. Reports the best of several repeats.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from edgenas.latency import LatencyTable, enumerate_ops
from edgenas.space import decode, load_space, sample_genomes

OFA = Path(__file__).resolve().parents[2] / "latency_tables" / "ofa-note10"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table", nargs="?")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if args.table:
        table = LatencyTable.load(args.table)
    elif OFA.is_dir():
        table = LatencyTable.load_ofa(OFA)
    else:
        space = load_space("mbv3-w1.0")
        table = LatencyTable.create(space, "synthetic")
        for op in enumerate_ops(space):
            table.set(op.key, {"mean": 1.0, "median": 1.0, "std": 0.0, "count": 1})
    space = table.space()
    predictor = table.predictor()
    rng = np.random.default_rng(0)
    genomes = sample_genomes(space, rng, args.n)
    measured = [space.resolutions.index(r) for r in table.resolutions]
    genomes[:, 0] = rng.choice(measured, args.n)  # only resolutions the table has
    predictor(genomes[:10])
    best = min(_time(lambda: predictor(genomes)) for _ in range(args.repeats))
    archs = decode(space, genomes[:200])
    scalar = _time(lambda: [table.predict(a) for a in archs]) / len(archs) * args.n
    print(f"{table.name} ({space.name}): {args.n} genomes in {best * 1e3:.2f} ms = {args.n / (best * 1e3):.0f} archs/ms "
          f"(scalar predict(arch): {args.n / (scalar * 1e3):.1f} archs/ms)")


def _time(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
