"""Do zero-cost proxies help the accuracy predictor as extra inputs? (issue #18: "a proxy used as extra
predictor features must improve the predictor's RMSE at 500 samples")

Reads the measurement log that `edgenas predictor build CKPT --samples N` wrote (each sampled
subnet's top-1 accuracy on the val split after BatchNorm recalibration), scores the same subnets with
every zero-cost proxy (`edgenas.search.proxies.ProxyFeatures`, as `predictor build --features ...
proxy:NAME` computes them: the supernet's trained weights, 2 seeded batches of 32 training images),
and trains the predictor (`train_predictor`: the 5-MLP ensemble) on each feature set, over several
seeded 80/20 splits of the same pairs:

- onehot + costs (the default), and the same plus each proxy, plus every proxy;
- per split, the RMSE and Spearman on the held-out 20%, and the RMSE's change against the default
  on the same split (paired: the splits are the noisy part).

    edgenas train configs/digits-tiny.yaml --out runs/digits
    edgenas predictor build runs/digits --samples 500 --out runs/digits/base.pt
    python benchmarks/search/proxy_features.py runs/digits --measurements runs/digits/base.pt.measured.jsonl \\
        --samples 500 --out benchmarks/search/out/proxy-features.json

Also prints each proxy's own Spearman with the measured accuracies and its cost per subnet (the
subnet materialized and scored once per proxy, one thread). Writes the JSON and a plot beside it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from edgenas.data import load_dataset
    from edgenas.search.measure import dataset_config, open_checkpoint, pairs, predictor_sample, read_measurements
    from edgenas.search.predictor import DEFAULT_FEATURES, spearman, train_predictor
    from edgenas.search.proxies import PROXIES, ProxyFeatures, ProxySetup
    from edgenas.space import decode

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="the supernet the measurements are of")
    ap.add_argument("--measurements", required=True, type=Path, help="the log `edgenas predictor build` wrote")
    ap.add_argument("--samples", type=int, default=500, help="as given to predictor build")
    ap.add_argument("--seed", type=int, default=0, help="as given to predictor build (the sample and the batches)")
    ap.add_argument("--splits", type=int, default=5, help="seeded 80/20 splits of the pairs")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/search/out/proxy-features.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    supernet, info = open_checkpoint(args.checkpoint)
    space = supernet.space
    archs = decode(space, predictor_sample(space, args.samples, args.seed, info.trained_resolutions))
    genomes, acc = pairs(space, read_measurements(args.measurements, space), archs)
    if len(genomes) < args.samples:
        sys.exit(f"{args.measurements} holds {len(genomes)} of the {args.samples} subnets: run predictor build to the end")
    dataset = load_dataset(dataset_config(info))
    proxies = ProxyFeatures(supernet, dataset, ProxySetup(seed=args.seed))
    record = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "space": space.name,
              "data": info.data.name, "pairs": len(genomes), "accuracy_range": [float(acc.min()), float(acc.max())],
              "proxies": {}, "feature_sets": {}}
    raw = {}
    for name in PROXIES:  # one proxy at a time, so that each one's cost includes materializing the subnet
        t0 = time.perf_counter()
        raw[name] = proxies.columns(space, genomes, [name])[:, 0]
        seconds = time.perf_counter() - t0
        record["proxies"][name] = {"spearman_with_accuracy": round(spearman(raw[name], acc), 4),
                                   "s_per_subnet": round(seconds / len(genomes), 4)}
        print(f"{name}: Spearman with accuracy {spearman(raw[name], acc):+.3f}, {seconds / len(genomes):.3f} s/subnet",
              flush=True)

    sets = {"onehot+costs": DEFAULT_FEATURES}
    sets |= {f"+{n}": (*DEFAULT_FEATURES, f"proxy:{n}") for n in PROXIES}
    sets["+all proxies"] = (*DEFAULT_FEATURES, *(f"proxy:{n}" for n in PROXIES))
    for label, features in sets.items():
        rows = []
        for split in range(args.splits):
            _, rep = train_predictor(space, genomes, acc, seed=split, features=features, proxies=proxies,
                                     epochs=args.epochs)
            rows.append({"rmse": rep.rmse, "spearman": rep.spearman})
        record["feature_sets"][label] = {"features": list(features), "splits": rows}
    base = [r["rmse"] for r in record["feature_sets"]["onehot+costs"]["splits"]]
    for label, entry in record["feature_sets"].items():
        rmse = np.array([r["rmse"] for r in entry["splits"]])
        rho = np.array([r["spearman"] for r in entry["splits"]])
        delta = rmse - np.array(base)
        entry |= {"rmse_mean": round(float(rmse.mean()), 4), "rmse_sd": round(float(rmse.std()), 4),
                  "spearman_mean": round(float(rho.mean()), 4), "rmse_change_mean": round(float(delta.mean()), 4),
                  "rmse_lower_in_splits": int((delta < 0).sum())}
        print(f"{label:>14}: RMSE {rmse.mean():.3f} ± {rmse.std():.3f} pp (change {delta.mean():+.3f}, lower in "
              f"{(delta < 0).sum()}/{len(delta)} splits), Spearman {rho.mean():.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    plot(record, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(record["feature_sets"])
    sets = [record["feature_sets"][k] for k in labels]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(labels))
    for ax, key, title in ((a, "rmse", "held-out RMSE (pp), lower is better"),
                           (b, "spearman", "held-out Spearman, higher is better")):
        for i, s in enumerate(sets):
            ys = [r[key] for r in s["splits"]]
            ax.scatter([i] * len(ys), ys, s=14, color="tab:gray", alpha=0.6, zorder=2)
            ax.errorbar(i, np.mean(ys), yerr=np.std(ys), fmt="o", color="tab:blue" if i else "tab:red", zorder=3)
        ax.set_xticks(x, labels, rotation=35, ha="right")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{record['space']} on {record['data']}: predictor inputs, {record['pairs']} measured subnets, "
                 f"{len(sets[0]['splits'])} seeded 80/20 splits (dots)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
