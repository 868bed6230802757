"""Cost of a full latency table, local vs over SSH to 127.0.0.1, measured in the same run.

    python benchmarks/latency/bench_profile.py [--space mbv3-w1.0] [--resolutions 160 176 192 208 224]
                                               [--rounds 1] [--validate 0] [--skip-ssh]
                                               [--runtime tflite] [--precision int8 --supernet CKPT]
                                               [--convert-only N [--workers 1 2]]

--runtime/--precision profile another configuration with local-cpu's measurement settings
(warmup, runs, rounds); int8 layers are calibrated on --supernet, a trained supernet of the space
and its training images (as `edgenas profile --supernet`), or without it on Fashion-MNIST images
through a seeded random supernet (bench_configs.py's source; no trained mbv3-w1.0 ships). --convert-only N times
only the writing of the first N layers of the table (for TFLite: litert-torch conversion of
N / LAYERS_PER_FILE files) once per number of conversion processes in --workers (default 1 2,
as EDGENAS_CONVERT_WORKERS sets it), prints wall and CPU seconds per layer (CPU: this process and
its workers), the extrapolation to the whole table and the wall-time ratio, and measures nothing.

Each round builds a fresh table on local-cpu, then the same table through a throwaway OpenSSH
server on 127.0.0.1 (tests/sshd.py: its own host key, user key and known_hosts), and reports
both wall times and their ratio. Tables go to benchmarks/latency/out/ (git-ignored). With
--validate N the local table is then validated on N random subnets.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgenas.latency import profile_device, validate_table  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(profile, out: Path, args, keep=False) -> float:
    if not keep:
        out.unlink(missing_ok=True)
    t = time.perf_counter()
    report = profile_device(profile, args.space, resolutions=args.resolutions, out=out, calibrate=args.calibrate,
                            progress=not args.quiet, activations=args.activations)
    seconds = time.perf_counter() - t
    print(json.dumps({**report.to_dict(), "wall_s": round(seconds, 1), "load_after": load()}), flush=True)
    return seconds


def ssh_profile(server, local):
    """The local-cpu measurement settings (warmup, runs, rounds) through sshd."""
    from edgenas.device import load_profile

    lp = local if not isinstance(local, (str, Path)) else load_profile(local)
    return server.profile(workdir=tempfile.gettempdir(), warmup=lp.warmup, runs=lp.runs, rounds=lp.rounds,
                          runtime=lp.runtime, precision=lp.precision, runtime_options=dict(lp.runtime_options),
                          ssh={"command_timeout": 600})


def configured(args):
    """local-cpu's settings with --runtime/--precision; the activations an int8 table needs."""
    from edgenas.device import DeviceProfile, load_profile

    base = load_profile(args.profile)
    if args.runtime == base.runtime and args.precision == base.precision:
        profile = base
    else:
        profile = DeviceProfile.from_dict({
            "name": base.name, "transport": "local", "runtime": args.runtime, "threads": base.threads,
            "warmup": base.warmup, "runs": base.runs, "rounds": base.rounds, "precision": args.precision})
    activations = None
    if args.precision == "int8" and args.supernet:
        from edgenas.cli.profile import _activations

        activations = _activations(argparse.Namespace(supernet=args.supernet, calib_images=args.calib_images,
                                                      seed=0), profile_space(args))
    elif args.precision == "int8":  # as bench_configs.py: real images through a seeded random supernet
        from bench_configs import activation_source, calibration_images

        activations = activation_source(args.space, calibration_images(args.calib_images))
    return profile, activations


def profile_space(args):
    from edgenas.space import load_space

    return load_space(args.space)


