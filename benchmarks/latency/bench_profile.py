"""Cost of a full latency table, local vs over SSH to 127.0.0.1, measured in the same run.

    python benchmarks/latency/bench_profile.py [--space mbv3-w1.0] [--resolutions 160 176 192 208 224]
                                               [--rounds 1] [--validate 0] [--skip-ssh]

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

from edgenas.latency import profile_device, validate_table  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(profile, out: Path, args, keep=False) -> float:
    if not keep:
        out.unlink(missing_ok=True)
    t = time.perf_counter()
    report = profile_device(profile, args.space, resolutions=args.resolutions, out=out, calibrate=args.calibrate,
                            progress=not args.quiet)
    seconds = time.perf_counter() - t
    print(json.dumps({**report.to_dict(), "wall_s": round(seconds, 1), "load_after": load()}), flush=True)
    return seconds


def ssh_profile(server, local):
    """The local-cpu measurement settings (warmup, runs, rounds) through sshd."""
    from edgenas.device import load_profile

    lp = load_profile(local)
    return server.profile(workdir=tempfile.gettempdir(), warmup=lp.warmup, runs=lp.runs, rounds=lp.rounds,
                          ssh={"command_timeout": 600})


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
    args = ap.parse_args()
    out = ROOT / "benchmarks" / "latency" / "out"
    out.mkdir(parents=True, exist_ok=True)
    local = Path(args.profile)
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
                           plot=out / f"local-{args.space}.validation.png", progress=not args.quiet)
        print(f"validation: {v.summary()} (load after: {load()})")
        details = {"archs": [str(a) for a in v.archs], "predicted": v.predicted.tolist(), "measured": v.measured.tolist()}
        (out / f"local-{args.space}.validation.json").write_text(json.dumps(details))


if __name__ == "__main__":
    main()
