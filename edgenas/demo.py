"""`edgenas demo`: the whole path on the embedded default, with no network and no device.

    train a mbv3-tiny supernet on the bundled digits
      -> build its accuracy predictor
      -> profile this machine's CPU (local transport, onnxruntime) into a latency table
      -> search the best subnet under a budget in the middle of the table's reachable range
      -> one table more for each other runtime and precision exported (TFLite fp32 and int8), at
         the winner's resolution, to predict its files
      -> fine-tune it briefly (distilled from the supernet's largest subnet), when the training's
         measured speed says that fits in FINETUNE_SECONDS
      -> export it (ONNX; TFLite and TFLite int8 when litert-torch is installed), checked against
         PyTorch
      -> measure the ONNX file on this CPU (over the budget: search again under a target
         corrected by what was measured, at most twice), then every other file on the profile of
         its runtime and precision, each against its own table's prediction
      -> a summary table, and report.md with the plots, in the run directory

Every step writes its files into the run directory and skips work it finds already done, so an
interrupted demo resumes where it stopped when run again with the same --out.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from edgenas.io import atomic_write_text

log = logging.getLogger("edgenas.demo")

# The least relative error of a latency prediction the demo allows for when it searches under its
# budget; a table whose calibration subnets measured further above its predictions widens it.
SAFETY_MARGIN = 0.10

# This machine as the device: no SSH, onnxruntime on one CPU thread. The timed runs are split into
# rounds and the least disturbed round counts, so that other processes on a shared machine do not
# push a measurement over the budget (see the agent's docstring).
LOCAL_CPU = {"name": "local-cpu", "transport": "local", "runtime": "onnxruntime", "threads": 1,
             "warmup": 10, "runs": 60, "rounds": 3}
# The exported file is measured over a longer window of rounds (about half a second).
LOCAL_CPU_FINAL = dict(LOCAL_CPU, runs=400, rounds=20)
# Searches again (at most this many times) when the exported file measures over the budget.
RETRIES = 2
# The winner is fine-tuned for this many epochs when the supernet's training speed (its log's last
# epoch) says they take at most FINETUNE_SECONDS; otherwise the inherited weights are exported.
FINETUNE_EPOCHS = 2
FINETUNE_SECONDS = 90.0
# Whole subnets that calibrate the tables of the other exported formats: each is converted once
# (TFLite conversions take seconds), and 8 still let the table's check judge its measurements.
OTHER_CALIBRATION = 8
# int8 tables and files: training images whose activations calibrate the quantization.
CALIB_IMAGES = 64


def local_profile(runtime: str = "onnxruntime", precision: str = "fp32", final: bool = False) -> dict:
    """This CPU as the device for files of `runtime` at `precision` (final: the longer window the
    exported files are measured over). The same name, runtime, options, threads and precision,
    so the same profile key, whichever the window."""
    base = LOCAL_CPU_FINAL if final else LOCAL_CPU
    if (runtime, precision) == ("onnxruntime", "fp32"):
        return dict(base)
    name = "local-cpu-" + ("onnx" if runtime == "onnxruntime" else runtime) + ("" if precision == "fp32" else f"-{precision}")
    d = dict(base, name=name, runtime=runtime, precision=precision)
    if runtime == "tflite":
        d["runtime_options"] = {"delegate": "xnnpack"}
    return d


@dataclass
class DemoResult:
    out_dir: Path
    arch: str
    accuracy: dict[str, float]  # format -> test accuracy (%) of the exported file
    predicted_accuracy: float  # by the predictor
    budget_ms: float
    target_ms: float  # what the search aimed under: the budget less the table's error margin
    predicted_ms: float  # of the ONNX file, by the table the search used
    measured_ms: dict[str, float | None]  # format -> measured median on this CPU
    predicted_by_format: dict[str, float | None] = field(default_factory=dict)  # format -> by its own table
    tables: dict[str, str] = field(default_factory=dict)  # format -> the table that predicts it
    invalid: dict[str, str] = field(default_factory=dict)  # int8 format -> why its check failed
    sizes: dict[str, int] = field(default_factory=dict)  # format -> file bytes
    macs: int = 0
    params: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time
    report: Path | None = None
    # the fine-tune of the winner: epochs, accuracy_before, accuracy_after (test, %), images, seconds;
    # or {"skipped": why}
    finetune: dict | None = None

    @property
    def within_budget(self) -> bool:
        onnx = self.measured_ms.get("onnx")
        return onnx is not None and onnx <= self.budget_ms


def _search_target(target_ms: float, minimum_ms: float) -> float:
    """`target_ms` to the microsecond, but never below the smallest reachable latency: rounding
    that minimum itself (0.3925 to 0.392 ms) made the search's budget infeasible."""
    return max(round(target_ms, 3), minimum_ms)


