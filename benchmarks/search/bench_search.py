"""Search benchmark: edgenas evolution against OFA's EvolutionFinder, and the three strategies at
equal numbers of evaluated architectures. See README.md beside this file for results.

    python benchmarks/search/bench_search.py [--seeds 5] [--quick]

Both implementations run with the same number of torch threads (--threads, default 1).
The accuracy predictor is edgenas's MLP (one member of 3 x 400 on the one-hot features, the
shape OFA's finder takes) trained on a synthetic proxy target (see `proxy_accuracy`), cached in
benchmarks/search/out/. Latency: OFA's published Note10 tables for
mbv3-w1.2 (latency_tables/ofa-note10), loaded by edgenas.latency.LatencyTable; OFA's finder gets
the same entries through its own LatencyEstimator code.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgenas.latency.table import LatencyTable
from edgenas.search import STRATEGIES
from edgenas.search import (
    ArchBatch, Constraint, hypervolume_2d, latency_metric, latency_table_of, non_dominated, predictor_metric, search,
)
from edgenas.search.predictor import AccuracyPredictor, OutdatedPredictorError, train_predictor
from edgenas.space import encode, load_space, make_arch, sample_genomes

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
TABLES = HERE.parents[1] / "latency_tables" / "ofa-note10"


# ---- the accuracy predictor: edgenas's MLP trained on a synthetic proxy ------------------------------

def proxy_accuracy(space, genomes, rng):
    """Synthetic ImageNet-like top-1 (%): rises with log MACs, with the depth and with the resolution,
    saturating, plus per-block kernel/expand effects that differ by position and noise (sd 0.3 pp).
    Not a real accuracy: it stands in for one so the benchmark needs no trained supernet."""
    batch = ArchBatch(space, genomes)
    macs = batch.costs()["macs"] / 1e6
    depth = np.asarray(space.depths)[genomes[:, 1:1 + len(space.units)]].sum(1)
    feats = batch.features()
    pos_effect = np.random.default_rng(123).normal(0, 0.15, feats.shape[1])  # fixed per feature
    acc = 50 + 4.5 * np.log(macs) + 0.25 * depth + 0.6 * genomes[:, 0] + feats @ pos_effect
    return 80 - 30 * np.exp(-(acc - 50) / 30) + rng.normal(0, 0.3, len(acc))


def proxy_predictor(space, samples=2000, epochs=150):
    path = OUT / f"proxy_predictor_{space.hash}.pt"
    if path.exists():
        try:
            return AccuracyPredictor.load(path, space)
        except OutdatedPredictorError:  # cached by an older edgenas: train it again
            pass
    rng = np.random.default_rng(0)
    genomes = sample_genomes(space, rng, samples)
    predictor, report = train_predictor(space, genomes, proxy_accuracy(space, genomes, rng), epochs=epochs, seed=0,
                                        hidden=(400, 400, 400), members=1, features=("onehot",))
    print(f"proxy predictor: RMSE {report.rmse:.3f} pp, Spearman {report.spearman:.3f} on {report.n_test} held out")
    predictor.save(path)
    return predictor


# ---- OFA's EvolutionFinder with adaptors ----------------------------------------------------------

def import_ofa_tutorial():
    """OFA's tutorial package imports torchvision (not installed, and unused by the finder): stub it."""
    def placeholder(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (), {"__init__": lambda self, *a, **k: None})

    def stub(name):
        m = types.ModuleType(name)
        m.__getattr__ = placeholder
        m.__path__ = []
        sys.modules.setdefault(name, m)

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets",
                 "ofa.utils.my_dataloader", "ofa.model_zoo"):
        stub(name)
    finder = importlib.import_module("ofa.tutorial.evolution_finder")
    acc = importlib.import_module("ofa.tutorial.accuracy_predictor")
    lat = importlib.import_module("ofa.tutorial.latency_table")
    finder.tqdm = lambda it, **kw: it  # silence its progress bar; the loop is unchanged
    return finder, acc, lat


