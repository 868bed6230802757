#!/usr/bin/env python3
"""edgenas device agent: measure the latency of model files on the device it runs on.

This file is copied to the device and run there with the device's Python. It is
self-contained: it needs only the standard library, numpy and the runtime being measured
(onnxruntime, or ai_edge_litert / tflite_runtime for TFLite). It never imports edgenas, and it
stays compatible with Python 3.7 so it runs on older device images.

Usage:
    python3 agent.py --fingerprint [--runtime onnxruntime --providers CPUExecutionProvider]
    python3 agent.py --runtime onnxruntime --threads 1 --warmup 10 --runs 50 [--rounds 1] a.onnx b.onnx
    python3 agent.py --job job.json

A job file is JSON: {"runtime", "threads", "warmup", "runs", "rounds", "providers" | "delegate",
"delegate_library", "interpreter", "models": [{"name": ..., "path": ..., "signature": ...}, ...]}.

"signature" (TFLite only, optional) names one signature of a file that holds many (one subgraph
per signature, e.g. the layers of a latency table written by edgenas.export.tflite_layers): that
subgraph alone is timed. Entries naming signatures of one file share one interpreter (loaded,
delegated and allocated once); each signature's input is set once and each timed call is one
invoke of its subgraph, as a file of its own is timed with one invoke of its only subgraph.
Entries without a signature are timed as before (the file's primary subgraph).

Output protocol (stdout, one JSON object per line, flushed as soon as it is known):
    {"event": "ready", ...}                once the runtime is imported
    {"event": "begin", "index": i, "model": name}   before measuring model i
    {"index": i, "model": name, "median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "count", ...}
    {"index": i, "model": name, "error": "..."}     a model that failed (the batch goes on)
    {"event": "done", "count": n}
    {"fatal": "..."}                        setup failed (exit status 3), e.g. runtime missing
Anything the runtime libraries print to stdout is sent to stderr instead, so stdout carries
only these lines.

CPU counters: on Linux (/proc/stat) each result also carries "cpu": {"job", "ticks", "idle",
"steal", "own"}, clock ticks summed over every CPU from the job's start (the "ready" event) to that
result: all of them, idle (with iowait), stolen by a VM's host, and used by this process
(os.times). "job" names the agent run; its latest result holds its totals. The kernel counts at
its 10 ms tick: over one tiny model's timed runs (a few ms) the counts came out at about half the
ticks expected in a test on a 2-core VM, while over a job's span they add up. They say what share
of the device the host took away (steal) and other processes used meanwhile.

Timing: for each model the inputs are built once (random values of the model's input shapes
and dtypes, with dynamic dimensions set to 1), then `warmup` untimed runs, then `runs` timed
runs, each timed alone with time.perf_counter; the garbage collector is off while timing.
std_ms is the population standard deviation; p10/p90 are linear-interpolated percentiles.

Rounds (for shared or noisy machines): with `rounds` R > 1 every model of the job is loaded and
warmed up first, then the timed runs are split into R rounds of runs/R and the rounds are
interleaved across the models (round 1 of every model, then round 2, ...), so each model's rounds
are spread over the whole job rather than a fraction of a second. median_ms is then the lowest of
the R round medians ("statistic" and "round_medians_ms" say so): a slow spell of the machine (load
from other processes, a host that slows the core for seconds) has to cover every round to move it.
mean, std and percentiles still cover all the runs. Results then come at the end of the job, and
a "begin" event precedes each model's turn in each round. With R = 1 (the default) each model is
measured in turn, median_ms is the plain median of its timed runs, and its result is printed
before the next model is loaded.
"""
import argparse
import gc
import json
import os
import platform
import sys
import time

AGENT_VERSION = 4  # 3: model entries may name a TFLite signature; 4: results carry "cpu" counters
ROUND_PAUSE_S = 0.01  # between measurement rounds