def convert_only(profile, args) -> None:
    """Time writing the first N layers of the table as the profiler writes them, with each number
    of conversion processes of --workers (EDGENAS_CONVERT_WORKERS); extrapolate."""
    from edgenas.latency.formats import model_format
    from edgenas.latency.ops import enumerate_ops

    space = profile_space(args)
    ops = enumerate_ops(space, args.resolutions)
    chunk = ops[:: max(1, len(ops) // args.convert_only)][:args.convert_only]  # spread over the resolutions
    fmt = model_format(profile.runtime, profile.precision, args.activations)
    walls = {}
    for workers in args.workers:
        os.environ["EDGENAS_CONVERT_WORKERS"] = str(workers)
        with tempfile.TemporaryDirectory() as d:
            cpu0, t = _cpu(), time.perf_counter()
            if hasattr(fmt, "write_ops"):
                fmt.write_ops(chunk, Path(d))
            else:
                for i, op in enumerate(chunk):
                    fmt.write_op(op, Path(d) / f"op{i}{fmt.suffix}")
            seconds, cpu = time.perf_counter() - t, _cpu() - cpu0
        walls[workers] = seconds
        per = seconds / len(chunk)
        print(json.dumps({"format": fmt.name, "workers": workers, "layers": len(chunk), "seconds": round(seconds, 1),
                          "seconds_per_layer": round(per, 3), "cpu_s_per_layer": round(cpu / len(chunk), 3),
                          "table_layers": len(ops), "extrapolated_table_writing_s": round(per * len(ops), 1),
                          "load_after": load()}), flush=True)
    for workers in args.workers[1:]:
        print(f"wall {args.workers[0]} / {workers} workers = {walls[args.workers[0]] / walls[workers]:.2f}", flush=True)


def _cpu() -> float:
    """CPU seconds of this process and of its ended children (the conversion workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[160, 176, 192, 208, 224])
    ap.add_argument("--calibrate", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--validate", type=int, default=0)
    ap.add_argument("--skip-ssh", action="store_true")
    ap.add_argument("--ssh-first", action="store_true", help="run the SSH table before the local one in each round")
    ap.add_argument("--keep", action="store_true", help="keep (resume) the local table instead of rebuilding it")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--profile", default=str(ROOT / "device_profiles" / "local-cpu.yaml"),
                    help="the local profile (its warmup, runs and rounds are used over SSH too)")
    ap.add_argument("--runtime", choices=["onnxruntime", "tflite"], default="onnxruntime")
    ap.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    ap.add_argument("--supernet", help="int8: a trained supernet checkpoint of the space (default: Fashion-MNIST "
                                       "images through a seeded random supernet, as bench_configs.py)")
    ap.add_argument("--calib-images", type=int, default=32, help="int8: training images per layer's calibration")
    ap.add_argument("--convert-only", type=int, metavar="N", help="only time writing N layers (see the docstring)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="K",
                    help="--convert-only: conversion processes to time, in turn (EDGENAS_CONVERT_WORKERS)")
    args = ap.parse_args()
    profile, args.activations = configured(args)
    if args.convert_only:
        return convert_only(profile, args)
    out = ROOT / "benchmarks" / "latency" / "out"
    out.mkdir(parents=True, exist_ok=True)
    local = profile
    print(f"load before: {load()}", flush=True)
    server = None
    if not args.skip_ssh:
        from sshd import SSHServer, find_sshd

        server = SSHServer(Path(tempfile.mkdtemp(prefix="bench-sshd-")), find_sshd()).start()
    try:
        for r in range(args.rounds):
            t_ssh = None
            if server is not None and args.ssh_first:
                t_ssh = run(ssh_profile(server, local), out / f"ssh-{args.space}.yaml", args)
            t_local = run(local, out / f"local-{args.space}.yaml", args, keep=args.keep)
            if server is not None and not args.ssh_first:
                t_ssh = run(ssh_profile(server, local), out / f"ssh-{args.space}.yaml", args)
            if t_ssh is not None:
                print(f"round {r + 1}: local {t_local:.1f} s, ssh {t_ssh:.1f} s, ssh/local = {t_ssh / t_local:.3f}", flush=True)
            else:
                print(f"round {r + 1}: local {t_local:.1f} s", flush=True)
    finally:
        if server is not None:
            server.stop()
    if args.validate:
        v = validate_table(out / f"local-{args.space}.yaml", local, args.validate,
                           plot=out / f"local-{args.space}.validation.png", progress=not args.quiet,
                           activations=args.activations)
        print(f"validation: {v.summary()} (load after: {load()})")
        details = {"archs": [str(a) for a in v.archs], "predicted": v.predicted.tolist(), "measured": v.measured.tolist()}
        (out / f"local-{args.space}.validation.json").write_text(json.dumps(details))


if __name__ == "__main__":
    main()
