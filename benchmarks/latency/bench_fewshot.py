"""How few whole subnets does a new device need? Few-shot tables against the full ones (issue #20).

    python benchmarks/latency/bench_fewshot.py [--configs-dir benchmarks/latency/out/configs]
        [--space mbv3-w1.0] [--pairs ort-fp32-t1:tflite-fp32-t1 ...] [--ks 5 10 20 40]
        [--no-baseline] [--no-note10] [--note10-target ort-fp32-t1] [--holdout 100]
        [--note10-resolutions 160 ...] [--calibrate 24] [--out benchmarks/latency/out/fewshot]

Inputs are what `bench_configs.py` wrote to `--configs-dir`: per configuration the full table
`<config>-<space>.yaml`, its profile `profiles/<config>.yaml` and in `results.json` the table's
build time, its validation and every held-out subnet's measured latency
(`configs.<config>.validation_subnets`, at the full table's device speed, up to an hour earlier).

For each pair REFERENCE:TARGET (a configuration's full table transferred to another one):

1. the few-shot table is built with the real profiler (`profile_few_shot`, the code behind
   `edgenas profile TARGET --few-shot K --from-table REF`), for K = 5, 10, 20, 40 in turn on one
   table file: each run measures only the subnets the previous one lacks (the design is nested),
   so the K-table's build time (`build_s`, the issue's cost figure) is the sum of the runs up to
   K; each K-table is kept;
2. right after each K run, the held-out subnets are measured again (`truth_now`): together with
   the K-table's own few-shot subnets, shuffled (seeded) into one list, in one `measure_networks`
   call, which is one agent job (its rounds interleave every model of it), on the target's
   profile and model format. Those held-out latencies are that K's truth (`now`), so the K-table
   and its truth are measured at one device speed; no rescaling. The check (`same_speed`): the
   median ratio of the few-shot subnets re-measured in that call to their latencies stored in the
   K-table (`header.calibration.networks`); outside 0.95-1.05 the output says so, and the row
   is to be read with that in mind. Its time (`truth_s`) is not part of the build time. Beside
   it, `then`: the same K-table scored on bench_configs' stored truth, measured at another time;
3. against the full table's own validation (bench_configs'), the smallest K whose `now` scores
   match it (share within +-10% and Spearman both at least the full table's) and the time of
   each build.

Without a reference (`macs:TARGET`, unless --no-baseline) the same for the MACs, params and
activation-bytes baseline. With OFA's Note10 table (`latency_tables/ofa-note10`, space
mbv3-w1.2, unless --no-note10) as the reference of `--note10-target` on this machine: that
space has no bench_configs table, so its full table is built here (`profile_device`, 24
calibration subnets) and `--holdout` held-out subnets are measured here, once, for both (its
`then` truth; each K's `now` truth is measured after its run as above).

Everything lands in benchmarks/latency/out/fewshot/ (git-ignored): tables, results.json (with
the command line and the load average around each step, saved after each K) and fewshot.png,
the curve of share within +-10% (now; then dashed), Spearman (now) and build time against K,
with HELP's 10-sample rank correlation and LitePred's 99.3% within +-10% as published anchors. Timings are only meaningful on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "latency" / "out" / "fewshot"
NOTE10 = ROOT / "latency_tables" / "ofa-note10"
PAIRS = ["ort-fp32-t1:tflite-fp32-t1", "ort-fp32-t1:tflite-int8-t1", "ort-fp32-t1:ort-int8-t1",
         "ort-fp32-t1:ort-fp32-t2", "tflite-fp32-t1:ort-fp32-t1", "ort-int8-t1:ort-fp32-t1"]
# Published anchors (as quoted in issue #20), drawn on the curve; not measured here.
HELP = {"k": 10, "spearman": (0.91, 0.93), "label": "HELP (NeurIPS'21), 10 samples: rank corr. 0.91-0.93"}
LITEPRED = {"within_10pct": 0.993, "label": "LitePred (NSDI'24): 99.3% within ±10%"}
# The few-shot subnets re-measured with the truth / as stored in the K-table: inside this band the
# K-table and its truth were measured at one device speed.
SAME_SPEED = (0.95, 1.05)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def scores(predicted, measured) -> dict:
    from edgenas.latency.validate import spearman

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = p / m - 1.0
    return {"n": int(len(m)), "within_10pct": round(float(np.mean(np.abs(rel) <= 0.10)), 4),
            "spearman": round(float(spearman(p, m)), 4), "rmse_ms": round(float(np.sqrt(np.mean((p - m) ** 2))), 4),
            "mean_abs_pct_error": round(float(np.mean(np.abs(rel))) * 100, 2)}


def activations_for(profile, space_name: str, cache: dict):
    """int8 targets calibrate their models on real images, as bench_configs does."""
    if profile.precision != "int8":
        return None
    if space_name not in cache:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_configs import activation_source, calibration_images

        cache[space_name] = activation_source(space_name, calibration_images(64))
    return cache[space_name]


def fmt_of(profile, acts):
    """The model format the few-shot run measures `profile` in (profile_few_shot's own choice)."""
    from edgenas.latency.formats import model_format

    return model_format(profile.runtime, profile.precision, acts)


def truth_now(profile, fmt, space, holdout: list, table, seed: int) -> dict:
    """The held-out subnets measured at the K-table's device speed: they and the table's own
    few-shot subnets, shuffled (seeded) into one list, in one `measure_networks` call and one
    agent job (chunk_size: the whole list). Returns the held-out latencies (None: failed), the
    ratio re-measured / stored of each few-shot subnet (stored: the table's header) and the time."""
    from edgenas.latency.fewshot import _median
    from edgenas.latency.profiler import measure_networks
    from edgenas.space import Arch

    nets = table.header["calibration"]["networks"]
    shots = [Arch.parse(s, space) for s in table.header["few_shot"]["subnets"]]
    items = [a for a, _ in holdout] + shots
    order = np.random.default_rng(seed).permutation(len(items))
    t0 = time.perf_counter()
    results = measure_networks(profile, fmt, space, [items[i] for i in order], progress=False, desc="truth",
                               chunk_size=len(items))
    seconds = time.perf_counter() - t0
    ms = [None] * len(items)
    for i, r in zip(order, results):
        ms[i] = r.median_ms if r.ok else None
    ratios = [m / _median(nets[str(a)]) for m, a in zip(ms[len(holdout):], shots) if m is not None]
    return {"holdout_ms": ms[:len(holdout)], "ratios": ratios, "seconds": seconds}


def same_speed(ratios: list[float]) -> dict:
    """The few-shot subnets' re-measured / stored latency: 1 where the K-table and the truth
    were measured at one device speed."""
    if not ratios:
        return {"median_ratio": None, "n": 0, "within": False}
    med = float(np.median(ratios))
    return {"median_ratio": round(med, 4), "n": len(ratios), "range": [round(min(ratios), 4), round(max(ratios), 4)],
            "within": bool(SAME_SPEED[0] <= med <= SAME_SPEED[1])}


def scored(pred, measured) -> dict:
    """scores() over the subnets that were measured (None: failed)."""
    ok = [i for i, m in enumerate(measured) if m is not None]
    return scores(np.asarray(pred)[ok], [measured[i] for i in ok])


def k_row(report, seconds: float, total: float, kept: Path, table, pred, truth: dict, then) -> dict:
    fs = table.header["few_shot"]
    return {"table": str(kept.relative_to(ROOT)) if kept.is_relative_to(ROOT) else str(kept),
            "run_s": round(seconds, 1), "build_s": round(total, 1), "truth_s": round(truth["seconds"], 1),
            "networks_measured": len(report.networks_measured), "load_after": load(),
            "model": fs["fit"]["model"], "fit_leave_one_out": fs["fit"]["leave_one_out"],
            "reliable": not table.unreliable, "same_speed": same_speed(truth["ratios"]),
            "now": scored(pred, truth["holdout_ms"]), "then": scores(pred, then)}


def say(name: str, k: int, row: dict) -> None:
    now, then, ss = row["now"], row["then"], row["same_speed"]
    ratio = "n/a" if ss["median_ratio"] is None else f"{ss['median_ratio']:.3f}"
    print(f"{name} K={k}: {now['within_10pct']:.0%} within ±10%, Spearman {now['spearman']} (truth measured "
          f"with the K-table's subnets, same-speed ratio {ratio}); then: {then['within_10pct']:.0%}, "
          f"{then['spearman']} (bench_configs' truth, another time); build {row['build_s']:.0f} s, "
          f"truth {row['truth_s']:.0f} s", flush=True)
    if not ss["within"]:
        print(f"{name} K={k}: the same-speed ratio {ratio} is outside {SAME_SPEED[0]}-{SAME_SPEED[1]}: the K-table's "
              "subnets and this truth were measured at different device speeds; read this row with that in mind",
              flush=True)


def curve(name: str, profile, space, reference, holdout: list, ks: list[int], out_dir: Path, acts,
          resolutions=None):
    """Few-shot tables for K in `ks` on one file (each run refines the last), each scored on the
    holdout measured right after its build (`truth_now`) and on the stored one (`then`): yields
    (K, row) as each K is done."""
    from edgenas.latency import LatencyTable
    from edgenas.latency.fewshot import profile_few_shot

    table_path = out_dir / f"{name}.yaml"
    table_path.unlink(missing_ok=True)
    archs = [a for a, _ in holdout]
    then = [m for _, m in holdout]
    fmt = fmt_of(profile, acts)
    total = 0.0
    for k in ks:
        t0 = time.perf_counter()
        report = profile_few_shot(profile, space, k, reference, resolutions=resolutions, out=table_path, seed=0,
                                  progress=False,
                                  activations=acts, plot=out_dir / f"{name}-k{k}.few-shot.png")
        seconds = time.perf_counter() - t0
        total += seconds
        kept = out_dir / f"{name}-k{k}.yaml"
        shutil.copyfile(table_path, kept)
        table = LatencyTable.load(kept)
        truth = truth_now(profile, fmt, space, holdout, table, seed=k)
        row = k_row(report, seconds, total, kept, table, table.predict(archs, space), truth, then)
        say(name, k, row)
        yield k, row


def matching_k(rows: dict, full: dict | None) -> int | None:
    """The smallest K whose share within +-10% and Spearman both reach the full table's."""
    if not full:
        return None
    for k in sorted(rows):
        h = rows[k]["now"]
        if h["within_10pct"] >= full["within_10pct"] and h["spearman"] >= full["spearman"]:
            return k
    return None


def save(record: dict, path: Path) -> None:
    path.write_text(json.dumps(record, indent=1, default=str))


def run_curve(entry: dict, record: dict, results_path: Path, name: str, *args, **kwargs) -> None:
    """The pair's curve into `entry`, results.json saved after each K (a stopped run keeps its rows)."""
    entry["curve"] = {}
    for k, row in curve(name, *args, **kwargs):
        entry["curve"][k] = row
        entry["matches_full_at_k"] = matching_k(entry["curve"], entry["full"]["validation"])
        save(record, results_path)


def note10_target(args, configs_dir: Path, out_dir: Path, cache: dict) -> tuple:
    """(profile, space, holdout, full-table validation, full build s) for the Note10 pair, built here."""
    from edgenas.device import load_profile
    from edgenas.latency import LatencyTable, profile_device
    from edgenas.latency.profiler import measure_networks
    from edgenas.latency.validate import validation_archs

    profile_path = configs_dir / "profiles" / f"{args.note10_target}.yaml"
    profile = load_profile(profile_path)
    reference = LatencyTable.load(NOTE10)
    space = reference.space()
    res = args.note10_resolutions or reference.resolutions
    acts = activations_for(profile, space.name, cache)
    full_path = out_dir / f"{args.note10_target}-{space.name}.yaml"
    full_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    profile_device(profile, space, resolutions=res, out=full_path, calibrate=args.calibrate, seed=0, progress=False,
                   activations=acts)
    full_s = time.perf_counter() - t0
    archs = validation_archs(space, res, args.holdout, seed=1)
    results = measure_networks(profile, fmt_of(profile, acts), space, archs, progress=False, desc="holdout")
    holdout = [(a, r.median_ms) for a, r in zip(archs, results) if r.ok]
    full = LatencyTable.load(full_path)
    return profile, space, reference, holdout, scores(full.predict([a for a, _ in holdout], space),
                                                      [m for _, m in holdout]), full_s, acts


def plot(record: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from edgenas.io import atomic_write

    fig = Figure(figsize=(14, 4.5), dpi=120)
    ax_w, ax_s, ax_t = fig.subplots(1, 3)
    for i, (name, pair) in enumerate(record["pairs"].items()):
        if not pair.get("curve"):
            continue
        color = f"C{i % 10}"
        ks = sorted(int(k) for k in pair["curve"])
        rows = [pair["curve"][str(k)] if str(k) in pair["curve"] else pair["curve"][k] for k in ks]
        ax_w.plot(ks, [100 * r["now"]["within_10pct"] for r in rows], "o-", color=color, label=name)
        ax_w.plot(ks, [100 * r["then"]["within_10pct"] for r in rows], "x--", color=color, lw=0.8, alpha=0.5)
        ax_s.plot(ks, [r["now"]["spearman"] for r in rows], "o-", color=color, label=name)
        ax_t.plot(ks, [r["build_s"] for r in rows], "o-", color=color, label=name)
        full = pair.get("full") or {}
        if full.get("validation"):
            ax_w.axhline(100 * full["validation"]["within_10pct"], color=color, ls=":", lw=1)
            ax_s.axhline(full["validation"]["spearman"], color=color, ls=":", lw=1)
        if full.get("build_s"):
            ax_t.axhline(full["build_s"], color=color, ls=":", lw=1)
    ax_w.axhline(100 * LITEPRED["within_10pct"], color="k", ls="--", lw=1, label=LITEPRED["label"])
    ax_w.axhline(95, color="grey", ls="-.", lw=1, label="goal at K=20: 95%")
    ax_s.errorbar([HELP["k"]], [np.mean(HELP["spearman"])], yerr=[[np.diff(HELP["spearman"])[0] / 2]] * 2, fmt="ks",
                  label=HELP["label"])
    ax_s.axhline(0.95, color="grey", ls="-.", lw=1, label="goal at K=20: 0.95")
    for ax, ylabel in ((ax_w, "held-out subnets within ±10% (%)"), (ax_s, "Spearman, held-out subnets"),
                       (ax_t, "build time (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(record["ks"], [str(k) for k in record["ks"]])
        ax.minorticks_off()
        ax.set_xlabel("K (whole subnets measured on the target)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_w.legend(fontsize=6, loc="lower right")
    ax_s.legend(fontsize=6, loc="lower right")
    ax_t.set_title("dotted: the full table of the target", fontsize=8)
    ax_w.set_title("dotted: the full table's own validation; x dashed: against the stored truth (another time)",
                   fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs-dir", type=Path, default=ROOT / "benchmarks" / "latency" / "out" / "configs")
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--pairs", nargs="+", default=PAIRS, metavar="REF:TARGET")
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--no-baseline", action="store_true", help="skip the MACs-only baseline of each target")
    ap.add_argument("--no-note10", action="store_true", help="skip OFA's Note10 table as a reference")
    ap.add_argument("--note10-target", default="ort-fp32-t1")
    ap.add_argument("--holdout", type=int, default=100, help="held-out subnets measured for the Note10 pair")
    ap.add_argument("--note10-resolutions", type=int, nargs="+", help="default: the Note10 table's (160-224)")
    ap.add_argument("--calibrate", type=int, default=24, help="calibration subnets of the Note10 pair's full table")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from edgenas.device import load_profile
    from edgenas.latency import LatencyTable
    from edgenas.space import Arch, load_space

    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    ks = sorted(set(args.ks))
    configs = json.loads((args.configs_dir / "results.json").read_text())["configs"]
    space = load_space(args.space)
    record = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "date": time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_before": load(), "ks": ks,
        "anchors": {"help": HELP, "litepred": LITEPRED}, "pairs": {}}
    pairs = list(args.pairs)
    if not args.no_baseline:
        pairs += [f"macs:{t}" for t in dict.fromkeys(p.split(":")[1] for p in args.pairs)]
    cache: dict = {}
    results_path = out_dir / "results.json"
    for pair in pairs:
        ref_name, target = pair.split(":")
        entry: dict = {"reference": ref_name, "target": target, "space": space.name}
        record["pairs"][pair] = entry
        ref_path = args.configs_dir / f"{ref_name}-{space.name}.yaml"
        target_cfg = configs.get(target) or {}
        profile_path = args.configs_dir / "profiles" / f"{target}.yaml"
        missing = [str(p) for p in ([] if ref_name == "macs" else [ref_path]) + [profile_path] if not p.exists()]
        if not target_cfg.get("validation_subnets"):
            missing.append(f"results.json configs.{target}.validation_subnets")
        if missing:
            entry["skipped"] = f"not there yet: {', '.join(missing)}"
            print(f"{pair}: skipped, {entry['skipped']}", flush=True)
            continue
        profile = load_profile(profile_path)
        acts = activations_for(profile, space.name, cache)
        holdout = [(Arch.parse(s["arch"], space), float(s["measured_ms"])) for s in target_cfg["validation_subnets"]]
        entry["full"] = {"table": target_cfg.get("profile"), "build_s": target_cfg.get("table_s"),
                         "validation": {k: target_cfg["validation"][k] for k in ("n", "within_10pct", "spearman",
                                                                                 "rmse_ms", "mean_abs_pct_error")}}
        reference = None if ref_name == "macs" else LatencyTable.load(ref_path)
        full_path = args.configs_dir / f"{target}-{space.name}.yaml"
        res = LatencyTable.load(full_path).resolutions if full_path.exists() else sorted({a.resolution for a, _ in holdout})
        entry["resolutions"] = res
        run_curve(entry, record, results_path, pair.replace(":", "-to-"), profile, space, reference, holdout, ks,
                  out_dir, acts, resolutions=res)
    if not args.no_note10:
        pair = f"ofa-note10:{args.note10_target}"
        t0 = time.perf_counter()
        profile, n_space, reference, holdout, full_v, full_s, acts = note10_target(args, args.configs_dir, out_dir, cache)
        entry = {"reference": "ofa-note10 (latency_tables/ofa-note10)", "target": args.note10_target,
                 "space": n_space.name, "holdout_measured_here": len(holdout),
                 "full": {"build_s": round(full_s, 1), "validation": full_v}, "setup_s": round(time.perf_counter() - t0, 1)}
        record["pairs"][pair] = entry
        run_curve(entry, record, results_path, f"ofa-note10-to-{args.note10_target}-{n_space.name}", profile,
                  n_space, reference, holdout, ks, out_dir, acts, resolutions=args.note10_resolutions)
    record["load_after"] = load()
    save(record, results_path)
    plot(json.loads(results_path.read_text()), out_dir / "fewshot.png")
    print(json.dumps({p: {"matches_full_at_k": e.get("matches_full_at_k"), "skipped": e.get("skipped")}
                      for p, e in record["pairs"].items()}), flush=True)


if __name__ == "__main__":
    main()