ORT_HINT = "pip install onnxruntime"
ORT_GPU_HINT = (
    "pip install onnxruntime-gpu (on Jetson: install NVIDIA's onnxruntime-gpu wheel for your JetPack)"
)
TFLITE_HINT = "pip install ai-edge-litert (older systems: pip install tflite-runtime)"
NUMPY_HINT = "pip install numpy (Termux: pkg install python-numpy)"

_OUT = sys.stdout  # replaced in main() by a private copy of the real stdout


def emit(obj):
    _OUT.write(json.dumps(obj) + "\n")
    _OUT.flush()


# ---------------------------------------------------------------------------------------------
# fingerprint


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cpu_model():
    text = _read("/proc/cpuinfo") or ""
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            k, v = k.strip().lower(), v.strip()
            if v and k not in fields:
                fields[k] = v
    for key in ("model name", "cpu model", "hardware", "processor", "model"):
        v = fields.get(key)
        if v and not v.isdigit():
            return v
    if fields.get("cpu part"):  # ARM without a model name: report implementer/part ids
        return "ARM implementer %s part %s" % (fields.get("cpu implementer", "?"), fields["cpu part"])
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], stdout=subprocess.PIPE, timeout=5
            ).stdout.decode().strip()
            if out:
                return out
        except Exception:
            pass
    return platform.processor() or platform.machine() or "unknown"


