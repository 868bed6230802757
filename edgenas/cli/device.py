"""`edgenas device`: check a device profile, and measure model files on the device.

    edgenas device check device_profiles/raspberry-pi4.yaml [--json]
    edgenas device measure device_profiles/local-cpu.yaml model.onnx [more.onnx ...] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys

EXIT_OK, EXIT_MISSING = 0, 1


def add_parser(subparsers) -> None:
    from edgenas.cli import add_common
    from edgenas.cli import types as T

    p = subparsers.add_parser(
        "device",
        help="check a device profile and measure models on the device",
        description="Work with device profiles (see device_profiles/README.md).",
    )
    add_common(p)
    sub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    c = sub.add_parser(
        "check",
        help="connect and report CPU, Python, runtime, providers and what is missing",
        description="Connect to the device and report what it is and what it lacks. "
        "Exit status 1 if something the profile needs is missing.",
    )
    add_common(c)
    c.add_argument("profile", metavar="PROFILE", help="device profile YAML (or a name in device_profiles/)")
    c.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
    c.set_defaults(run=run)

    m = sub.add_parser(
        "measure",
        help="measure the latency of model files on the device",
        description="Upload model files to the device and measure them with the profile's runtime, "
        "threads, warm-up and runs. Exit status 1 if any model failed.",
    )
    add_common(m)
    m.add_argument("profile", metavar="PROFILE", help="device profile YAML (or a name in device_profiles/)")
    m.add_argument("models", metavar="MODEL", nargs="+", help="model files (.onnx or .tflite)")
    m.add_argument("--chunk-size", type=T.count(1, T.MAX_RUNS), default=None, help="models uploaded and measured at a time")
    m.add_argument("--json", action="store_true", help="one JSON object per model")
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.device_command == "check":
        return _check(args)
    return _measure(args)


def _check(args) -> int:
    from edgenas.device import device_fingerprint, load_profile

    profile = load_profile(args.profile)
    fp = device_fingerprint(profile)
    missing = [m for m in fp.get("missing", []) if m.get("required", True)]
    if args.json:
        print(json.dumps({**fp, "ok": not missing}, indent=2))
        return EXIT_MISSING if missing else EXIT_OK
    where = "this machine" if profile.transport == "local" else f"{profile.ssh.user}@{profile.ssh.host}:{profile.ssh.port}"
    rows = [("device", f"{profile.name} ({where})"), ("profile key", profile.key())]
    if fp.get("python") is not None:
        cores = fp.get("cores")
        usable = fp.get("usable_cores")
        cores_s = f"{cores}" + (f" ({usable} usable)" if usable and usable != cores else "")
        rows += [
            ("cpu", fp.get("cpu_model") or "unknown"),
            ("board", fp.get("board") or "-"),
            ("cores", cores_s),
            ("machine", fp.get("machine") or "unknown"),
            ("os", fp.get("os") or "unknown"),
            ("python", f"{fp['python']} ({fp.get('python_executable') or profile.python})"),
            ("numpy", fp.get("numpy") or "MISSING"),
        ]
        runtimes = fp.get("runtimes") or {}
        rows.append(("runtimes", ", ".join(f"{k} {v}" for k, v in runtimes.items()) or "none"))
        if profile.runtime == "onnxruntime":
            avail = fp.get("onnxruntime_providers") or []
            rows.append(("providers", ", ".join(avail) or "none"))
            rows.append(("requested", ", ".join(profile.runtime_options["providers"])))
        else:
            rows.append(("tflite", f"{fp.get('tflite_module') or 'MISSING'}, delegate {profile.runtime_options['delegate']}"))
        rows.append(("threads", f"{profile.threads} (warm-up {profile.warmup}, runs {profile.runs})"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if missing:
        print(f"\nmissing on {profile.name}:")
        for m in missing:
            print(f"  - {m['what']}: {m.get('hint', '')}")
        return EXIT_MISSING
    print(f"\nready: {profile.name} can measure {profile.runtime} models")
    return EXIT_OK


def _measure(args) -> int:
    from edgenas.device import load_profile, measure_models

    profile = load_profile(args.profile)
    failed = 0

    def show(r) -> None:
        nonlocal failed
        if args.json:
            print(json.dumps(r.to_dict()), flush=True)
        elif r.ok:
            print(f"{r.model}: median {r.median_ms:.3f} ms  (p10 {r.p10_ms:.3f}, p90 {r.p90_ms:.3f}, n={r.count})", flush=True)
        else:
            print(f"{r.model}: FAILED: {r.error}", flush=True)
        if not r.ok:
            failed += 1

    measure_models(profile, args.models, on_result=show, chunk_size=args.chunk_size)
    if failed:
        print(f"{failed} of {len(args.models)} model(s) failed", file=sys.stderr)
    return EXIT_MISSING if failed else EXIT_OK
