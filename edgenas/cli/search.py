"""`edgenas search`: find the most accurate subnet within a latency (and cost) budget."""
from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path

log = logging.getLogger("edgenas.search")

PROXY_EVALUATIONS = 1000  # subnets a proxy-driven search scores when --evaluations is not given
# The strategies `--strategy` and `--compare` offer (edgenas.search.STRATEGIES, without importing it
# when the parser is built).
STRATEGY_NAMES = ["evolution", "nsga2", "random", "rl", "tpe", "differentiable"]
EXAMPLES = """examples:
  edgenas search --supernet run/supernet.pt --latency-table note10.yaml --latency-ms 25 --out r.json
  edgenas search ... --strategy rl --evaluations 5000 --reward soft --reward-exponent -0.07 --out rl.json
  edgenas search ... --strategy tpe --evaluations 1000 --option startup=50 --out tpe.json
  edgenas search ... --strategy differentiable --steps 200 --freeze-weights --out diff.json
  edgenas search ... --accuracy proxy:naswot --evaluations 500 --out zc.json   (training-free)
  edgenas search ... --compare evolution,nsga2,random,rl,tpe --evaluations 2000 --out cmp.json
      (writes cmp-evolution.json, ... and cmp.png: best so far against evaluations, one curve each)

strategy options (--option KEY=VALUE, repeatable; the results file records every option):
  evolution  population, generations, parent_ratio, mutation_ratio, mutate_prob, retries
  nsga2      population, generations, mutate_prob, retries
  random     evaluations, batch
  rl         evaluations (5000), batch (50), reward (hard|soft), reward_exponent (-0.07), lr (0.005),
             entropy (2.0), baseline_decay (0.9), hidden (64), patience (20)
  tpe        evaluations (1000), startup (20), candidates (24), multivariate (true), categorical (true;
             false: the genes as integers, 8x slower)
  differentiable  steps, batch_size, arch_lr, weight_lr, freeze_weights (the flags above), tau_start (5),
             tau_end (0.5), multiplier_lr (2)
"""