def _board():
    model = _read("/proc/device-tree/model")  # Raspberry Pi, Jetson, most ARM boards
    if model:
        return model
    import shutil
    import subprocess

    if shutil.which("getprop"):  # Android
        try:
            out = subprocess.run(
                ["getprop", "ro.product.model"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5
            ).stdout.decode().strip()
            return out or None
        except Exception:
            return None
    return None


def _import_tflite(prefer):
    """Return (module_name, module_for_version, interpreter_module) or raise ImportError."""
    import importlib

    order = ["ai_edge_litert", "tflite_runtime"] if prefer in (None, "auto") else [prefer]
    errors = []
    for name in order:
        try:
            interp = importlib.import_module(name + ".interpreter")
            top = importlib.import_module(name)
            return name, top, interp
        except ImportError as exc:
            errors.append("%s: %s" % (name, exc))
    raise ImportError("no TFLite interpreter module found (" + "; ".join(errors) + ")")


def fingerprint(runtime=None, providers=None, interpreter="auto"):
    """What this device is and what it has; `missing` lists what the requested runtime lacks."""
    info = {
        "agent_version": AGENT_VERSION,
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "board": _board(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "system": platform.system(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "numpy": None,
        "runtime": runtime,
        "runtimes": {},
        "onnxruntime_providers": [],
        "missing": [],
    }
    if hasattr(os, "sched_getaffinity"):
        try:
            info["usable_cores"] = len(os.sched_getaffinity(0))
        except OSError:
            pass
    missing = info["missing"]
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        missing.append({"what": "numpy", "required": True, "hint": NUMPY_HINT})

    try:
        import onnxruntime

        info["runtimes"]["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        if runtime == "onnxruntime":
            hint = ORT_GPU_HINT if any(p != "CPUExecutionProvider" for p in providers or []) else ORT_HINT
            missing.append({"what": "onnxruntime", "required": True, "hint": hint})
    except Exception as exc:  # a broken install
        if runtime == "onnxruntime":
            missing.append({"what": "onnxruntime", "required": True,
                            "hint": "onnxruntime fails to import (%s); reinstall: %s" % (exc, ORT_HINT)})
    if runtime == "onnxruntime" and "onnxruntime" in info["runtimes"]:
        for p in providers or []:
            if p not in info["onnxruntime_providers"]:
                missing.append({
                    "what": p,
                    "required": True,
                    "hint": "this onnxruntime build lacks %s; %s" % (p, ORT_GPU_HINT),
                })

    try:
        name, top, _ = _import_tflite(interpreter if runtime == "tflite" else "auto")
        info["runtimes"][name] = getattr(top, "__version__", "unknown")
        info["tflite_module"] = name
    except ImportError:
        if runtime == "tflite":
            hint = TFLITE_HINT if interpreter in (None, "auto") else "pip install " + interpreter.replace("_", "-")
            missing.append({"what": "tflite interpreter", "required": True, "hint": hint})
    except Exception as exc:
        if runtime == "tflite":
            missing.append({"what": "tflite interpreter", "required": True,
                            "hint": "the TFLite module fails to import (%s); reinstall: %s" % (exc, TFLITE_HINT)})
    if runtime == "onnxruntime":
        info["runtime_version"] = info["runtimes"].get("onnxruntime")
    elif runtime == "tflite":
        info["runtime_version"] = info["runtimes"].get(info.get("tflite_module", ""))
    return info


# ---------------------------------------------------------------------------------------------
# inputs


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def random_array(np, rng, shape, dtype):
    """Random values of a dtype: normal floats, full-range int8/uint8, small non-negative ints."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu" and dtype.itemsize == 1:  # quantized tensors: use the whole range
        info = np.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max) + 1, size=shape, dtype=dtype)
    if dtype.kind in "iu":  # indices, token ids: keep small and valid
        return rng.integers(0, 8, size=shape).astype(dtype)
    raise ValueError("unsupported input dtype %s" % dtype)


class _LegacyRng(object):
    """The two Generator methods we use, for numpy older than 1.17 (old device images)."""

    def __init__(self, np):
        self._rs = np.random.RandomState(0)

    def standard_normal(self, shape):
        return self._rs.standard_normal(shape)

    def integers(self, low, high, size=None, dtype="int64"):
        return self._rs.randint(low, high, size=size, dtype=dtype)


def make_rng(np):
    """A seeded generator, so every model gets the same inputs on every device."""
    if hasattr(np.random, "default_rng"):
        return np.random.default_rng(0)
    return _LegacyRng(np)


def _static_shape(shape):
    """Dynamic dimensions (None, names, -1) become 1."""
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


# ---------------------------------------------------------------------------------------------
# runners: each returns (run_once: callable, info: dict)


def ort_runner(np, rng, ort, path, opts):
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(opts["threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not opts.get("spinning", True):
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    requested = list(opts.get("providers") or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    absent = [p for p in requested if p not in available]
    if absent:
        raise RuntimeError(
            "provider(s) %s not available in this onnxruntime (available: %s)"
            % (", ".join(absent), ", ".join(available))
        )
    sess = ort.InferenceSession(path, sess_options=so, providers=requested)
    used = sess.get_providers()
    if requested[0] not in used:  # onnxruntime silently falls back to CPU when a provider fails
        raise RuntimeError("provider %s failed to load; session uses %s" % (requested[0], ", ".join(used)))
    feeds = {}
    for inp in sess.get_inputs():
        dtype = _ORT_TYPES.get(inp.type)
        if dtype is None:
            raise ValueError("input %r has unsupported type %s" % (inp.name, inp.type))
        feeds[inp.name] = random_array(np, rng, _static_shape(inp.shape), dtype)

    def run_once():
        sess.run(None, feeds)

    return run_once, {"providers": used, "spinning": bool(opts.get("spinning", True))}


def _tflite_interpreter(interp_mod, path, opts):
    kwargs = {"model_path": path, "num_threads": int(opts["threads"])}
    delegate = opts.get("delegate", "xnnpack")
    if delegate == "none":
        resolver = getattr(interp_mod, "OpResolverType", None)
        if resolver is None:
            raise RuntimeError("this TFLite interpreter cannot disable the default XNNPACK delegate")
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate == "gpu":
        lib = opts.get("delegate_library") or "libtensorflowlite_gpu_delegate.so"
        kwargs["experimental_delegates"] = [interp_mod.load_delegate(lib)]
    return interp_mod.Interpreter(**kwargs)


def tflite_runner(np, rng, interp_mod, path, opts, signature=None, shared=None):
    """Time the file's primary subgraph, or with `signature` that signature's subgraph alone;
    `shared` ({path: interpreter}) lets the signatures of one file share its interpreter."""
    delegate = opts.get("delegate", "xnnpack")
    if signature is not None:
        return _signature_runner(np, rng, interp_mod, path, opts, signature, shared), {
            "delegate": delegate, "signature": signature}
    interp = _tflite_interpreter(interp_mod, path, opts)
    for det in interp.get_input_details():  # dynamic dims (-1 in the signature) become 1
        sig = det.get("shape_signature")
        if sig is not None and any(int(d) < 0 for d in sig):
            interp.resize_tensor_input(det["index"], _static_shape([int(d) for d in sig]))
    interp.allocate_tensors()
    for det in interp.get_input_details():
        interp.set_tensor(det["index"], random_array(np, rng, det["shape"], det["dtype"]))

    def run_once():
        interp.invoke()

    return run_once, {"delegate": delegate}


def _signature_runner(np, rng, interp_mod, path, opts, signature, shared):
    interp = shared.get(path) if shared is not None else None
    if interp is None:
        interp = _tflite_interpreter(interp_mod, path, opts)
        interp.allocate_tensors()  # applies the default delegate (XNNPACK) to every subgraph
        if shared is not None:
            shared[path] = interp
    if not hasattr(interp, "get_signature_runner"):
        raise RuntimeError("this TFLite interpreter cannot run signatures (needed for signature %r); %s"
                           % (signature, TFLITE_HINT))
    runner = interp.get_signature_runner(signature)  # ValueError naming it if the file lacks it
    wrapper = getattr(runner, "_interpreter_wrapper", None)
    index = getattr(runner, "_subgraph_index", None)
    if wrapper is None or index is None:
        raise RuntimeError("this TFLite interpreter's signature runner cannot invoke one subgraph alone; %s"
                           % TFLITE_HINT)
    details = list(runner.get_input_details().values())
    for det in details:  # dynamic dims (-1 in the signature) become 1
        sig = det.get("shape_signature")
        if sig is not None and any(int(d) < 0 for d in sig):
            shape = _static_shape([int(d) for d in sig])
            wrapper.ResizeInputTensor(det["index"], np.array(shape, dtype=np.int32), False, index)
    wrapper.AllocateTensors(index)
    for det in runner.get_input_details().values():
        wrapper.SetTensor(det["index"], random_array(np, rng, det["shape"], det["dtype"]), index)

    def run_once():
        wrapper.Invoke(index)

    return run_once


# ---------------------------------------------------------------------------------------------
# measuring


def stats_ms(np, times_s):
    a = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std()),
        "p10_ms": float(np.percentile(a, 10)),
        "p90_ms": float(np.percentile(a, 90)),
        "count": int(a.size),
    }


def split_runs(runs, rounds):
    """How many timed runs each round gets: `runs` spread over at most `runs` rounds."""
    rounds = max(1, min(int(rounds), int(runs)))
    return [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]


def cpu_counters():
    """[ticks of every CPU, idle + iowait, steal, this process's user + system] now, from
    /proc/stat and os.times; None where they cannot be read (not Linux, or a sandbox)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        hz = os.sysconf("SC_CLK_TCK")
        t = os.times()
    except (OSError, ValueError, AttributeError):
        return None
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    try:
        v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    except ValueError:
        return None
    return [sum(v), v[3] + v[4], v[7] if len(v) > 7 else 0, (t[0] + t[1]) * hz]


class JobCounters(object):
    """The counters' change since the job started, for each result."""

    def __init__(self):
        self.job = "%d-%d" % (os.getpid(), int(time.time() * 1e6))
        self.start = cpu_counters()

    def since_start(self):
        """{"cpu": {...}} to merge into a result, or {} without counters."""
        now = cpu_counters()
        if self.start is None or now is None:
            return {}
        cpu = dict(zip(("ticks", "idle", "steal", "own"), [round(b - a, 2) for a, b in zip(self.start, now)]))
        cpu["job"] = self.job
        return {"cpu": cpu}


def time_runs(run_once, warmup, runs):
    """`warmup` untimed calls, then the times of `runs` timed ones in seconds, as one round."""
    for _ in range(warmup):
        run_once()
    return [timed(run_once, runs)]


def timed(run_once, n):
    """n timed calls of run_once, in seconds, with the garbage collector off."""
    chunk = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            run_once()
            chunk.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return chunk


def round_stats_ms(np, rounds_s):
    """stats_ms over all runs; with several rounds median_ms is the lowest round median."""
    result = stats_ms(np, [t for chunk in rounds_s for t in chunk])
    if len(rounds_s) > 1:
        medians = [float(np.median(np.asarray(chunk, dtype=np.float64))) * 1e3 for chunk in rounds_s]
        result["median_ms"] = min(medians)
        result["round_medians_ms"] = medians
        result["statistic"] = "lowest of %d round medians" % len(medians)
    return result


def measure(opts, models):
    try:
        import numpy as np
    except ImportError as exc:
        emit({"fatal": "numpy is missing on the device (%s); %s" % (exc, NUMPY_HINT)})
        return 3
    runtime = opts["runtime"]
    try:
        if runtime == "onnxruntime":
            import onnxruntime as rt_mod

            make = ort_runner
            version = rt_mod.__version__
            module_name = "onnxruntime"
        elif runtime == "tflite":
            module_name, top, rt_mod = _import_tflite(opts.get("interpreter", "auto"))
            make = tflite_runner
            version = getattr(top, "__version__", "unknown")
        else:
            emit({"fatal": "unknown runtime %r (use onnxruntime or tflite)" % runtime})
            return 3
    except ImportError as exc:
        hint = ORT_HINT if runtime == "onnxruntime" else TFLITE_HINT
        emit({"fatal": "%s runtime is missing on the device (%s); %s" % (runtime, exc, hint)})
        return 3
    if runtime == "onnxruntime":
        try:
            rt_mod.set_default_logger_severity(3)
        except Exception:
            pass
    emit({"event": "ready", "runtime": module_name, "version": version, "models": len(models)})
    rng = make_rng(np)
    counters = JobCounters()
    warmup, runs = int(opts.get("warmup", 10)), int(opts.get("runs", 50))
    rounds = int(opts.get("rounds", 1))
    if rounds > 1 and runs > 1:
        measure_interleaved(np, rng, rt_mod, make, opts, models, warmup, runs, rounds, counters)
    else:
        shared = {}  # the interpreter of the file whose signatures are being timed
        for i, m in enumerate(models):
            name = m.get("name") or os.path.basename(m["path"])
            emit({"event": "begin", "index": i, "model": name})
            if m["path"] not in shared:
                shared.clear()
            try:
                run_once, extra = load(make, np, rng, rt_mod, m, opts, shared)
                result = {"index": i, "model": name}
                result.update(round_stats_ms(np, time_runs(run_once, warmup, runs)))
                result.update(extra)
                result.update(counters.since_start())
                del run_once
            except Exception as exc:
                result = failure(i, name, exc)
            emit(result)
    emit({"event": "done", "count": len(models)})
    return 0


def load(make, np, rng, rt_mod, model, opts, shared):
    """(run_once, info) for one model entry of the job."""
    signature = model.get("signature")
    if signature is None:
        return make(np, rng, rt_mod, model["path"], opts)
    if make is not tflite_runner:
        raise ValueError("only TFLite files have signatures (entry names signature %r)" % signature)
    return make(np, rng, rt_mod, model["path"], opts, signature=str(signature), shared=shared)


def failure(i, name, exc):
    msg = ("%s: %s" % (type(exc).__name__, exc)).strip()
    return {"index": i, "model": name, "error": msg[:2000]}


def measure_interleaved(np, rng, rt_mod, make, opts, models, warmup, runs, rounds, counters):
    """Load and warm up every model, then time them in interleaved rounds (see the docstring)."""
    names = [m.get("name") or os.path.basename(m["path"]) for m in models]
    results, live = {}, {}  # index -> failure result; index -> [run_once, info, rounds of times]
    shared = {}  # path -> the interpreter its signatures share
    for i, m in enumerate(models):
        emit({"event": "begin", "index": i, "model": names[i]})
        try:
            run_once, extra = load(make, np, rng, rt_mod, m, opts, shared)
            for _ in range(warmup):
                run_once()
            live[i] = [run_once, extra, []]
        except Exception as exc:
            results[i] = failure(i, names[i], exc)
    for r, n in enumerate(split_runs(runs, rounds)):
        if r:
            time.sleep(ROUND_PAUSE_S)
        for i in sorted(live):
            emit({"event": "begin", "index": i, "model": names[i], "round": r})
            try:
                live[i][2].append(timed(live[i][0], n))
            except Exception as exc:
                results[i] = failure(i, names[i], exc)
                del live[i]
    cpu = counters.since_start()  # the job's span: every round of every model
    for i, (_, extra, times) in live.items():
        results[i] = {"index": i, "model": names[i]}
        results[i].update(round_stats_ms(np, times))
        results[i].update(extra)
        results[i].update(cpu)
    live.clear()
    shared.clear()
    for i in sorted(results):
        emit(results[i])


def parse_args(argv):
    p = argparse.ArgumentParser(prog="agent.py", description="Measure model latency on this device.")
    p.add_argument("--fingerprint", action="store_true", help="print the device fingerprint as JSON")
    p.add_argument("--job", help="JSON job file (settings and models); overrides the options below")
    p.add_argument("--runtime", choices=["onnxruntime", "tflite"], default="onnxruntime")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1, help="split the runs into rounds; report the lowest round median")
    p.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated onnxruntime providers")
    p.add_argument("--delegate", choices=["xnnpack", "gpu", "none"], default="xnnpack")
    p.add_argument("--delegate-library", default="libtensorflowlite_gpu_delegate.so")
    p.add_argument("--interpreter", choices=["auto", "ai_edge_litert", "tflite_runtime"], default="auto")
    p.add_argument("models", nargs="*", help="model files")
    return p.parse_args(argv)


def main(argv=None):
    global _OUT
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Keep the real stdout for our JSON lines and send everything else written to fd 1 (native
    # runtime logs, stray prints) to stderr, so the protocol stream stays clean.
    try:
        sys.stdout.flush()
        _OUT = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    except (OSError, ValueError, AttributeError):
        _OUT = sys.stdout
    opts = {
        "runtime": args.runtime,
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "rounds": args.rounds,
        "providers": [p for p in args.providers.split(",") if p],
        "delegate": args.delegate,
        "delegate_library": args.delegate_library,
        "interpreter": args.interpreter,
    }
    models = [{"name": os.path.basename(p), "path": p} for p in args.models]
    if args.job:
        with open(args.job) as f:
            job = json.load(f)
        opts.update({k: v for k, v in job.items() if k != "models"})
        models = list(job.get("models", [])) or models
    if args.fingerprint:
        emit(fingerprint(opts["runtime"], opts.get("providers"), opts.get("interpreter", "auto")))
        return 0
    if opts["threads"] < 1 or opts["runs"] < 1 or opts["warmup"] < 0 or int(opts.get("rounds", 1)) < 1:
        emit({"fatal": "threads, runs and rounds must be at least 1 and warmup at least 0"})
        return 3
    return measure(opts, models)


if __name__ == "__main__":
    sys.exit(main())
