"""The device agent, the local transport, the runner and `edgenas device` on this machine."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from edgenas.cli import main as cli_main  # noqa: E402
from edgenas.device import (  # noqa: E402
    AGENT_PATH,
    CommandError,
    CpuLoad,
    LocalTransport,
    MeasureResult,
    device_fingerprint,
    load_profile,
    measure_models,
    open_transport,
)
from edgenas.errors import DeviceError, EdgeNASError, MissingDependencyError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOCAL_CPU = REPO / "device_profiles" / "local-cpu.yaml"


# ------------------------------------------------------------------------------- tiny models


def _save(graph, path: Path, doc: str = "") -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_models(d: Path) -> dict[str, Path]:
    """Small ONNX models: float, dynamic batch, int8 and uint8 inputs, and a corrupt file."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 16], [0.01 * i for i in range(256)])
    out["matmul"] = _save(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], initializer=[w],
    ), d / "matmul.onnx")
    out["dynamic"] = _save(helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    ), d / "dynamic.onnx")
    for name, tp in (("int8", TensorProto.INT8), ("uint8", TensorProto.UINT8)):
        out[name] = _save(helper.make_graph(
            [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Abs", ["f"], ["y"])], name,
            [helper.make_tensor_value_info("x", tp, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        ), d / f"{name}.onnx")
    broken = d / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    out["broken"] = broken
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def profile(tmp_path):
    """local-cpu, measured quickly, with its temp dirs under a directory the test can inspect."""
    work = tmp_path / "work"
    work.mkdir()
    return dataclasses.replace(load_profile(LOCAL_CPU), warmup=1, runs=5, workdir=str(work))


def agent(*args, **kw):
    return subprocess.run([sys.executable, str(AGENT_PATH), *map(str, args)],
                          capture_output=True, text=True, timeout=120, **kw)


def lines(stdout: str) -> list[dict]:
    return [json.loads(s) for s in stdout.splitlines() if s.strip()]


def results_of(stdout: str) -> list[dict]:
    return [m for m in lines(stdout) if "model" in m and "event" not in m]


# ------------------------------------------------------------------------------- the agent

STDLIB_OK = {"argparse", "gc", "json", "os", "platform", "sys", "time", "importlib", "shutil", "subprocess"}
RUNTIMES = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"}


def test_agent_is_self_contained_and_runs_on_old_pythons():
    src = AGENT_PATH.read_text()
    tree = ast.parse(src, feature_version=(3, 7))  # device images often ship an old Python
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module != "__future__"
            imported.add(node.module.split(".")[0])
    assert "edgenas" not in imported
    assert imported <= STDLIB_OK | RUNTIMES, imported - STDLIB_OK - RUNTIMES


def test_agent_measures_each_model_and_a_failure_is_data(models):
    order = ["matmul", "broken", "dynamic", "int8", "uint8"]
    p = agent("--runtime", "onnxruntime", "--threads", 1, "--warmup", 2, "--runs", 7,
              "--providers", "CPUExecutionProvider", *[models[k] for k in order])
    assert p.returncode == 0, p.stderr
    res = results_of(p.stdout)
    assert [r["model"] for r in res] == [models[k].name for k in order]
    for r in res:
        if r["model"] == "broken.onnx":
            assert "error" in r and r["error"]
            continue
        assert "error" not in r, r
        assert r["count"] == 7
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["mean_ms"] > 0 and r["std_ms"] >= 0
        assert r["providers"] == ["CPUExecutionProvider"]
    events = [m.get("event") for m in lines(p.stdout)]
    assert events[0] == "ready" and events[-1] == "done"


def test_agent_rounds_report_the_lowest_round_median(models):
    p = agent("--runtime", "onnxruntime", "--warmup", 1, "--runs", 10, "--rounds", 3, models["matmul"])
    assert p.returncode == 0, p.stderr
    (r,) = results_of(p.stdout)
    assert r["count"] == 10 and len(r["round_medians_ms"]) == 3
    assert r["median_ms"] == min(r["round_medians_ms"]) and r["statistic"] == "lowest of 3 round medians"


def test_agent_rounds_interleave_the_models_and_keep_failures_as_data(models):
    order = ["matmul", "broken", "int8"]
    p = agent("--runtime", "onnxruntime", "--warmup", 1, "--runs", 6, "--rounds", 3, *[models[k] for k in order])
    assert p.returncode == 0, p.stderr
    res = results_of(p.stdout)
    assert [r["model"] for r in res] == [models[k].name for k in order]
    assert "error" in res[1] and all(len(res[i]["round_medians_ms"]) == 3 for i in (0, 2))
    turns = [(m["index"], m.get("round")) for m in lines(p.stdout) if m.get("event") == "begin"]
    loads, timed = turns[:3], turns[3:]  # every model is loaded first, then timed round by round
    assert loads == [(0, None), (1, None), (2, None)]
    assert timed == [(0, 0), (2, 0), (0, 1), (2, 1), (0, 2), (2, 2)]


def test_round_stats_reject_a_disturbed_round():
    import numpy as np

    mod = _agent_module()
    quiet, noisy = [0.001] * 5, [0.004] * 5  # seconds: one round slowed down 4x by another process
    split = mod.round_stats_ms(np, [noisy, quiet, noisy])
    assert split["median_ms"] == pytest.approx(1.0) and split["count"] == 15
    plain = mod.round_stats_ms(np, [noisy + quiet + noisy])
    assert plain["median_ms"] == pytest.approx(4.0) and "round_medians_ms" not in plain
    assert mod.split_runs(10, 3) == [4, 3, 3] and mod.split_runs(2, 5) == [1, 1]
    assert [len(c) for c in mod.time_runs(lambda: None, 2, 10)] == [10]


def _agent_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgenas_agent_under_test", AGENT_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="the CPU counters are Linux's /proc/stat")
@pytest.mark.parametrize("rounds", [1, 3])
def test_agent_counts_what_else_the_cpus_did_while_timing(models, busy_cpus, rounds):
    """With every CPU given a spinning process to share, the counters the results carry say that
    other processes used a large share of the CPU time while the agent ran."""
    busy_cpus(os.cpu_count() or 1)
    time.sleep(0.5)  # the spinners are running
    p = agent("--runtime", "onnxruntime", "--warmup", 10, "--runs", 300, "--rounds", rounds,
              *[models["matmul"], models["dynamic"]] * 20)
    assert p.returncode == 0, p.stderr
    res = results_of(p.stdout)
    for r in res:
        cpu = r["cpu"]
        assert set(cpu) == {"job", "ticks", "idle", "steal", "own"} and cpu["ticks"] > 0
        assert 0 <= cpu["idle"] <= cpu["ticks"] and 0 <= cpu["steal"] <= cpu["ticks"] and cpu["own"] >= 0
    assert len({r["cpu"]["job"] for r in res}) == 1 and res[-1]["cpu"]["ticks"] >= res[0]["cpu"]["ticks"]
    load = CpuLoad.of([MeasureResult(model=r["model"], info={"cpu": r["cpu"]}) for r in res])
    # fair shares: the spinners get about n/(n+1) of the CPUs; 0.3 leaves room for the scheduler
    assert load.other > 0.3 and load.notable and "other processes used" in load.describe(), load


_STEP = st.tuples(*[st.integers(0, 10**5)] * 4)  # idle, steal, own, other busy ticks of one result's span
_JOBS = st.lists(st.lists(_STEP, min_size=1, max_size=5), min_size=1, max_size=4)


def _job_results(jobs, prefix):
    """Results as agents report them: each result's counters run from its job's start."""
    out = []
    for j, steps in enumerate(jobs):
        total = [0, 0, 0, 0]
        for step in steps:
            total = [t + x for t, x in zip(total, step)]
            idle, steal, own, busy = total
            out.append(MeasureResult(model="m", info={"cpu": {"job": f"{prefix}{j}", "ticks": idle + steal + own + busy,
                                                              "idle": idle, "steal": steal, "own": own}}))
    return out


@settings(max_examples=200, deadline=None)
@given(_JOBS, _JOBS, st.randoms(use_true_random=False))
def test_cpu_load_counts_each_agent_run_once_and_merges_like_its_counters(a, b, rnd):
    """A job counts once, by its latest counters (in any order of its results); loads merged by
    their CPU seconds are the load of both sets of jobs together; shares lie in [0, 1]."""
    ra, rb = _job_results(a, "a"), _job_results(b, "b")
    both = ra + rb
    rnd.shuffle(both)
    la, lb, lboth = CpuLoad.of(ra), CpuLoad.of(rb), CpuLoad.of(both)
    totals = [sum(map(sum, zip(*steps))) for steps in a + b]  # every job's ticks at its end
    if lboth is None:
        assert sum(totals) == 0
        return
    assert lboth.seconds == pytest.approx(sum(totals) / 100)
    if la is not None and lb is not None:
        merged = la.merged(lb)
        assert merged.steal == pytest.approx(lboth.steal, abs=1e-9) and merged.other == pytest.approx(lboth.other, abs=1e-9)
    assert 0 <= lboth.steal <= 1 and 0 <= lboth.other <= 1 and lboth.steal + lboth.other <= 1 + 1e-12
    assert CpuLoad.from_dict(lboth.to_dict()).steal == pytest.approx(lboth.steal, abs=1e-4)


def test_agent_job_file(models, tmp_path):
    # The job header as the runner writes it (DeviceProfile.agent_options), then the models.
    from edgenas.device import load_profile

    options = dataclasses.replace(load_profile(LOCAL_CPU), threads=2, warmup=0, runs=3, rounds=1).agent_options()
    job = tmp_path / "job.json"
    job.write_text(json.dumps({**options, "models": [{"name": "first", "path": str(models["matmul"])},
                                                     {"name": "second", "path": str(models["int8"])}]}))
    p = agent("--job", job)
    assert p.returncode == 0, p.stderr
    res = results_of(p.stdout)
    assert [(r["index"], r["model"], r["count"]) for r in res] == [(0, "first", 3), (1, "second", 3)]


def test_agent_prints_each_result_before_the_next_model(models, tmp_path):
    """The second model is a FIFO nobody writes to yet, so the agent blocks opening it: the
    first result must already have reached us, or the output is not streamed."""
    fifo = tmp_path / "second.onnx"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, str(AGENT_PATH), "--warmup", "0", "--runs", "2", str(models["matmul"]), str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        got = None
        deadline = time.monotonic() + 30
        buf = b""
        while got is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, "agent exited before printing the first result"
                buf += chunk
                for s in buf.splitlines():
                    m = json.loads(s) if s.strip().endswith(b"}") else {}
                    if m.get("model") == "matmul.onnx" and "median_ms" in m:
                        got = m
        assert got is not None, "first result did not arrive while the agent waited on the second model"
        assert proc.poll() is None  # still blocked on the FIFO
        with open(fifo, "wb") as f:
            f.write(models["matmul"].read_bytes())
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        second = [m for m in lines((buf + rest).decode()) if m.get("model") == "second.onnx" and "event" not in m]
        assert len(second) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_agent_fingerprint_reports_versions_and_what_is_missing():
    p = agent("--fingerprint", "--runtime", "onnxruntime", "--providers", "CPUExecutionProvider")
    assert p.returncode == 0, p.stderr
    fp = json.loads(p.stdout)
    import numpy

    assert fp["python"] == ".".join(map(str, sys.version_info[:3]))
    assert fp["numpy"] == numpy.__version__
    assert fp["runtime_version"] == ort.__version__
    assert fp["cores"] == os.cpu_count() and fp["cpu_model"] and fp["machine"]
    assert "CPUExecutionProvider" in fp["onnxruntime_providers"]
    assert fp["missing"] == []

    p = agent("--fingerprint", "--runtime", "onnxruntime", "--providers", "TensorrtExecutionProvider,CPUExecutionProvider")
    missing = json.loads(p.stdout)["missing"]
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert [m["what"] for m in missing] == ["TensorrtExecutionProvider"]
        assert "onnxruntime-gpu" in missing[0]["hint"]


def test_agent_fingerprint_names_a_missing_runtime(tmp_path):
    p = agent("--fingerprint", "--runtime", "onnxruntime", env=_env_without_onnxruntime(tmp_path))
    fp = json.loads(p.stdout)
    assert [m["what"] for m in fp["missing"]] == ["onnxruntime"]
    assert fp["missing"][0]["hint"] == "pip install onnxruntime"
    assert fp["runtime_version"] is None


def test_agent_fingerprint_tflite_hint(tmp_path):
    p = agent("--fingerprint", "--runtime", "tflite", "--interpreter", "tflite_runtime",
              env=_env_without_onnxruntime(tmp_path, also=("tflite_runtime",)))
    fp = json.loads(p.stdout)
    assert {"what": "tflite interpreter", "required": True, "hint": "pip install tflite-runtime"} in fp["missing"]


def _env_without_onnxruntime(tmp_path: Path, also=()) -> dict:
    """An environment where `import onnxruntime` (and `also`) fails, as on a bare device."""
    fake = tmp_path / "no_runtime"
    for mod in ("onnxruntime", *also):
        (fake / mod).mkdir(parents=True, exist_ok=True)
        (fake / mod / "__init__.py").write_text(f"raise ImportError('{mod} is not installed (simulated)')\n")
    return {**os.environ, "PYTHONPATH": str(fake)}


# ------------------------------------------------------------------------------- transport


def test_local_transport_files_commands_and_cleanup(profile, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_text("hello")
    with open_transport(profile) as t:
        assert isinstance(t, LocalTransport)
        tmp = Path(t.tmpdir)
        assert tmp.parent == Path(profile.workdir) and tmp.is_dir()
        a, b = t.put_many([(src, "a.txt"), (src, "b.txt")])
        assert Path(a).read_text() == "hello" and Path(b).parent == tmp
        res = t.run(["sh", "-c", "cat a.txt; echo oops >&2; exit 3"])
        assert (res.rc, res.stdout, res.stderr) == (3, "hello", "oops\n")
        assert t.run(["sh", "-c", "cat"], input="piped").stdout == "piped"
        t.remove(["a.txt", "missing.txt"])
        assert not Path(a).exists() and Path(b).exists()
        with pytest.raises(ValueError):
            t.put(src, "../escape.txt")
        assert t.run(["no-such-command-xyz"]).rc == 127
    assert not tmp.exists()


def test_local_transport_removes_tmpdir_on_failure(profile):
    with pytest.raises(RuntimeError):
        with open_transport(profile) as t:
            tmp = Path(t.tmpdir)
            (tmp / "partial").write_text("x")
            raise RuntimeError("boom")
    assert not tmp.exists()
    assert list(Path(profile.workdir).iterdir()) == []


def test_local_stream_yields_lines_and_reports_failure(profile):
    script = "import sys\nprint('one', flush=True)\nprint('two')\nsys.stderr.write('bad thing\\n')\nsys.exit(4)\n"
    with open_transport(profile) as t:
        got = []
        with pytest.raises(CommandError) as info:
            for line in t.stream([sys.executable, "-c", script], timeout=30):
                got.append(line)
        assert got == ["one", "two"]
        assert info.value.rc == 4 and "bad thing" in info.value.stderr


def test_local_stream_idle_timeout_stops_the_command(profile):
    with open_transport(profile) as t:
        start = time.monotonic()
        with pytest.raises(DeviceError, match="printed nothing for 0.5 s"):
            for _ in t.stream([sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"], timeout=0.5):
                pass
        assert time.monotonic() - start < 20


def test_profile_env_reaches_the_command(profile):
    prof = dataclasses.replace(profile, env={"EDGENAS_TEST_VAR": "42"})
    with open_transport(prof) as t:
        assert t.run([sys.executable, "-c", "import os; print(os.environ['EDGENAS_TEST_VAR'])"]).stdout.strip() == "42"


def test_ssh_transport_needs_paramiko(monkeypatch):
    prof = load_profile(REPO / "device_profiles" / "linux-box.yaml")
    monkeypatch.setitem(sys.modules, "paramiko", None)  # import paramiko -> ImportError
    with pytest.raises(MissingDependencyError, match=r"edgenas\[ssh\]"):
        with open_transport(prof):
            pass


def test_importing_the_device_layer_does_not_import_paramiko():
    code = ("import sys, edgenas.device, edgenas.cli.device, edgenas.device.transport\n"
            "from edgenas.device import load_profile\n"
            f"load_profile({str(REPO / 'device_profiles' / 'linux-box.yaml')!r})\n"
            "assert 'paramiko' not in sys.modules, 'paramiko imported eagerly'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


# ------------------------------------------------------------------------------- runner


def test_measure_models_streams_results_in_order(profile, models, tmp_path):
    twin = tmp_path / "elsewhere" / "matmul.onnx"  # same file name as another model, different model
    twin.parent.mkdir()
    twin.write_bytes(models["uint8"].read_bytes())
    paths = [models["matmul"], models["broken"], models["int8"], twin, models["dynamic"]]
    seen: list[MeasureResult] = []
    results = measure_models(profile, paths, on_result=seen.append, chunk_size=3)
    assert [r.model for r in results] == [p.name for p in paths]
    assert seen == results
    assert [r.path for r in results] == paths
    ok = [r for r in results if r.ok]
    assert len(ok) == 4 and all(r.count == 5 and r.median_ms > 0 and r.error is None for r in ok)
    bad = results[1]
    assert not bad.ok and bad.error and bad.median_ms is None
    assert MeasureResult.from_dict(json.loads(json.dumps(results[0].to_dict()))) == results[0]
    assert list(Path(profile.workdir).iterdir()) == []  # the run's temp dir is gone


def test_measure_written_writes_measures_and_removes_each_chunk(profile, models):
    """The one measurement step: write() gets each chunk and a fresh directory, results come back
    per item (a failing model is data), repeats are whole passes, and the written files are gone."""
    from edgenas.device import measure_written

    items = ["matmul", "broken", "dynamic", "int8", "matmul"]
    written, dirs, seen = [], set(), []

    def write(chunk, d, stage):
        stage(f"writing {len(chunk)}")
        dirs.add(d)
        paths = [d / f"{i}-{name}.onnx" for i, name in enumerate(chunk)]
        for name, path in zip(chunk, paths):
            path.write_bytes(models[name].read_bytes())
        written.extend(paths)
        return paths

    stages = []
    results = measure_written(profile, items, write, chunk_size=2, repeats=2,
                              on_result=lambda item, r: seen.append((item, r)), on_stage=stages.append)
    assert len(dirs) == 3 and len(results) == 2 * len(items) and "writing 2" in stages
    assert [item for item, _ in seen] == ["matmul", "broken"] * 2 + ["dynamic", "int8"] * 2 + ["matmul"] * 2
    assert [r for _, r in seen] == results
    assert all(r.ok == (item != "broken") for item, r in seen)
    assert not any(p.exists() for p in written)  # removed after measuring
    kept = measure_written(profile, [models["matmul"], models["dynamic"]], None)  # existing files stay
    assert [r.model for r in kept] == ["matmul.onnx", "dynamic.onnx"] and models["matmul"].is_file()
    with pytest.raises(ValueError, match="2 model files for 1 items"):
        measure_written(profile, ["matmul"], lambda chunk, d, stage: [models["matmul"]] * 2)


def test_interleaved_rounds_report_their_stages_while_no_result_has_arrived(profile, models):
    """With rounds, results only come at a chunk's end: on_stage says what is happening before."""
    prof = dataclasses.replace(profile, rounds=2)
    events = []
    results = measure_models(prof, [models["matmul"], models["uint8"]], on_stage=lambda s: events.append(("stage", s)),
                             on_result=lambda r: events.append(("result", r.model)))
    stages = [text for kind, text in events if kind == "stage"]
    assert stages[0] == "warm-up 1/2" and set(stages) <= {"warm-up 1/2", "warm-up 2/2", "round 1/2", "round 2/2"}
    assert stages.index("round 1/2") < stages.index("round 2/2")  # each round announced, in order
    assert events.index(("stage", "round 2/2")) < events.index(("result", "matmul.onnx"))
    assert all(r.ok for r in results)
    quiet = []  # one round: results stream, no stage text
    measure_models(dataclasses.replace(profile, rounds=1), [models["matmul"]], on_stage=quiet.append)
    assert quiet == []


@pytest.mark.parametrize("rounds", [1, 3])
def test_measure_models_survives_an_agent_crash(profile, models, tmp_path, rounds):
    """A model that kills the runtime process is recorded as an error; the rest is measured."""
    crasher = _save(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "crash",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    ), tmp_path / "crasher.onnx", doc="EDGENAS_TEST_CRASH")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, onnxruntime\n"
        "_Base = onnxruntime.InferenceSession\n"
        "class _Crashing(_Base):\n"
        "    def __init__(self, path, *a, **k):\n"
        "        with open(path, 'rb') as f:\n"
        "            if b'EDGENAS_TEST_CRASH' in f.read():\n"
        "                os.abort()\n"
        "        super().__init__(path, *a, **k)\n"
        "onnxruntime.InferenceSession = _Crashing\n"
    )
    prof = dataclasses.replace(profile, env={"PYTHONPATH": str(hook)}, rounds=rounds)
    seen = []
    results = measure_models(prof, [models["matmul"], crasher, models["uint8"]], on_result=seen.append)
    if rounds == 1:  # each result streams as it is measured
        assert [r.model for r in seen] == ["matmul.onnx", "crasher.onnx", "uint8.onnx"]
    else:  # rounds interleave over the chunk: the crash is known first, the others after the rerun
        assert [r.model for r in seen] == ["crasher.onnx", "matmul.onnx", "uint8.onnx"]
    assert [r.model for r in results] == ["matmul.onnx", "crasher.onnx", "uint8.onnx"]
    assert results[0].ok and results[2].ok
    assert not results[1].ok and "died while measuring this model" in results[1].error


def test_measure_models_missing_runtime_is_a_device_error(profile, models, tmp_path):
    prof = dataclasses.replace(profile, env={"PYTHONPATH": _env_without_onnxruntime(tmp_path)["PYTHONPATH"]})
    with pytest.raises(DeviceError, match="pip install onnxruntime"):
        measure_models(prof, [models["matmul"]])
    assert list(Path(profile.workdir).iterdir()) == []


def test_measure_models_rejects_missing_files(profile, tmp_path):
    with pytest.raises(EdgeNASError, match="not found"):
        measure_models(profile, [tmp_path / "nope.onnx"])
    assert measure_models(profile, []) == []


def test_missing_python_is_reported_with_a_hint(profile, models):
    prof = dataclasses.replace(profile, python="/nonexistent/python3")
    fp = device_fingerprint(prof)
    assert fp["missing"][0]["what"] == "python (/nonexistent/python3)"
    assert "install Python 3" in fp["missing"][0]["hint"]
    with pytest.raises(DeviceError, match="not found"):
        measure_models(prof, [models["matmul"]])


# ------------------------------------------------------------------------------- CLI


def test_cli_device_check_local_cpu_subprocess():
    p = subprocess.run([sys.executable, "-m", "edgenas", "device", "check", "device_profiles/local-cpu.yaml"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for word in ("cpu", "cores", "python", f"onnxruntime {ort.__version__}", "CPUExecutionProvider", "ready"):
        assert word in out, (word, out)


def test_cli_device_check_json_and_missing_runtime(tmp_path, capsys):
    assert cli_main(["device", "check", str(LOCAL_CPU), "--json"]) == 0
    fp = json.loads(capsys.readouterr().out)
    assert fp["ok"] is True and fp["missing"] == [] and fp["profile_key"] == "local-cpu_onnxruntime-cpu_t1"

    prof = tmp_path / "bare.yaml"
    fake = _env_without_onnxruntime(tmp_path)["PYTHONPATH"]
    prof.write_text(LOCAL_CPU.read_text() + f"env:\n  PYTHONPATH: {fake}\n")
    assert cli_main(["device", "check", str(prof)]) == 1
    out = capsys.readouterr().out
    assert "missing on local-cpu" in out and "onnxruntime: pip install onnxruntime" in out


def test_cli_device_measure(models, tmp_path, capsys):
    prof = tmp_path / "quick.yaml"
    prof.write_text(LOCAL_CPU.read_text().replace("runs: 100", "runs: 3").replace("warmup: 10", "warmup: 1"))
    # One model fails: the others are still measured, and the exit status says so.
    assert cli_main(["device", "measure", str(prof), str(models["matmul"]), str(models["broken"]),
                     str(models["int8"]), "--json"]) == 1
    rows = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [(r["model"], r["count"]) for r in rows] == [("matmul.onnx", 3), ("broken.onnx", 0), ("int8.onnx", 3)]
    assert rows[0]["error"] is None and rows[1]["error"] and rows[2]["error"] is None


# ------------------------------------------------------------------------------- TFLite


def _tflite_model(path: Path, ttype_name: str, dynamic: bool = False) -> Path:
    """A one-op TFLite model (ADD of two [1, 8] inputs) written with LiteRT's flatbuffer schema."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    ttype = getattr(S.TensorType, ttype_name)
    tensors = []
    for name in ("a", "b", "y"):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 8], ttype, 0
        if dynamic:
            t.shapeSignature = [-1, 8]
        if ttype_name in ("INT8", "UINT8"):
            q = S.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.1], [0 if ttype_name == "INT8" else 128]
            t.quantization = q
        tensors.append(t)
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = S.BuiltinOptions.AddOptions, S.AddOptionsT()
    sg = S.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = tensors, [0, 1], [2], [op]
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.ADD
    code.version = 1
    model = S.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sg], [S.BufferT()]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


@pytest.mark.parametrize("delegate", ["xnnpack", "none"])
def test_measure_tflite_models(profile, tmp_path, delegate):
    pytest.importorskip("ai_edge_litert")  # the `tflite` extra
    paths = [_tflite_model(tmp_path / "f32.tflite", "FLOAT32"),
             _tflite_model(tmp_path / "dyn.tflite", "FLOAT32", dynamic=True),
             _tflite_model(tmp_path / "i8.tflite", "INT8"),
             _tflite_model(tmp_path / "u8.tflite", "UINT8")]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    prof = dataclasses.replace(profile, runtime="tflite", threads=2, runtime_options={
        "delegate": delegate, "delegate_library": "libtensorflowlite_gpu_delegate.so", "interpreter": "auto"})
    results = measure_models(prof, [*paths, bad])
    assert [r.ok for r in results] == [True, True, True, True, False], [r.error for r in results]
    assert all(r.count == 5 and r.info["delegate"] == delegate for r in results[:4])
    fp = device_fingerprint(prof)
    assert fp["tflite_module"] == "ai_edge_litert" and fp["missing"] == []