def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser(
        "search",
        help="search a subnet under a latency budget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="Search the supernet's space for the most accurate subnet (by the accuracy predictor) whose "
                    "predicted latency on every given table is within --latency-ms, and within the optional MACs, "
                    "params and peak-memory budgets. Writes the top-k (and for nsga2 the Pareto front) to --out "
                    "as JSON and a plot of accuracy against latency beside it.",
    )
    add_common(p)
    p.add_argument("--supernet", required=True, metavar="CKPT", help="supernet checkpoint (its space is searched)")
    p.add_argument("--latency-table", action="append", default=[], metavar="LUT",
                   help="latency table file, or a directory of OFA lookup tables; repeat for several devices")
    p.add_argument("--latency-ms", type=T.positive(), metavar="MS", help="latency budget, on every table")
    p.add_argument("--max-mflops", type=T.positive(), metavar="X", help="budget in millions of MACs")
    p.add_argument("--max-params", type=T.positive(), metavar="Y", help="budget in millions of parameters")
    p.add_argument("--max-peak-kb", type=T.positive(), metavar="Z", help="budget of peak fp32 activation memory, KB")
    p.add_argument("--resolutions", type=T.resolution, nargs="+", metavar="R",
                   help="only subnets at these input resolutions, e.g. the size your camera pipeline gives "
                        "(default: those the supernet's last training phase sampled)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="evolution",
                   help="evolution (default), nsga2 (the Pareto front), random, rl (REINFORCE controller), "
                        "tpe (optuna's TPE), or differentiable: gradient descent on architecture logits through the "
                        "trained supernet (Gumbel-softmax paths, DARTS alternation, the latency budget as a "
                        "Lagrange-multiplier hard constraint), e.g. --strategy differentiable --steps 200 --freeze-weights")
    p.add_argument("--compare", type=T.strategy_list(STRATEGY_NAMES), metavar="S1,S2,...",
                   help="run each strategy at the same number of evaluations (--evaluations, default population "
                        "x (generations + 1)) and plot their best-so-far curves on one figure (--plot); each "
                        "results file is --out with -STRATEGY before its suffix")
    p.add_argument("--reward", choices=["hard", "soft"], default="hard",
                   help="rl: hard (default; samples over budget are repaired) or soft (MnasNet: "
                        "accuracy x (cost / budget) ^ w, no repair)")
    p.add_argument("--reward-exponent", type=T.number(-10.0, 10.0, lo_open=False), default=-0.07, metavar="W",
                   help="rl --reward soft: the exponent w (default -0.07, MnasNet's)")
    p.add_argument("--option", type=T.strategy_option, action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the strategy (see below), e.g. --option batch=100; with --compare, "
                        "each strategy that takes it")
    p.add_argument("--predictor", metavar="PRED", help="accuracy predictor (default: CKPT's .predictor.pt)")
    p.add_argument("--accuracy", type=T.accuracy_source, default="predictor", metavar="SOURCE",
                   help="the objective: 'predictor' (default), or proxy:NAME for training-free search by a zero-cost "
                        "proxy (synflow, grad_norm, snip, naswot, zico) of each subnet on a few training batches of "
                        "--data; proxies cost tens of ms per subnet, so without --evaluations the search stops after "
                        f"{PROXY_EVALUATIONS} subnets")
    p.add_argument("--spread-penalty", type=T.number(0.0, 10.0, lo_open=False), default=0.0, metavar="K",
                   help="rank by the predictor's accuracy less K standard deviations of its ensemble (in logit "
                        "space), so that an uncertain winner gives way to a surer one (default 0: rank by the "
                        "mean; the spread is reported either way)")
    p.add_argument("--seed", type=T.seed, default=0, help="same seed, same result (default 0)")
    p.add_argument("--top-k", type=T.count(1, T.MAX_POPULATION), default=10, metavar="K", help="architectures to keep in --out (default 10)")
    p.add_argument("--population", type=T.count(2, T.MAX_POPULATION), default=100, metavar="N", help="evolution / nsga2 (default 100)")
    p.add_argument("--generations", type=T.count(0, T.MAX_GENERATIONS), default=500, metavar="N", help="evolution / nsga2 (default 500)")
    p.add_argument("--mutate-prob", type=T.probability(), default=0.1, metavar="P",
                   help="chance that mutation resamples each gene (default 0.1)")
    p.add_argument("--parent-ratio", type=T.probability(lo_open=True), default=0.25, metavar="R",
                   help="evolution: share of the population kept as parents (default 0.25)")
    p.add_argument("--mutation-ratio", type=T.probability(), default=0.5, metavar="R",
                   help="evolution: share of children made by mutation, the rest by crossover (default 0.5)")
    p.add_argument("--evaluations", type=T.count(1, T.MAX_EVALUATIONS), metavar="N",
                   help="stop after N distinct architectures (defaults: random population x (generations + 1), rl 5000, tpe 1000)")
    d = p.add_argument_group("differentiable strategy")
    d.add_argument("--steps", type=T.count(1, T.MAX_GENERATIONS), default=200, metavar="N",
                   help="alternations of a weight step (train split) and an architecture step (val split) (default 200)")
    d.add_argument("--freeze-weights", action="store_true", help="architecture steps only: no weight steps")
    d.add_argument("--arch-lr", type=T.positive(100.0), default=0.05, metavar="LR",
                   help="Adam learning rate of the architecture logits (default 0.05)")
    d.add_argument("--weight-lr", type=T.positive(100.0), default=0.005, metavar="LR",
                   help="SGD learning rate of the weight steps, on a copy of the supernet (default 0.005)")
    d.add_argument("--search-batch-size", type=T.batch_size, default=64, metavar="B",
                   help="images per step (default 64)")
    d.add_argument("--torch-device", default="auto", metavar="DEV",
                   help="cpu, cuda, cuda:N or auto (cuda when present; default auto); --device is the device "
                        "profile of --verify")
    p.add_argument("--out", required=True, metavar="JSON", help="results file (written atomically)")
    p.add_argument("--plot", metavar="PNG", help="plot file (default: --out with .png)")
    p.add_argument("--verify", type=T.count(0, T.MAX_POPULATION), default=0, metavar="K",
                   help="re-evaluate the top K with the supernet (BN recalibrated) and, with --device, measure them")
    p.add_argument("--device", metavar="PROFILE", help="device profile for --verify latency measurements")
    p.add_argument("--data", metavar="NAME", help="dataset for --verify and proxies (default: the checkpoint's)")
    p.add_argument("--data-path", metavar="DIR", help="dataset directory for --verify and proxies")
    from edgenas.cli.eval import add_proxy_flags

    add_proxy_flags(p)
    p.add_argument("--threads", type=T.threads, default=None,
                   help="torch CPU threads for what runs the supernet: proxies, measured accuracy, --verify "
                        "(default: torch's choice; 1 can be far faster on a busy machine)")
    p.add_argument("--force", action="store_true",
                   help="use a latency table that profile marked unreliable (its predictions may be noise)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgenas.errors import EdgeNASError
    from edgenas.search import Constraint, cost_metric, search
    from edgenas.search.measure import open_checkpoint
    from edgenas.search.predictor import AccuracyPredictor, default_predictor_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.latency_ms is not None and not args.latency_table:
        raise EdgeNASError("--latency-ms needs at least one --latency-table")
    if args.latency_table and args.latency_ms is None:
        raise EdgeNASError("--latency-table needs a budget: add --latency-ms MS")

    from edgenas.io import check_outputs, checkpoint_files

    proxy = args.accuracy[len("proxy:"):] if args.accuracy.startswith("proxy:") else None
    predictor_path = Path(args.predictor) if args.predictor else default_predictor_path(args.supernet)
    if proxy and args.predictor:
        raise EdgeNASError(f"--predictor and --accuracy {args.accuracy} exclude each other: the proxy is the objective")
    if proxy and args.spread_penalty:
        raise EdgeNASError(f"--spread-penalty ranks by the accuracy predictor's spread, and --accuracy {args.accuracy} "
                           "has none: drop one of them")
    plot = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    check_outputs({"--supernet": checkpoint_files(args.supernet), "--predictor": None if proxy else predictor_path,
                   "--latency-table": args.latency_table, "--device": args.device, "--data-path": args.data_path},
                  files={"--out": args.out, "--plot": plot})
    supernet, info = open_checkpoint(args.supernet)
    space = supernet.space
    bar = None
    measured = False
    if proxy:
        accuracy, bar = proxy_objective(args, supernet, info, proxy)
    elif args.strategy == "differentiable" and not args.predictor and not predictor_path.is_file():
        accuracy, measured = measured_accuracy(args, supernet, info), True
    else:
        # the predictor itself: search reports its ensemble's spread and can rank by mean - K sd
        accuracy = AccuracyPredictor.load(predictor_path, space)
        if accuracy.needs_supernet:
            bar = attach_proxies(args, accuracy, supernet, info)

    tables, latency, table_resolutions, precisions = load_tables(args.latency_table, space, force=args.force)
    constraints = [Constraint(m, args.latency_ms) for m in latency]
    for flag, name in (("max_mflops", "mflops"), ("max_params", "mparams"), ("max_peak_kb", "peak_kb")):
        if getattr(args, flag) is not None:
            constraints.append(Constraint(cost_metric(name), getattr(args, flag)))

    resolutions = args.resolutions or default_resolutions(info, table_resolutions)
    evaluations = args.evaluations or (PROXY_EVALUATIONS if proxy else None)
    equal = evaluations or args.population * (args.generations + 1) if args.compare else evaluations
    results = {}
    try:
        for strategy in args.compare or [args.strategy]:
            options = strategy_flags(args, strategy, equal)
            if strategy == "differentiable":
                options |= differentiable_options(args, supernet, info)
                if bar is not None:
                    bar.close()
                bar = options.pop("_bar")
            result = search(space, accuracy, constraints, strategy, seed=args.seed, top_k=args.top_k,
                            report=latency + [cost_metric("mflops"), cost_metric("mparams")],
                            max_evals=equal, resolutions=resolutions, spread_penalty=args.spread_penalty,
                            **options)
            results[strategy] = result
    finally:
        if bar is not None:
            bar.close()
    for result in results.values():
        result.extra["tables"] = tables
        if proxy:
            result.extra["proxy"] = {"name": proxy, "batches": args.proxy_batches, "batch_size": args.proxy_batch_size,
                                     "weights": args.proxy_weights, "data": info.data.name if args.data is None else args.data}
        elif measured:
            result.extra["accuracy"] = "measured on the val split after BatchNorm recalibration (no predictor)"
        else:
            result.extra["predictor"] = str(predictor_path)
            if args.spread_penalty:
                result.extra["spread_penalty"] = args.spread_penalty
        result.extra["supernet"] = str(args.supernet)
        if args.verify:
            from edgenas.search.verify import verify

            result.extra["verify"] = verify(supernet, info, result, args, precisions=precisions)
    if not args.compare:
        result.save(args.out)
        result.plot(plot)
        print(result.summary())
        print(f"wrote {args.out} ({len(result.top)} best{f', {len(result.front)} on the front' if args.strategy == 'nsga2' else ''}) and {plot}")
        return 0
    from edgenas.plotting import plot_convergence

    out = Path(args.out)
    for strategy, result in results.items():
        path = out.with_name(f"{out.stem}-{strategy}{out.suffix}")
        result.save(path)
        print(f"{strategy}: best {result.best[result.accuracy_name]:.3f} {result.accuracy_name} after "
              f"{result.evaluations} evaluations ({result.seconds:.2f} s); wrote {path}")
    budget = ", ".join(f"{n} <= {v:g}" for n, v in next(iter(results.values())).budget.items())
    plot_convergence({s: r.history for s, r in results.items()}, plot,
                     f"{space.name}: best so far, seed {args.seed}", ylabel=f"best {next(iter(results.values())).accuracy_name}",
                     budget_note=budget)
    print(f"wrote {plot}")
    return 0


def proxy_objective(args, supernet, info, proxy: str):
    """(the proxy's Metric over the supernet's subnets, its progress bar) for --accuracy proxy:NAME."""
    from edgenas.cli.eval import proxy_setup
    from edgenas.data import load_dataset
    from edgenas.progress import progress_bar
    from edgenas.search.measure import dataset_config
    from edgenas.search.proxies import proxy_metric

    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    net, batches = proxy_setup(args, supernet, dataset)
    total = args.evaluations or PROXY_EVALUATIONS
    bar = progress_bar(total, f"search by {proxy}", unit="subnet", enabled=not getattr(args, "quiet", False))
    # A generation is scored whole, so the count may pass the stop a little: the bar stops at it.
    return proxy_metric(net, proxy, batches, on_result=lambda n: bar.update(n) if bar.n < total else None), bar


def attach_proxies(args, predictor, supernet, info):
    """Give a predictor with zero-cost proxy features the supernet and dataset it computes them
    from; returns the progress bar of the subnets scored (the search's evaluations at most)."""
    from edgenas.data import load_dataset
    from edgenas.progress import progress_bar
    from edgenas.search.measure import dataset_config

    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    total = args.evaluations or args.population * (args.generations + 1)
    proxies = ", ".join(f for f in predictor.features if f.startswith("proxy:"))
    log.info("the predictor takes zero-cost proxy features (%s): each new subnet is scored on the supernet", proxies)
    bar = progress_bar(total, "proxy features", unit="subnet", enabled=not getattr(args, "quiet", False))
    predictor.attach(supernet, dataset, on_compute=lambda n: bar.update(n) if bar.n < total else None)
    return bar


def strategy_flags(args: argparse.Namespace, strategy: str, evaluations: int | None) -> dict:
    """The options `strategy` gets from the flags: the typed ones it takes, then --option KEY=VALUE."""
    from edgenas.search.engine import strategy_options

    flags = {"population": args.population, "generations": args.generations, "mutate_prob": args.mutate_prob,
             "parent_ratio": args.parent_ratio, "mutation_ratio": args.mutation_ratio,
             "reward": args.reward, "reward_exponent": args.reward_exponent}
    if strategy == "random":
        flags["evaluations"] = evaluations or args.population * (args.generations + 1)
    elif evaluations:
        flags["evaluations"] = evaluations
    takes = strategy_options(strategy)
    options = {k: v for k, v in flags.items() if k in takes}
    given = dict(args.option)
    if args.compare:  # each compared strategy gets the options it takes; one that none takes is an error
        for key in given:
            if not any(key in strategy_options(s) for s in args.compare):
                strategy_options(args.compare[0], {key: given[key]})
        given = {k: v for k, v in given.items() if k in takes}
    options.update(given)
    strategy_options(strategy, options)  # an option the strategy does not take is a one-line error
    return options


def measured_accuracy(args, supernet, info):
    """Accuracy (%) on the val split after BN recalibration: the differentiable search's objective
    for the subnet it returns when the supernet has no predictor."""
    from edgenas.data import load_dataset
    from edgenas.search import Metric
    from edgenas.search.measure import dataset_config, subnet_accuracy
    from edgenas.train.evaluate import calibration_images

    log.info("no predictor beside %s: the returned subnet's accuracy is measured on the val split", args.supernet)
    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    evaluate = subnet_accuracy(supernet, dataset, calibration_images(dataset, info.config.train.bn_recal_images,
                                                                     args.seed), "val")
    return Metric("accuracy", lambda archs: [evaluate(a) for a in archs], goal="max", unit="%")


def differentiable_options(args, supernet, info) -> dict:
    """The differentiable strategy's options: the supernet, its data, the flags, the torch device."""
    import torch

    from edgenas.data import load_dataset
    from edgenas.errors import EdgeNASError
    from edgenas.progress import progress_bar
    from edgenas.search.measure import dataset_config

    device = args.torch_device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError):
        raise EdgeNASError(f"--torch-device {args.torch_device!r} is not a torch device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EdgeNASError(f"--torch-device {args.torch_device}: CUDA is not available here; use cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise EdgeNASError(f"--torch-device {args.torch_device}: expected cpu, cuda, cuda:N or auto")
    dataset = load_dataset(dataset_config(info, args.data, args.data_path))
    bar = progress_bar(args.steps, "differentiable search", unit="step", enabled=not getattr(args, "quiet", False))
    return {"supernet": supernet, "dataset": dataset, "steps": args.steps, "batch_size": args.search_batch_size,
            "arch_lr": args.arch_lr, "weight_lr": args.weight_lr, "freeze_weights": args.freeze_weights,
            "device": device, "progress": bar.update, "_bar": bar}


def default_resolutions(info, measured: list[set[int]]) -> tuple[int, ...]:
    """The resolutions the supernet's last phase trained that every latency table measured."""
    from edgenas.errors import EdgeNASError

    trained = info.trained_resolutions
    both = tuple(r for r in trained if all(r in m for m in measured))
    if not both:
        raise EdgeNASError(
            f"the supernet was trained at {', '.join(map(str, trained))} px, but the latency tables measured only "
            f"{', '.join(map(str, sorted(set.intersection(*measured))))} px; profile the device at a trained "
            "resolution (edgenas profile --resolutions) or choose one with --resolutions")
    if len(both) < len(info.space.resolutions):
        log.info("searching at %s px: what the supernet trained%s (--resolutions to choose)",
                 ", ".join(map(str, both)), " and the tables measured" if measured else "")
    return both


def load_tables(paths: list[str], space, force: bool = False):
    """Latency tables, their metrics, the resolutions each measured and {name: precision}; names
    made unique ("note10", "note10-2"). A table that profile marked unreliable is an error unless
    `force`."""
    from edgenas.errors import EdgeNASError
    from edgenas.latency.table import LatencyTable
    from edgenas.search import latency_metric

    tables, metrics, measured, precisions = {}, [], [], {}
    for path in paths:
        table = LatencyTable.load(path)
        if table.unreliable:
            why = table.unreliable[0] + (f" (+{len(table.unreliable) - 1} more)" if len(table.unreliable) > 1 else "")
            if not force:
                raise EdgeNASError(f"latency table {path} is unreliable: {why}; profile again as its header's "
                                   "calibration.check.advice says, or pass --force")
            log.warning("searching with unreliable latency table %s (--force): %s", path, why)
        measured.append(set(table.resolutions))
        name = table.name
        n = 2
        while name in tables:
            name, n = f"{table.name}-{n}", n + 1
        tables[name] = str(path)
        precisions[name] = table.precision
        metrics.append(latency_metric(table, name, space))
    return tables, metrics, measured, precisions
