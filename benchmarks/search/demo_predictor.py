"""How well can the demo's accuracy predictor rank subnets? (issue #19's demo goal: Spearman >= 0.8)

Reads the measurement logs that `edgenas demo` wrote (RUN/train/supernet.predictor.pt.measured.jsonl:
each subnet's top-1 accuracy on the val split) and fits predictors on the same 80/20 splits as the
demo, for several holdout seeds, so that the spread of the held-out Spearman across splits is seen
next to its mean:
- edgenas's predictor (`train_predictor`: the 5-MLP ensemble on one-hot and cost features);
- ridge regression and gradient boosting (scikit-learn) on the same features, as other models.
With --exact-bn each logged subnet is also evaluated again on the val split with BatchNorm
statistics from every training image (no sampling noise) and from another seed of 250 images,
to see whether BN recalibration noise limits the predictor.

    edgenas demo --out runs/demo-v10 --formats onnx
    edgenas demo --out runs/demo-v25 --formats onnx --set data.val_fraction=0.25
    python benchmarks/search/demo_predictor.py runs/demo-v10 runs/demo-v25 [--exact-bn]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from edgenas.search.measure import read_measurements
from edgenas.search.predictor import DEFAULT_FEATURES, feature_matrix, holdout_split, spearman, train_predictor
from edgenas.space import Arch, encode


def sklearn_spearman(model, X, y, seed):
    tr, te = holdout_split(len(y), seed=seed)  # the split train_predictor makes
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-9
    return spearman(model().fit((X[tr] - mu) / sd, y[tr]).predict((X[te] - mu) / sd), y[te])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="demo run directories")
    ap.add_argument("--seeds", type=int, default=5, help="holdout splits")
    ap.add_argument("--exact-bn", action="store_true", help="re-evaluate every subnet with exact BN statistics")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV

    import edgenas
    models = {"ridge": lambda: RidgeCV(alphas=np.logspace(-3, 3, 13)),
              "gradient boosting": lambda: GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05,
                                                                     subsample=0.8, random_state=0)}
    report = {}
    for run in args.runs:
        supernet, info = edgenas.load_supernet(Path(run) / "train")
        space = supernet.space
        data = edgenas.load_dataset(info.data)
        measured = read_measurements(Path(run) / "train" / "supernet.predictor.pt.measured.jsonl", space)
        archs = [Arch.parse(a, space) for a in measured]
        targets = {"val top-1, BN from 250 images (the demo's)": np.array(list(measured.values()))}
        if args.exact_bn:
            from edgenas.search.measure import subnet_accuracy
            from edgenas.train.evaluate import calibration_images

            exact = subnet_accuracy(supernet, data, calibration_images(data, len(data.train), 0), "val", 500)
            other = subnet_accuracy(supernet, data, calibration_images(data, 250, 1), "val", 500)
            targets["val top-1, BN from every training image"] = np.array([exact(a) for a in archs])
            targets["val top-1, BN from 250 other images"] = np.array([other(a) for a in archs])
        g = encode(space, archs)
        X = feature_matrix(space, g, DEFAULT_FEATURES)
        rows = {}
        for name, y in targets.items():
            row = {"edgenas predictor": [train_predictor(space, g, y, seed=s)[1].spearman for s in range(args.seeds)]}
            row.update({m: [sklearn_spearman(make, X, y, s) for s in range(args.seeds)] for m, make in models.items()})
            rows[name] = row
        if args.exact_bn:
            ys = list(targets.values())
            rows["truth against truth (Spearman over all subnets)"] = {
                "demo's vs exact BN": spearman(ys[0], ys[1]), "demo's vs other 250": spearman(ys[0], ys[2])}
        report[run] = {"subnets": len(archs), "val_images": len(data.val),
                       "accuracy_sd": float(targets[next(iter(targets))].std()), "held_out_spearman": rows}
        print(f"\n{run}: {len(archs)} subnets, val split {report[run]['val_images']} images, "
              f"accuracy sd {report[run]['accuracy_sd']:.2f} pp")
        for name, row in rows.items():
            print(f"  {name}")
            for m, v in row.items():
                print(f"    {m:28s} " + (f"{v:.3f}" if isinstance(v, float) else
                                         f"mean {np.mean(v):.3f}  per split {np.round(v, 3).tolist()}"))
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
