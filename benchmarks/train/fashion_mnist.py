"""Fashion-MNIST benchmark: progressive shrinking on mbv3-tiny, then inherited vs from-scratch subnets.

    python benchmarks/train/fashion_mnist.py                     # the whole benchmark (many hours, see README)
    python benchmarks/train/fashion_mnist.py --stage train       # only the supernet (about 2 hours)
    python benchmarks/train/fashion_mnist.py --quick             # a tiny slice, to check that it all works

Stages (each resumable: run the same command again after a stop):
  train      `edgenas train configs/fashion-mnist-tiny.yaml --out OUT/supernet`
  inherited  test accuracy of the largest, the smallest and N random subnets of the last phase, with
             weights inherited from the supernet and BatchNorm recalibrated on 2000 training images
  scratch    each of the N random subnets trained alone from scratch (`schedule.phases.0.arch`) for as
             many epochs as the whole progressive-shrinking schedule, same data, optimiser and evaluation
  report     OUT/report.json, OUT/report.md and OUT/pairs.png (inherited against scratch accuracy);
             checks largest >= 94%, smallest >= 91% and |inherited - scratch| <= 0.5 pp per subnet
             (that check waits until every pair is measured; the pairs so far are reported)

--scratch-from DIR reports against the from-scratch runs of another OUT, for a second schedule on the
same config: the same seed draws the same random subnets, and pairs are matched by architecture.

--quick runs every stage on a slice (data.limit, a few steps per epoch, 1000 test images) and prints
an estimate of the full run's duration from the measured throughput of each phase.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from edgenas.data import TensorSplit, load_dataset  # noqa: E402
from edgenas.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgenas.search.predictor import spearman  # noqa: E402
from edgenas.space import Arch, load_space  # noqa: E402
from edgenas.train import PhaseSampler, evaluate_archs, load_config, load_supernet  # noqa: E402

CONFIG = REPO / "configs" / "fashion-mnist-tiny.yaml"
QUICK = ["data.limit=1024", "data.val_fraction=0.005", "train.steps_per_epoch=6", "train.val_bn_images=64",
         "train.bn_recal_images=64", "train.test_at_end=false"]


def edgenas_train(config: Path, out: Path, overrides: list[str], procs: int = 1) -> None:
    """`edgenas train` (under torchrun with `procs` > 1), resumed when `out` holds a stopped run,
    skipped when it is finished."""
    if (out / "supernet.pt").is_file():
        print(f"{out}: already trained")
        return
    launcher = [sys.executable] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    cmd = launcher + ["-m", "edgenas", "train", str(config), "--out", str(out), "--no-progress"]
    if (out / "checkpoint.pt").is_file():
        cmd.append("--resume")
    for o in overrides:
        cmd += ["--set", o]
    print("$", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:  # stopped (its checkpoint is kept) or failed: the training said which
        raise SystemExit(f"{out}: training exited with status {done.returncode}; the same command resumes it")


def test_dataset(cfg, limit: int | None):
    ds = load_dataset(cfg.data)
    if limit:
        t = ds.test
        ds = dataclasses.replace(ds, test=TensorSplit(t.pixels[:limit], t.labels[:limit].numpy(), t.mean, t.std))
    return ds


def evaluate(run: Path, archs: list[Arch], limit: int | None) -> list[dict]:
    net, info = load_supernet(run / "supernet.pt")
    ds = test_dataset(info.config, limit)
    results = evaluate_archs(net, archs, ds, "test", bn_images=info.config.train.bn_recal_images, seed=0)
    return [r.to_dict() for r in results]


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def epoch_records(run: Path) -> list[dict]:
    """The per-epoch records of a training run's train_log.jsonl."""
    records = map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
    return [r for r in records if r["event"] == "epoch"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "fashion")
    ap.add_argument("--stage", choices=["all", "train", "inherited", "scratch", "report"], default="all")
    ap.add_argument("--subnets", type=int, default=10, help="random subnets compared with from-scratch training")
    ap.add_argument("--scratch-epochs", type=int, default=None,
                    help="default: the schedule's total epochs, or as logged in --scratch-from")
    ap.add_argument("--scratch-from", type=Path, default=None,
                    help="report against the from-scratch runs of this OUT (--stage report)")
    ap.add_argument("--quick", action="store_true", help="a tiny slice of everything, plus a duration estimate")
    ap.add_argument("--procs", type=int, default=2,
                    help="training processes (torchrun, one thread each; default 2, one per core)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    out = args.out if not args.quick else args.out.with_name(args.out.name + "-quick")
    overrides = args.overrides
    if args.quick:  # one short epoch per phase
        n = len(load_config(args.config, overrides).schedule.phases)
        overrides = QUICK + [f"schedule.phases.{i}.epochs=1" for i in range(n)] + overrides
    cfg = load_config(args.config, overrides)
    trained = out / "supernet" / "config.yaml"
    if args.stage in ("inherited", "report") and trained.is_file():
        # The supernet's own config, --set overrides included: a later stage run without them (a second
        # schedule, say) still draws the same subnets and reports the schedule that was trained.
        cfg = load_config(trained)
    if args.quick:
        args.subnets = min(args.subnets, 2)
    test_limit = 1000 if args.quick else None
    total_epochs = sum(p.epochs for p in cfg.schedule.phases)
    scratch_dir = args.scratch_from or out
    if args.scratch_from and args.stage != "report":
        ap.error("--scratch-from only goes with --stage report: the scratch runs are read from that directory, "
                 "not trained")
    scratch_epochs = args.scratch_epochs or (logged_epochs(scratch_dir / "scratch-0") if args.scratch_from
                                             else 1 if args.quick else total_epochs)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["train", "inherited", "scratch", "report"] if args.stage == "all" else [args.stage]
    started = time.perf_counter()

    last = PhaseSampler(load_space(cfg.space), cfg.schedule.phases[-1])
    rng = np.random.default_rng(2024)
    randoms = [last.random(rng) for _ in range(args.subnets)]

    if "train" in stages:
        edgenas_train(args.config, out / "supernet", overrides, args.procs)
    if "inherited" in stages:
        rows = evaluate(out / "supernet", [last.largest(), last.smallest()] + randoms, test_limit)
        atomic_write_json(out / "inherited.json", rows)
        print(f"inherited: largest {100 * rows[0]['accuracy']:.2f}%, smallest {100 * rows[1]['accuracy']:.2f}%")
    if "scratch" in stages:
        # One row per finished subnet, written after each (a stopped run keeps the pairs it has).
        done = {r["arch"]: r for r in read_json(out / "scratch.json", [])}
        rows = []
        for i, arch in enumerate(randoms):
            phase = (f"schedule.phases=[{{name: scratch, epochs: {scratch_epochs}, lr: {cfg.schedule.phases[0].lr}, "
                     f"warmup_epochs: {min(cfg.schedule.phases[0].warmup_epochs, scratch_epochs)}, arch: '{arch}'}}]")
            run = out / f"scratch-{i}"
            edgenas_train(args.config, run, overrides + [phase, "train.test_at_end=false"], args.procs)
            rows += [done[str(arch)]] if str(arch) in done else evaluate(run, [arch], test_limit)
            atomic_write_json(out / "scratch.json", rows)
            print(f"scratch {i + 1}/{len(randoms)} {arch}: {100 * rows[-1]['accuracy']:.2f}%", flush=True)
    if "report" in stages:
        report(out, cfg, scratch_epochs, scratch_dir)
    if args.quick:
        estimate(out / "supernet", cfg, args.config, scratch_epochs, args.subnets, time.perf_counter() - started, args.procs)
    return 0


def logged_epochs(run: Path) -> int:
    """How many epochs a finished from-scratch run trained (the last epoch number in its log)."""
    if not (run / "train_log.jsonl").is_file():
        raise SystemExit(f"{run / 'train_log.jsonl'} is missing: --scratch-from needs a directory whose "
                         "--stage scratch has run")
    return max(r["epoch"] for r in epoch_records(run))


def report(out: Path, cfg, scratch_epochs: int, scratch_dir: Path) -> None:
    inherited = read_json(out / "inherited.json", None)
    if inherited is None:
        raise SystemExit(f"{out / 'inherited.json'} is missing: run --stage inherited first")
    largest, smallest, randoms = inherited[0], inherited[1], inherited[2:]
    # scratch.json lists the subnets in the order of their runs: row i was trained in scratch-i.
    scratch = {r["arch"]: (i, r) for i, r in enumerate(read_json(scratch_dir / "scratch.json", []))}
    pairs = []
    for a in randoms:
        if a["arch"] in scratch:
            i, alone = scratch[a["arch"]]
            minutes = sum(r["seconds"] for r in epoch_records(scratch_dir / f"scratch-{i}")) / 60
            pairs.append({"arch": a["arch"], "macs": a["macs"], "inherited": a["accuracy"],
                          "scratch": alone["accuracy"], "scratch_minutes": round(minutes, 1),
                          "gap_pp": round(100 * (a["accuracy"] - alone["accuracy"]), 2)})
    epochs = epoch_records(out / "supernet")
    # A resumed run logs the resumed part of an interrupted epoch only, and a busy machine slows
    # every epoch: give the logged sum, and the time of the schedule at each phase's median rate.
    logged = sum(r["seconds"] for r in epochs)
    per_epoch = {p.name: float(np.median([r["images_per_s"] for r in epochs if r["phase"] == p.name]))
                 for p in cfg.schedule.phases}
    images = epochs[0]["steps"] * cfg.train.batch_size
    seconds = sum(p.epochs * images / per_epoch[p.name] for p in cfg.schedule.phases)
    within = sum(abs(s["gap_pp"]) <= 0.5 for s in pairs)
    complete = len(pairs) == len(randoms)
    # What a search needs from inherited weights is the right order more than the right level.
    rank = spearman(np.array([s["inherited"] for s in pairs]), np.array([s["scratch"] for s in pairs]))
    doc = {
        "largest": largest, "smallest": smallest, "train_seconds": round(seconds, 1),
        "train_seconds_logged": round(logged, 1), "images_per_s_by_phase": per_epoch,
        "scratch_epochs": scratch_epochs, "pairs_measured": len(pairs), "pairs_planned": len(randoms),
        "spearman_inherited_vs_scratch": None if rank != rank else round(rank, 3),
        "subnets": pairs,
        "checks": {"largest >= 94%": largest["accuracy"] >= 0.94, "smallest >= 91%": smallest["accuracy"] >= 0.91,
                   "train <= 2 h": seconds <= 7200,
                   # None until every planned pair is measured: a partial set proves nothing either way
                   "inherited within 0.5 pp of scratch": (within == len(pairs)) if complete else None},
    }
    atomic_write_json(out / "report.json", doc)
    gaps = [s["gap_pp"] for s in pairs]
    schedule = ", ".join(f"{p.name} {p.epochs}" for p in cfg.schedule.phases)
    lines = [f"# Fashion-MNIST, mbv3-tiny, schedule {schedule} ({seconds / 60:.0f} min of training at each phase's "
             f"median rate; {logged / 60:.0f} min logged)", "",
             f"largest {largest['arch']}: {100 * largest['accuracy']:.2f}%  ",
             f"smallest {smallest['arch']}: {100 * smallest['accuracy']:.2f}%", "",
             f"Random subnets, inherited weights vs trained alone from scratch for {scratch_epochs} epochs"
             + ("" if scratch_dir == out else f" (runs in {scratch_dir})") + ": "
             f"{len(pairs)} of {len(randoms)} pairs measured, {within} within 0.5 pp"
             + (f", gap (inherited - scratch) {min(gaps):+.2f} to {max(gaps):+.2f} pp, mean {np.mean(gaps):+.2f}"
                if gaps else "") + (f", Spearman rank correlation {rank:.2f}" if rank == rank else "") + ".", "",
             "| subnet | MMACs | inherited | scratch | gap (pp) | scratch training |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| `{s['arch']}` | {s['macs'] / 1e6:.1f} | {100 * s['inherited']:.2f}% | {100 * s['scratch']:.2f}% | "
              f"{s['gap_pp']:+.2f} | {s['scratch_minutes']:.0f} min |" for s in pairs]
    verdict = {True: "yes", False: "NO", None: f"not yet ({len(pairs)} of {len(randoms)} pairs)"}
    lines += ["", *(f"- {k}: {verdict[v]}" for k, v in doc["checks"].items())]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    if pairs:
        plot_pairs(out / "pairs.png", pairs, largest, smallest, scratch_epochs, schedule)
    print("\n".join(lines))


def plot_pairs(path: Path, pairs: list[dict], largest: dict, smallest: dict, scratch_epochs: int,
               schedule: str) -> None:
    """Inherited against from-scratch accuracy per subnet, with the 0.5 pp band around equality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([100 * s["scratch"] for s in pairs])
    y = np.array([100 * s["inherited"] for s in pairs])
    lo, hi = min(x.min(), y.min()) - 0.5, max(x.max(), y.max()) + 0.5
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.fill_between([lo, hi], [lo - 0.5, hi - 0.5], [lo + 0.5, hi + 0.5], color="tab:green", alpha=0.15,
                    label="within 0.5 pp (the goal)")
    ax.plot([lo, hi], [lo, hi], color="tab:green", lw=1)
    sc = ax.scatter(x, y, c=[s["macs"] / 1e6 for s in pairs], cmap="viridis", zorder=3)
    fig.colorbar(sc, ax=ax, label="MMACs")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"trained alone from scratch, {scratch_epochs} epochs (test %)")
    ax.set_ylabel("inherited from the supernet, BN recalibrated (test %)")
    ax.set_title(f"Fashion-MNIST, mbv3-tiny: {len(pairs)} random subnets\n"
                 f"supernet schedule (epochs): {schedule}\n"
                 f"supernet largest {100 * largest['accuracy']:.2f}%, smallest {100 * smallest['accuracy']:.2f}%",
                 fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def estimate(run: Path, cfg, config_path: Path, scratch_epochs: int, subnets: int, quick_seconds: float,
             procs: int) -> None:
    """Scale the quick run's measured images/s per phase to the full dataset and schedule (images/s in
    the log count all processes)."""
    full = load_config(config_path)
    ds = load_dataset(full.data)
    n_train, n_val, n_test = len(ds.train), len(ds.val), len(ds.test)
    rates = {r["phase"]: r["images_per_s"] for r in epoch_records(run)}
    train_s = sum(p.epochs * n_train / rates[p.name] for p in full.schedule.phases)
    # Evaluation is forward-only, about 3x the training rate of the full network: 2 subnets per phase end,
    # then the final test and the inherited evaluation of 2 + 10 subnets (each with its BN recalibration).
    fwd_rate = 3 * rates[full.schedule.phases[0].name] / procs  # evaluation runs in one process
    t = full.train
    eval_s = (len(full.schedule.phases) * 2 * (t.val_bn_images + n_val) + 14 * (t.bn_recal_images + n_test)) / fwd_rate
    epochs = sum(p.epochs for p in full.schedule.phases)
    scratch_rates = []
    for i in range(subnets):
        scratch = run.parent / f"scratch-{i}"
        if (scratch / "train_log.jsonl").is_file():
            scratch_rates += [r["images_per_s"] for r in epoch_records(scratch)]
    print(f"\nquick run ({procs} process(es)): {quick_seconds:.0f} s; training images/s per phase: {rates}")
    print(f"estimate on this machine: supernet training {train_s / 3600:.2f} h, evaluation {eval_s / 60:.0f} min")
    if scratch_rates:
        scratch_s = 10 * epochs * n_train / float(np.mean(scratch_rates))
        print(f"estimate: 10 random subnets from scratch, {epochs} epochs each: {scratch_s / 3600:.1f} h")


if __name__ == "__main__":
    raise SystemExit(main())