def run_demo(out_dir: str | Path = "runs/demo", *, overrides: list[str] | None = None, samples: int = 300,
             formats: list[str] | None = None, seed: int = 0,
             progress: bool | None = None) -> DemoResult:
    """Run every step (see the module docstring); `overrides` are `edgenas train --set` items."""
    import edgenas
    from edgenas.export.formats import formats_for

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def step(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[name] = round(seconds.get(name, 0.0) + now - clock, 1)
        clock = now
        log.info("demo: %s done in %.0f s", name, seconds[name])

    # 1. Train (resumes from the run's checkpoint when one is there).
    train_dir = out / "train"
    cfg = edgenas.load_config(None, list(overrides or []))
    if not (train_dir / "supernet.pt").exists():
        edgenas.train_supernet(cfg, train_dir, resume=(train_dir / "checkpoint.pt").exists(), progress=progress)
    supernet, info = edgenas.load_supernet(train_dir)
    space = supernet.space
    dataset = edgenas.load_dataset(info.data)
    step("train")

    # 2. Accuracy predictor (its measurements are appended as they come, so it resumes too).
    # Where `edgenas search --supernet OUT/train` looks for it by default, so the demo's files chain
    # into `edgenas search` and `edgenas export` with no --predictor flag.
    predictor_path = edgenas.default_predictor_path(train_dir)
    predictor = None
    if predictor_path.exists():
        from edgenas.search.predictor import OutdatedPredictorError

        try:
            # (a predictor rebuilt with zero-cost proxy features computes them on the supernet)
            predictor = edgenas.AccuracyPredictor.load(predictor_path, space).attach(supernet, dataset)
        except OutdatedPredictorError as exc:  # an older demo's run: retrain it from its logged measurements
            log.warning("demo: %s", exc)
    if predictor is None:
        # BN statistics from 250 images per subnet (the default is 2000; digits has 1294): about
        # 3x cheaper, and the predictor needs the ranking of subnets more than their last 0.1 pp.
        predictor, report = edgenas.build_predictor(supernet, dataset, predictor_path, samples=samples, seed=seed,
                                            bn_images=250, resolutions=info.trained_resolutions)
        log.info("demo: predictor RMSE %.2f pp, Spearman %.3f (95%% bootstrap interval %.2f to %.2f) on %d held-out "
                 "subnets (ensemble spread %.2f pp)", report.rmse, report.spearman, report.spearman_low,
                 report.spearman_high, report.n_test, report.sd)
    step("predictor")

    # 3. Profile this CPU (only missing keys are measured on a rerun).
    profile = edgenas.DeviceProfile.from_dict(LOCAL_CPU, source="edgenas demo")
    table_path = out / "latency_table.yaml"
    # None: a bar on a terminal, plain progress lines in a log (edgenas.progress)
    edgenas.profile_device(profile, space, out=table_path, progress=progress is not False, seed=seed)
    table = edgenas.LatencyTable.load(table_path)
    if table.unreliable:  # the profiler has said why; say what it means for the rest of the path
        log.warning("demo: the latency table is unreliable on this machine now; the demo goes on with it, but "
                    "`edgenas search --latency-table %s` will ask for --force: delete it and rerun the demo when the "
                    "machine is quieter", table_path)
    formats = formats or _available_formats()
    step("profile")

    # 4. Search under the midpoint of the reachable latency range.
    latency = edgenas.latency_metric(table, "local-cpu", space)
    reach = edgenas.metric_range(space, latency, resolutions=info.trained_resolutions)
    budget = round((reach.minimum + reach.maximum) / 2, 3)
    # The search aims below the budget by the table's error, so that the measured latency, not
    # only the predicted one, fits: at least 10%, more when the calibration subnets measured
    # further above their predictions (90th percentile; small models on a shared CPU).
    margin = max(SAFETY_MARGIN, table.underprediction(space))
    target = _search_target(budget / (1 + margin), reach.minimum)
    log.info("demo: reachable latency %.3f..%.3f ms on this CPU; budget %.3f ms, searching under %.3f ms "
             "(the table's error margin is %.0f%%)", reach.minimum, reach.maximum, budget, target, 100 * margin)
    final_profile = edgenas.DeviceProfile.from_dict(LOCAL_CPU_FINAL, source="edgenas demo")
    searched = [f for f in formats if f in formats_for("onnxruntime")]  # what the search's table predicts
    for attempt in range(1 + RETRIES):
        result = edgenas.search_subnets(space, predictor, [edgenas.Constraint(latency, target)], "evolution",
                                        seed=seed, resolutions=info.trained_resolutions,
                                        report=[latency, edgenas.cost_metric("mflops"), edgenas.cost_metric("mparams")])
        result.extra["tables"] = {"local-cpu": str(table_path)}
        result.save(out / "search.json")
        result.plot(out / "search.png")
        best = result.best
        arch = edgenas.Arch.parse(best["arch"], space)
        step("search")

        # 5. Fine-tune the winner when that fits the time budget (else export the inherited weights,
        # BN recalibrated), then export it, checked against PyTorch on the test split.
        tuned, finetuned = _finetune(train_dir, arch, out / "finetune", progress)
        step("finetune")
        if tuned is not None:
            net, ft_info = edgenas.load_subnet(tuned)
            checkpoint = tuned
        else:
            net, ft_info, checkpoint = supernet.subnet(arch, dataset, bn_images=2000, seed=seed), None, train_dir / "supernet.pt"
        meta = edgenas.ExportMetadata(space=space, latency_tables=[table], budget_ms=budget,
                                      source={"checkpoint": str(checkpoint), "results": str(out / "search.json")},
                                      finetune=ft_info.finetune if ft_info is not None else None)
        # While the pick may change, only the files the search's table predicts (TFLite
        # conversions take seconds each); every format once the pick is final.
        exported = edgenas.export_subnet(net, searched or formats, out / "export", metadata=meta, dataset=dataset)
        _check_export(exported)
        step("export")

        # 6. Measure the exported files on this CPU. Over the budget, search again with the target
        # corrected by what this subnet measured against its prediction (the loop a user would run).
        comparisons = edgenas.measure_exports(exported, final_profile, budget) if searched else []
        step("measure")
        measured = next((c.measured_ms for c in comparisons if c.format == "onnx"), None)
        predicted = float(table.predict(arch, space))
        if measured is None or measured <= budget or attempt == RETRIES:
            break
        target = _search_target(budget * predicted / measured / (1 + SAFETY_MARGIN / 2), reach.minimum)
        log.info("demo: %s measured %.3f ms, %.0f%% above its prediction and over the %.3f ms budget; "
                 "searching again under %.3f ms", arch, measured, 100 * (measured / predicted - 1), budget, target)

    # 7. The other formats: their tables at the winner's resolution alone (a TFLite layer costs
    # seconds of conversion), every file exported, and each measured on the profile of its runtime
    # and precision against its own table.
    other_tables = _other_tables(formats, supernet, dataset, space, out, seed, progress, arch.resolution)
    step("profile")
    if other_tables or not searched:
        meta = dataclasses.replace(meta, latency_tables=[table, *other_tables.values()])
        exported = edgenas.export_subnet(net, formats, out / "export", metadata=meta, dataset=dataset)
        _check_export(exported)
        step("export")
        comparisons = edgenas.measure_exports(exported, final_profile, budget) if searched else []
    for (runtime, precision) in other_tables:
        profile_of = edgenas.DeviceProfile.from_dict(local_profile(runtime, precision, final=True), source="edgenas demo")
        comparisons += edgenas.measure_exports(exported, profile_of, None)
    step("measure")
    for c in comparisons:
        log.info("demo: %s", c.line())

    cost = edgenas.arch_cost(space, arch)
    summary = DemoResult(
        out_dir=out, arch=str(arch),
        accuracy={f: r.accuracy for f, r in exported.results.items()},
        predicted_accuracy=float(best[result.accuracy_name]), budget_ms=budget, target_ms=target,
        predicted_ms=predicted,
        measured_ms={c.format: c.measured_ms for c in comparisons},
        predicted_by_format={c.format: c.predicted_ms for c in comparisons},
        tables={c.format: c.table for c in comparisons},
        invalid={r.format: r.error for r in exported.failures},
        sizes={f: r.path.stat().st_size for f, r in exported.results.items() if r.path},
        macs=cost.macs, params=cost.params,
        seconds=seconds, finetune=finetuned,
    )
    summary.report = write_report(summary, train_dir, out)
    return summary


def _check_export(exported) -> None:
    """Stop on a float file that disagrees with PyTorch (a bug); an int8 file whose quantization
    lost accuracy (a small model trained briefly, say) is reported and still measured."""
    from edgenas.export.formats import FORMATS

    for r in exported.failures:
        if r.path is not None and FORMATS[r.format].precision == "int8":
            log.warning("demo: %s: %s; its latency is still measured", r.format, r.error)
        else:
            exported.raise_for_failures()


def _other_tables(formats, supernet, dataset, space, out: Path, seed: int, progress, resolution: int) -> dict:
    """(runtime, precision) -> the latency table of this CPU for each exported format the search
    table (onnxruntime fp32) does not predict, at `resolution`: profiled like it, int8 layers
    calibrated on the supernet's activations of training images."""
    import torch

    import edgenas
    from edgenas.export.formats import FORMATS
    from edgenas.latency.int8 import ActivationSource

    tables = {}
    for name in formats:
        fmt = FORMATS.get(name)
        if fmt is None or (fmt.runtime, fmt.precision) in tables or (fmt.runtime, fmt.precision) == ("onnxruntime", "fp32"):
            continue
        profile = edgenas.DeviceProfile.from_dict(local_profile(fmt.runtime, fmt.precision), source="edgenas demo")
        activations = None
        if fmt.precision == "int8":
            images = dataset.sample_images("train", CALIB_IMAGES, torch.Generator().manual_seed(seed))
            activations = ActivationSource(supernet, images, f"{len(images)} {dataset.name} training images", seed=seed)
        path = out / f"latency_table_{name}.yaml"
        edgenas.profile_device(profile, space, resolutions=[resolution], out=path, calibrate=OTHER_CALIBRATION,
                               progress=progress is not False, seed=seed, activations=activations)
        tables[(fmt.runtime, fmt.precision)] = edgenas.LatencyTable.load(path)
    return tables


def _available_formats() -> list[str]:
    import importlib.util

    if importlib.util.find_spec("litert_torch") is not None:  # imported (quietly) only when converting
        return ["onnx", "tflite", "tflite-int8"]
    log.warning("demo: litert-torch is not installed, exporting ONNX only (pip install 'edgenas[tflite]')")
    return ["onnx"]


def _finetune(train_dir: Path, arch, root: Path, progress) -> tuple[Path | None, dict]:
    """(the fine-tuned checkpoint or None, what the summary says) for `arch`; a run directory per
    arch under `root`, so that a rerun reuses or resumes it."""
    import hashlib

    import edgenas

    run = root / hashlib.sha256(str(arch).encode()).hexdigest()[:12]
    if not (run / "finetuned.pt").exists():
        if not (run / "checkpoint.pt").exists():
            estimate = _finetune_estimate(train_dir)
            if estimate is None or estimate > FINETUNE_SECONDS:
                why = ("the training log has no speed to estimate it from" if estimate is None else
                       f"{FINETUNE_EPOCHS} epochs would take about {estimate:.0f} s, over the demo's "
                       f"{FINETUNE_SECONDS:.0f} s for it")
                log.info("demo: not fine-tuning the winner: %s", why)
                return None, {"skipped": why}
            log.info("demo: fine-tuning the winner for %d epochs (about %.0f s)", FINETUNE_EPOCHS, estimate)
            edgenas.finetune_subnet(train_dir, arch, run, epochs=FINETUNE_EPOCHS, progress=progress)
        else:
            edgenas.finetune_subnet(None, None, run, resume=True, progress=progress)
    _, info = edgenas.load_subnet(run)
    r = info.finetune
    log.info("demo: fine-tuned %d epochs: test accuracy %.2f%% -> %.2f%%", r["epochs"], r["accuracy_before"],
             r["accuracy_after"])
    return run / "finetuned.pt", {k: r.get(k) for k in ("epochs", "accuracy_before", "accuracy_after", "images", "seconds")}


def _finetune_estimate(train_dir: Path) -> float | None:
    """Seconds that FINETUNE_EPOCHS epochs take at the supernet's last measured speed (a static
    subnet trains faster than the supernet, plus its teacher's forward passes: about even)."""
    import json

    try:
        lines = (train_dir / "train_log.jsonl").read_text().splitlines()
        last = [r for r in map(json.loads, lines) if r.get("event") == "epoch"][-1]
        return FINETUNE_EPOCHS * last["seconds"] + 5.0  # plus the tests before and after
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return None


def summary_table(r: DemoResult) -> str:
    """The lines `edgenas demo` prints at the end."""
    rows = [("arch", r.arch),
            ("MACs / params", f"{r.macs / 1e6:.2f} M / {r.params / 1e6:.3f} M"),
            ("predicted accuracy", f"{r.predicted_accuracy:.2f} %"),
            ("latency budget", f"{r.budget_ms:.3f} ms (middle of this CPU's reachable range; searched "
                               f"under {r.target_ms:.3f} ms for prediction error)"),
            ("predicted latency", f"{r.predicted_ms:.3f} ms")]
    for fmt in r.accuracy:
        acc = r.accuracy[fmt]
        ms = r.measured_ms.get(fmt)
        rows.append((f"{fmt}", (f"test accuracy {acc:.2f} %" if acc is not None else "test accuracy n/a")
                     + (" (INVALID: see the model card)" if fmt in r.invalid else "")))
        pred = r.predicted_by_format.get(fmt)
        rows.append((f"  measured", (f"{ms:.3f} ms" if ms is not None else "not measured")
                     + (f", predicted {pred:.3f} ms by {r.tables.get(fmt)} (measured/predicted {ms / pred:.2f})"
                        if ms is not None and pred else "")))
        rows.append((f"  size", f"{r.sizes.get(fmt, 0) / 1024:.0f} KiB"))
    ft = r.finetune or {}
    if ft.get("accuracy_after") is not None:
        rows.append(("fine-tuned", f"{ft['epochs']} epochs: test accuracy {ft['accuracy_before']:.2f} % -> "
                                   f"{ft['accuracy_after']:.2f} % (PyTorch, {ft['images']} images)"))
    elif ft.get("skipped"):
        rows.append(("fine-tuned", f"no: {ft['skipped']}"))
    rows.append(("verdict", "measured latency within budget" if r.within_budget else "measured latency OVER budget"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_report(r: DemoResult, train_dir: Path, out: Path) -> Path:
    """report.md: the summary, the step times, and the plots the steps drew."""
    plots = [("Training: loss and accuracy per phase", train_dir / "train_plot.png"),
             ("Search: predicted accuracy against latency", out / "search.png")]
    lines = ["# edgenas demo report", "", "```", summary_table(r), "```", "", "## Time per step", ""]
    lines += [f"- {name}: {sec:.0f} s" for name, sec in r.seconds.items()]
    lines += ["", f"Total: {sum(r.seconds.values()):.0f} s", ""]
    for title, path in plots:
        if path.exists():
            lines += [f"## {title}", "", f"![{title}]({path.relative_to(out)})", ""]
    lines += ["## Files", "", "- `train/`: checkpoints, `train_log.jsonl`, the trained `supernet.pt`",
              "- `train/supernet.predictor.pt`: the accuracy predictor", "- `latency_table.yaml`: this CPU's latency table (onnxruntime fp32, the search's)",
              "- `latency_table_FORMAT.yaml`: the tables of the other exported formats",
              "- `search.json`: the best subnets found",
              "- `finetune/<arch hash>/`: the winner's fine-tune (`finetuned.pt`, its log and plot), when it ran",
              "- `export/`: the model files and their model card `model.json`"]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
