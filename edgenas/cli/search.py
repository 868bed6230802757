"""`edgenas search`: find the most accurate subnet within a latency (and cost) budget."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("edgenas.search")

PROXY_EVALUATIONS = 1000  # subnets a proxy-driven search scores when --evaluations is not given


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser(
        "search",
        help="search a subnet under a latency budget",
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
    p.add_argument("--strategy", choices=["evolution", "nsga2", "random"], default="evolution")
    p.add_argument("--predictor", metavar="PRED", help="accuracy predictor (default: CKPT's .predictor.pt)")
    p.add_argument("--accuracy", type=T.accuracy_source, default="predictor", metavar="SOURCE",
                   help="the objective: 'predictor' (default), or proxy:NAME for training-free search by a zero-cost "
                        "proxy (synflow, grad_norm, snip, naswot, zico) of each subnet on a few training batches of "
                        "--data; proxies cost tens of ms per subnet, so without --evaluations the search stops after "
                        f"{PROXY_EVALUATIONS} subnets")
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
                   help="stop after N distinct architectures (random search default: population x (generations + 1))")
    p.add_argument("--out", required=True, metavar="JSON", help="results file (written atomically)")
    p.add_argument("--plot", metavar="PNG", help="plot file (default: --out with .png)")
    p.add_argument("--verify", type=T.count(0, T.MAX_POPULATION), default=0, metavar="K",
                   help="re-evaluate the top K with the supernet (BN recalibrated) and, with --device, measure them")
    p.add_argument("--device", metavar="PROFILE", help="device profile for --verify latency measurements")
    p.add_argument("--data", metavar="NAME", help="dataset for --verify and proxies (default: the checkpoint's)")
    p.add_argument("--data-path", metavar="DIR", help="dataset directory for --verify and proxies")
    from edgenas.cli.eval import add_proxy_flags

    add_proxy_flags(p)
    p.add_argument("--force", action="store_true",
                   help="use a latency table that profile marked unreliable (its predictions may be noise)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgenas.errors import EdgeNASError
    from edgenas.search import Constraint, cost_metric, latency_metric, predictor_metric, search
    from edgenas.search.measure import open_checkpoint
    from edgenas.search.predictor import AccuracyPredictor, default_predictor_path

    if args.latency_ms is not None and not args.latency_table:
        raise EdgeNASError("--latency-ms needs at least one --latency-table")
    if args.latency_table and args.latency_ms is None:
        raise EdgeNASError("--latency-table needs a budget: add --latency-ms MS")

    from edgenas.io import check_outputs, checkpoint_files

    proxy = args.accuracy[len("proxy:"):] if args.accuracy.startswith("proxy:") else None
    predictor_path = Path(args.predictor) if args.predictor else default_predictor_path(args.supernet)
    if proxy and args.predictor:
        raise EdgeNASError(f"--predictor and --accuracy {args.accuracy} exclude each other: the proxy is the objective")
    plot = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    check_outputs({"--supernet": checkpoint_files(args.supernet), "--predictor": None if proxy else predictor_path,
                   "--latency-table": args.latency_table, "--device": args.device, "--data-path": args.data_path},
                  files={"--out": args.out, "--plot": plot})
    supernet, info = open_checkpoint(args.supernet)
    space = supernet.space
    bar = None
    if proxy:
        accuracy, bar = proxy_objective(args, supernet, info, proxy)
    else:
        predictor = AccuracyPredictor.load(predictor_path, space)
        accuracy = predictor_metric(predictor)

    tables, latency, measured, precisions = load_tables(args.latency_table, space, force=args.force)
    constraints = [Constraint(m, args.latency_ms) for m in latency]
    for flag, name in (("max_mflops", "mflops"), ("max_params", "mparams"), ("max_peak_kb", "peak_kb")):
        if getattr(args, flag) is not None:
            constraints.append(Constraint(cost_metric(name), getattr(args, flag)))

    resolutions = args.resolutions or default_resolutions(info, measured)
    evaluations = args.evaluations or (PROXY_EVALUATIONS if proxy else None)
    options = {"population": args.population, "generations": args.generations, "mutate_prob": args.mutate_prob}
    if args.strategy == "evolution":
        options |= {"parent_ratio": args.parent_ratio, "mutation_ratio": args.mutation_ratio}
    if args.strategy == "random":
        options = {"evaluations": evaluations or args.population * (args.generations + 1)}
    try:
        result = search(space, accuracy, constraints, args.strategy, seed=args.seed, top_k=args.top_k,
                        report=latency + [cost_metric("mflops"), cost_metric("mparams")],
                        max_evals=evaluations if args.strategy != "random" else None, resolutions=resolutions,
                        **options)
    finally:
        if bar is not None:
            bar.close()
    result.extra["tables"] = tables
    if proxy:
        result.extra["proxy"] = {"name": proxy, "batches": args.proxy_batches, "batch_size": args.proxy_batch_size,
                                 "weights": args.proxy_weights, "data": info.data.name if args.data is None else args.data}
    else:
        result.extra["predictor"] = str(predictor_path)
    result.extra["supernet"] = str(args.supernet)
    if args.verify:
        from edgenas.search.verify import verify

        result.extra["verify"] = verify(supernet, info, result, args, precisions=precisions)
    result.save(args.out)
    result.plot(plot)
    print(result.summary())
    print(f"wrote {args.out} ({len(result.top)} best{f', {len(result.front)} on the front' if args.strategy == 'nsga2' else ''}) and {plot}")
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