def ofa_adaptors(space, table: LatencyTable, predictor: AccuracyPredictor):
    _, acc_mod, lat_mod = import_ofa_tutorial()

    class SameMLP(nn.Module):
        """OFA's 128-d features -> edgenas's 125-d (same order; OFA reserves 8 resolution slots for 5)."""

        def __init__(self):
            super().__init__()
            res = [120 + (r - 112) // 16 for r in space.resolutions]
            self.register_buffer("idx", torch.tensor(list(range(120)) + res))

        def forward(self, x):  # (n, 1) accuracy %, as edgenas's predict_genomes gives it
            return 100 * torch.sigmoid(predictor.model(x[:, self.idx])).T

    accuracy = acc_mod.AccuracyPredictor(pretrained=False, device="cpu")
    accuracy.model = SameMLP().eval()

    efficiency = lat_mod.LatencyTable.__new__(lat_mod.LatencyTable)
    efficiency.latency_tables = {}
    for r in space.resolutions:
        est = lat_mod.LatencyEstimator.__new__(lat_mod.LatencyEstimator)
        est.lut = table.ops  # the same entries; OFA's query reads ["mean"]
        efficiency.latency_tables[r] = est
    return accuracy, efficiency


def ofa_spec_to_arch(space, spec):
    return make_arch(space, spec["r"][0], spec["ks"], spec["e"], spec["d"])


# ---- runs ---------------------------------------------------------------------------------------------

def run_ours(space, predictor, lat, budget, seed, **options):
    t, c = time.perf_counter(), time.process_time()
    result = search(space, predictor_metric(predictor), [Constraint(lat, budget)], "evolution", seed=seed, **options)
    return time.perf_counter() - t, time.process_time() - c, result


def run_ofa(space, accuracy, efficiency, budget, seed, population, generations):
    finder_mod, _, _ = import_ofa_tutorial()
    random.seed(seed)
    np.random.seed(seed)  # OFA's finder draws from the global generators
    finder = finder_mod.EvolutionFinder("note10", budget, efficiency, accuracy, population_size=population,
                                        max_time_budget=generations, mutate_prob=0.1, parent_ratio=0.25,
                                        mutation_ratio=0.5)
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        _, best = finder.run_evolution_search()
    return time.perf_counter() - t, time.process_time() - c, best


def speed_and_quality(space, predictor, table, lat, seeds, population, generations, budget=25.0):
    accuracy, efficiency = ofa_adaptors(space, table, predictor)
    rows = []
    for seed in seeds:
        t_ours, c_ours, result = run_ours(space, predictor, lat, budget, seed, population=population, generations=generations)
        t_ofa, c_ofa, best = run_ofa(space, accuracy, efficiency, budget, seed, population, generations)
        ofa_arch = ofa_spec_to_arch(space, best[1])
        # Check the adaptors: our predictor and table agree with OFA's view of its own best arch.
        g = encode(space, [ofa_arch])
        assert abs(predictor.predict_genomes(g)[0] - best[0]) < 1e-3
        assert abs(lat(ArchBatch(space, g))[0] - best[2]) < 1e-6
        rows.append({"seed": seed, "ours_s": t_ours, "ofa_s": t_ofa, "ours_cpu_s": c_ours, "ofa_cpu_s": c_ofa, "ours_acc": result.best["accuracy"],
                     "ofa_acc": best[0], "ours_ms": result.best["latency_ms"][latency_table_of(lat.name)],
                     "ofa_ms": best[2], "ours_evals": result.evaluations})
        print(f"seed {seed}: ours {t_ours:.2f} s ({c_ours:.2f} s CPU) acc {result.best['accuracy']:.3f} | "
              f"OFA {t_ofa:.2f} s ({c_ofa:.2f} s CPU) acc {best[0]:.3f} | ratio {t_ofa / t_ours:.1f}x", flush=True)
    return rows


OPTIONS = {  # per strategy, at E evaluations (evolution and nsga2 stop at max_evals=E)
    "evolution": lambda E: {"population": 100, "generations": 20 * E // 100},
    "nsga2": lambda E: {"population": 100, "generations": 20 * E // 100},
    "nsga2-pymoo": lambda E: {"population": 100, "generations": 20 * E // 100},
    "nsga2-optuna": lambda E: {"population": 100, "evaluations": E},
    "random": lambda E: {"evaluations": E},
    "rl": lambda E: {"evaluations": E},
    "tpe": lambda E: {"evaluations": E},
    "tpe-int": lambda E: {"evaluations": E, "categorical": False},  # the genes as integer parameters
}


def strategies(space, predictor, lat, seeds, evaluations, budgets, names):
    """Every strategy in `names` at each number of evaluations in `evaluations`, under each latency
    budget, for each seed, in this one process: best predicted accuracy (mean, sd), the hypervolume
    of (latency, accuracy) over every feasible evaluated arch (reference: the budget and the lowest
    accuracy any run evaluated under it), and wall time."""
    sys.path.insert(0, str(HERE))
    from optuna_nsga2 import nsga2_optuna
    from pymoo_nsga2 import nsga2_pymoo  # the reference; needs `pip install pymoo`

    STRATEGIES["nsga2-pymoo"] = nsga2_pymoo
    STRATEGIES["nsga2-optuna"] = nsga2_optuna
    STRATEGIES["tpe-int"] = STRATEGIES["tpe"]  # with categorical=False (OPTIONS)
    acc = predictor_metric(predictor)
    out = {}
    for E in evaluations:
        results = {}
        for budget in budgets:
            for name in names:
                for seed in seeds:
                    t = time.perf_counter()
                    r = search(space, acc, [Constraint(lat, budget)], name, seed=seed, max_evals=E, **OPTIONS[name](E))
                    results[budget, name, seed] = (r, time.perf_counter() - t)
                    print(f"E={E} {name} budget {budget} seed {seed}: best {r.best['accuracy']:.3f} "
                          f"({r.evaluations} evaluated, {time.perf_counter() - t:.2f} s)", flush=True)
        for budget in budgets:
            floor = min(float(results[budget, n, s][0].archive["accuracy"].min()) for n in names for s in seeds)
            row = out.setdefault(str(E), {}).setdefault(str(budget), {"reference_accuracy": floor})
            for name in names:
                runs = [results[budget, name, s] for s in seeds]
                accs = [r.best["accuracy"] for r, _ in runs]
                hvs = []
                for r, _ in runs:
                    F = np.column_stack([r.archive[lat.name], -r.archive["accuracy"]])
                    hvs.append(hypervolume_2d(F[non_dominated(F)], (budget, -floor)))
                row[name] = {"mean": statistics.mean(accs), "std": _std(accs), "hv_mean": statistics.mean(hvs),
                             "hv_std": _std(hvs), "evaluations": statistics.mean(r.evaluations for r, _ in runs),
                             "seconds": statistics.median(t for _, t in runs)}
            print(json.dumps({str(E): {str(budget): row}}, indent=1), flush=True)
    return out


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--generations", type=int, default=500)
    ap.add_argument("--evaluations", type=int, nargs="+", default=[1000, 5000], help="per strategy run, for the comparison")
    ap.add_argument("--budgets", type=float, nargs="+", default=[20.0, 25.0, 30.0], help="latency budgets (ms, Note10)")
    ap.add_argument("--strategies", default="evolution,nsga2,nsga2-pymoo,nsga2-optuna,random,rl,tpe")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, for both implementations")
    ap.add_argument("--skip-strategies", action="store_true")
    ap.add_argument("--skip-ofa", action="store_true", help="only the strategy comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    space = load_space("mbv3-w1.2")
    table = LatencyTable.load(TABLES)
    lat = latency_metric(table, "note10", space)
    predictor = proxy_predictor(space)
    seeds = list(range(args.seeds))

    summary = {}
    if not args.skip_ofa:
        summary = speed_summary(speed_and_quality(space, predictor, table, lat, seeds, args.population, args.generations), args)
    if not args.skip_strategies:
        summary["strategies"] = strategies(space, predictor, lat, seeds, args.evaluations, args.budgets,
                                           args.strategies.split(","))
        print(json.dumps(summary["strategies"], indent=1))
    name = "results.json" if not (args.skip_ofa or args.skip_strategies) else (
        "strategies.json" if args.skip_ofa else f"speed_t{args.threads}.json")
    (OUT / name).write_text(json.dumps(summary, indent=1) + "\n")


def speed_summary(rows, args):
    summary = {
        "threads": args.threads,
        "population": args.population, "generations": args.generations, "budget_ms": 25.0,
        "ours_s_median": statistics.median(r["ours_s"] for r in rows),
        "ofa_s_median": statistics.median(r["ofa_s"] for r in rows),
        "ours_cpu_s_median": statistics.median(r["ours_cpu_s"] for r in rows),
        "ofa_cpu_s_median": statistics.median(r["ofa_cpu_s"] for r in rows),
        "load_average": os.getloadavg(),
        "ours_acc_mean": statistics.mean(r["ours_acc"] for r in rows),
        "ofa_acc_mean": statistics.mean(r["ofa_acc"] for r in rows),
        "runs": rows,
    }
    summary["speedup"] = summary["ofa_s_median"] / summary["ours_s_median"]
    summary["speedup_cpu"] = summary["ofa_cpu_s_median"] / summary["ours_cpu_s_median"]
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    return summary


if __name__ == "__main__":
    main()
