"""The latency table: files, OFA's tables, prediction (scalar and vectorised), calibration."""
import time

import numpy as np
import pytest
import yaml

from edgenas.errors import ConfigError, EdgeNASError
from edgenas.latency import Calibration, LatencyTable, MissingKeyError, enumerate_ops, fit_calibration
from edgenas.space import arch_ops, encode, largest, load_space, sample, sample_genomes, smallest


def synthetic_table(space, calibration=None, drop=()):
    """A table whose every layer costs 1 ms plus its MACs in millions / 100."""
    table = LatencyTable.create(space, "synthetic", calibration=calibration or {})
    for op in enumerate_ops(space):
        if op.key not in drop:
            ms = 1.0 + op.macs / 1e8
            table.set(op.key, {"mean": ms + 0.1, "median": ms, "std": 0.01, "count": 5})
    return table


def test_predict_sums_the_layers_and_applies_the_calibration():
    space = load_space("mbv3-tiny")
    arch = sample(space, np.random.default_rng(0))
    ops = arch_ops(space, arch)
    plain = synthetic_table(space)
    assert plain.predict(arch) == pytest.approx(sum(1.0 + op.macs / 1e8 for op in ops))
    cal = synthetic_table(space, {"overhead_ms": 0.25, "scale": 1.5, "offset_ms": 0.75})
    assert cal.predict(arch) == pytest.approx(1.5 * sum(0.75 + op.macs / 1e8 for op in ops) + 0.75)
    assert [k for k, _ in cal.breakdown(arch)] == [op.key for op in ops]


@pytest.mark.parametrize("name", ["mbv3-tiny", "mbv3-w1.0"])
def test_vectorised_prediction_equals_the_scalar_one(name):
    space = load_space(name)
    table = synthetic_table(space, {"overhead_ms": 0.1, "scale": 0.9, "offset_ms": 0.3})
    archs = sample(space, np.random.default_rng(1), 100) + [smallest(space), largest(space)]
    fast = table.predictor()(encode(space, archs))
    assert fast.dtype == np.float64
    np.testing.assert_allclose(fast, [table.predict(a) for a in archs], rtol=1e-12)


def test_vectorised_prediction_is_fast():
    space = load_space("mbv3-w1.0")
    predictor = synthetic_table(space).predictor()
    genomes = sample_genomes(space, np.random.default_rng(0), 20000)
    predictor(genomes[:10])
    t = time.perf_counter()
    predictor(genomes)
    per_ms = len(genomes) / ((time.perf_counter() - t) * 1e3)
    # Thousands per ms on an idle core (benchmarks/latency/README.md); loose here, CI shares cores.
    assert per_ms > 200, f"only {per_ms:.0f} archs per ms"


def test_a_missing_key_is_an_error_naming_it_scalar_and_vectorised():
    space = load_space("mbv3-tiny")
    arch = largest(space)
    key = arch_ops(space, arch)[5].key
    table = synthetic_table(space, drop={key})
    with pytest.raises(MissingKeyError, match=key.replace("|", r"\|")):
        table.predict(arch)
    genomes = encode(space, [smallest(space), arch])
    with pytest.raises(MissingKeyError, match="expanded_conv-input"):
        table.predictor()(genomes)
    # Archs that do not use the missing layer still predict.
    assert np.isfinite(table.predictor()(genomes[:1])).all()


def test_a_resolution_that_was_not_profiled_is_a_missing_key():
    space = load_space("mbv3-tiny")
    table = LatencyTable.create(space, "partial")
    for op in enumerate_ops(space, [24]):
        table.set(op.key, {"mean": 1.0, "median": 1.0, "std": 0.0, "count": 1})
    assert table.predict(largest(space, 24)) > 0
    with pytest.raises(MissingKeyError, match="Conv-input:32x32x3"):
        table.predict(largest(space, 32))


def test_save_and_load_round_trip(tmp_path):
    space = load_space("mbv3-tiny")
    table = synthetic_table(space, {"overhead_ms": 0.1, "scale": 1.2, "offset_ms": 0.2})
    path = table.save(tmp_path / "t.yaml")
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    data = yaml.safe_load(path.read_text())
    assert data["header"]["space"] == {"name": "mbv3-tiny", "hash": space.hash}
    assert data["header"]["format_version"] == 1 and data["header"]["edgenas_version"]
    key = next(iter(data["ops"]))
    assert set(data["ops"][key]) == {"mean", "median", "std", "count"}
    back = LatencyTable.load(path)
    arch = sample(space, np.random.default_rng(2))
    assert back.predict(arch) == pytest.approx(table.predict(arch))
    assert back.calibration == Calibration(0.1, 1.2, 0.2)


def test_a_custom_space_is_stored_in_the_header(tmp_path):
    space = load_space("mbv3-tiny").replace(name="my-space", num_classes=7)
    path = synthetic_table(space).save(tmp_path / "t.yaml")
    back = LatencyTable.load(path)
    assert back.space().hash == space.hash
    back.predict(largest(space))


def test_a_table_refuses_another_space_and_other_formats(tmp_path):
    table = synthetic_table(load_space("mbv3-tiny"))
    with pytest.raises(EdgeNASError, match="was built for space mbv3-tiny"):
        table.predict(largest(load_space("mbv3-w1.0")), "mbv3-w1.0")
    path = table.save(tmp_path / "t.yaml")
    data = yaml.safe_load(path.read_text())
    data["header"]["format_version"] = 99
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="key 'header.format_version': got 99, expected 1"):
        LatencyTable.load(path)
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="expected a latency table"):
        LatencyTable.load(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="not found"):
        LatencyTable.load(tmp_path / "missing.yaml")


def test_fit_calibration_recovers_a_line():
    raw = np.array([2.0, 5.0, 9.0, 14.0])
    cal = fit_calibration(raw, 1.3 * raw + 0.4, overhead_ms=0.05)
    assert (cal.scale, cal.offset_ms, cal.overhead_ms) == (pytest.approx(1.3), pytest.approx(0.4), 0.05)
    assert fit_calibration([4.0], [5.0], 0.0).scale == pytest.approx(1.25)
    assert fit_calibration([], [], 0.1) == Calibration(0.1, 1.0, 0.0)


def test_fit_calibration_is_not_pulled_by_a_subnet_measured_in_a_slow_spell():
    raw = np.linspace(2.0, 12.0, 20)
    measured = 1.1 * raw + 0.5
    measured[3] *= 1.3  # measured while the device was slow
    measured[17] *= 0.8
    cal = fit_calibration(raw, measured, overhead_ms=0.0)
    assert cal.scale == pytest.approx(1.1, rel=1e-3) and cal.offset_ms == pytest.approx(0.5, abs=1e-2)
    plain = fit_calibration(raw, measured, overhead_ms=0.0, iterations=1)  # ordinary least squares
    assert abs(plain.scale - 1.1) > 0.03


def test_underprediction_is_a_quantile_of_the_measured_excess():
    space = load_space("mbv3-tiny")
    archs = sample(space, np.random.default_rng(2), 5)
    table = synthetic_table(space)
    assert table.underprediction() == 0.0  # no calibration subnets
    excess = [0.5, 0.2, 0.1, 0.0, -0.3]  # measured / predicted - 1 for each subnet
    table.update_calibration(networks={str(a): {"mean": 0.0, "median": (1 + x) * table.predict(a)}
                                       for a, x in zip(archs, excess)})
    assert table.underprediction(quantile=1.0) == pytest.approx(0.5)
    assert table.underprediction(quantile=0.5) == pytest.approx(0.1)
    assert table.underprediction() == pytest.approx(np.quantile(excess, 0.9))
    table.update_calibration(networks={str(archs[4]): {"mean": 0.0, "median": 0.7 * table.predict(archs[4])}})
    assert table.underprediction() == 0.0  # measured faster than predicted: no margin needed


# ---- OFA's published Note10 tables ---------------------------------------------------------

def test_ofa_tables_load_for_mbv3_w12_and_every_key_resolves(ofa_note10_dir):
    for source in (ofa_note10_dir, ofa_note10_dir / "160_lookup_table.yaml"):
        assert LatencyTable.load(source).header["space"]["name"] == "mbv3-w1.2"
    table = LatencyTable.load_ofa(ofa_note10_dir)
    space = load_space("mbv3-w1.2")
    assert table.missing(op.key for op in enumerate_ops(space)) == []
    genomes = sample_genomes(space, np.random.default_rng(0), 2000)
    predicted = table.predictor()(genomes)
    assert np.isfinite(predicted).all() and (predicted > 0).all()
    # A prediction is the plain sum of OFA's means from that resolution's file (the two head layers
    # shared by all files are pooled, so allow for their small spread).
    for arch in (smallest(space, 160), largest(space, 224), sample(space, np.random.default_rng(5))):
        ofa = yaml.safe_load((ofa_note10_dir / f"{arch.resolution}_lookup_table.yaml").read_text())
        expected = sum(ofa[op.key]["mean"] for op in arch_ops(space, arch))
        assert table.predict(arch) == pytest.approx(expected, rel=0.02)
    assert table.predict(smallest(space, 160)) < table.predict(largest(space, 224))


def test_calibration_subnets_are_distinct_random_subnets_over_the_resolutions():
    from edgenas.latency import calibration_archs

    space = load_space("mbv3-tiny")
    archs = calibration_archs(space, [24, 28], 24, seed=0)
    assert len(set(archs)) == 24 and [a.resolution for a in archs[:4]] == [24, 28, 24, 28]
    assert smallest(space, 24) not in archs and largest(space, 28) not in archs
    assert archs == calibration_archs(space, [24, 28], 24, seed=0) != calibration_archs(space, [24, 28], 24, seed=1)
    narrow = space.replace(kernel_sizes=(7,), expand_ratios=(3,), depths=(2,), resolutions=(24,))
    assert len(calibration_archs(narrow, [24], 5, seed=0)) == 1  # all there are, and it stops


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A table as `edgenas profile` writes it (this machine, mbv3-tiny at 24 px, quickly)."""
    pytest.importorskip("onnxruntime")
    from conftest import REPO
    from edgenas.latency import profile_device

    out = tmp_path_factory.mktemp("profiled") / "t.yaml"
    local = REPO / "device_profiles" / "local-cpu.yaml"
    profile_device(local, "mbv3-tiny", resolutions=[24], out=out, calibrate=2, warmup=1, runs=3, progress=False)
    return out.read_text()


def _mutated(tmp_path, change, text):
    path = tmp_path / "t.yaml"
    data = yaml.safe_load(text)
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _first_op(data):
    return next(iter(data["ops"]))


@pytest.mark.parametrize("change, words", [
    (lambda d: d["ops"][_first_op(d)].update(mean=-0.5), "got -0.5, expected a number from 0"),
    (lambda d: d["ops"][_first_op(d)].update(mean=float("nan")), "got NaN"),
    (lambda d: d["ops"][_first_op(d)].update(median="fast"), "got 'fast', expected a number"),
    (lambda d: d["ops"][_first_op(d)].pop("mean"), "got nothing (the key is missing)"),
    (lambda d: d["ops"][_first_op(d)].update(p99=1.0), "got an unknown key, expected one of mean, median, std, count"),
    (lambda d: d["ops"].update({_first_op(d): [1, 2]}), "got a list [1, 2], expected a mapping of mean"),
    (lambda d: d.update(ops=[1, 2]), "key 'ops': got a list [1, 2], expected a mapping of layer key"),
    (lambda d: d.update(header="h"), "key 'header': got 'h', expected a mapping"),
    (lambda d: d["header"].update(statistic="p90"), "key 'header.statistic': got 'p90', expected one of mean, median"),
    (lambda d: d["header"].update(calibration={"scale": float("nan")}), "key 'header.calibration.scale': got NaN"),
    (lambda d: d["header"].update(calibration={"overhead_ms": -1}), "key 'header.calibration.overhead_ms': got -1"),
    (lambda d: d["header"].update(space=["mbv3-tiny"]), "key 'header.space': got a list ['mbv3-tiny'], expected a mapping"),
    (lambda d: d["header"].update(calibration={"per_type": {"used": True, "scales": {"stem": -1.0}}}),
     "key 'header.calibration.per_type.scales.stem': got -1.0"),
    (lambda d: d["header"].update(calibration={"per_type": {"used": True}}),
     "key 'header.calibration.per_type.scales': got nothing"),
    (lambda d: d["header"].update(calibration={"per_type": {"used": "yes", "scales": {"stem": 1.0}}}),
     "key 'header.calibration.per_type.used': got 'yes', expected true or false"),
    (lambda d: d.update(extra=1), "key 'extra': got an unknown key, expected one of header, ops"),
    (lambda d: d["header"].update(device_load="busy"), "key 'header.device_load': got 'busy', expected a mapping"),
    (lambda d: d["header"].update(device_load={"ops": {"steal": 1.5, "other": 0.0, "cpu_seconds": 2.0}}),
     "key 'header.device_load.ops.steal': got 1.5"),
    (lambda d: d["header"].update(device_load={"ops": {"steal": 0.1, "cpu_seconds": 2.0}}),
     "key 'header.device_load.ops.other': got nothing"),
])
def test_bad_tables_name_the_file_and_key(tmp_path, change, words, profiled):
    path = _mutated(tmp_path, change, profiled)
    with pytest.raises(ConfigError) as err:
        LatencyTable.load(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and words in msg and len(msg) < 300, msg


@pytest.mark.parametrize("text, words", [
    ("Conv-input:160x160x3-output:80x80x24: {count: 5, mean: -1.0, std: 0.1}\n", "got -1.0, expected a number from 0"),
    ("Conv-input:160x160x3-output:80x80x24: {count: 5, mean: .inf, std: 0.1}\n", "got inf"),
    ("Conv-input:160x160x3-output:80x80x24: {count: 5, mean: 1.0, std: 0.1}\nConv-input:160x160x3-output:80x80x24: {mean: 2}\n",
     "got key 'Conv-input:160x160x3-output:80x80x24' twice"),
])
def test_bad_ofa_tables_name_the_file(tmp_path, text, words):
    path = tmp_path / "160_lookup_table.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        LatencyTable.load(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and words in msg and len(msg) < 300, msg


def _per_type(table, space):
    """A per-type calibration on `table` as the profiler records it: one scale per op type."""
    from edgenas.latency.calibration import op_type

    types = sorted({op_type(op) for op in enumerate_ops(space)})
    rng = np.random.default_rng(5)
    scales = {t: float(rng.uniform(0.5, 2.0)) for t in types}
    table.update_calibration(overhead_ms=0.1, scale=0.9, offset_ms=0.3,
                             per_type={"used": True, "scales": scales, "offset_ms": 0.4})
    return scales


@pytest.mark.parametrize("name", ["mbv3-tiny", "mbv3-w1.0"])
def test_a_per_type_calibration_predicts_the_same_scalar_and_vectorised(name, tmp_path):
    from edgenas.latency.calibration import op_type

    space = load_space(name)
    table = synthetic_table(space)
    scales = _per_type(table, space)
    archs = sample(space, np.random.default_rng(1), 100) + [smallest(space), largest(space)]
    arch = archs[0]
    expected = sum(scales[op_type(op)] * (table.value(op.key) - 0.1) for op in arch_ops(space, arch)) + 0.4
    assert table.predict(arch) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(table.predictor()(encode(space, archs)), table.predict(archs), rtol=1e-12)
    back = LatencyTable.load(table.save(tmp_path / "t.yaml"))  # the header round trip
    assert back.calibration.type_scales == scales
    np.testing.assert_allclose(back.predict_genomes(encode(space, archs)), table.predict(archs), rtol=1e-12)
    # The lowest subnet anywhere in the space, under these scales, is what `lowest` finds.
    low = table.predictor().lowest()
    genomes = sample_genomes(space, np.random.default_rng(2), 5000)
    raw = table.predictor().raw(genomes)
    for ri in range(len(space.resolutions)):
        assert low[ri] <= raw[genomes[:, 0] == ri].min() + 1e-12


def test_a_per_type_lookup_costs_what_the_line_does():
    """The per-type scales are folded into the lookup: a call is the same gather and sum. A
    ratio in one process (both under the same load), loose for a shared CI machine."""
    space = load_space("mbv3-w1.0")
    line = synthetic_table(space, {"overhead_ms": 0.1, "scale": 0.9, "offset_ms": 0.3}).predictor()
    per_type_table = synthetic_table(space)
    _per_type(per_type_table, space)
    per_type = per_type_table.predictor()
    genomes = sample_genomes(space, np.random.default_rng(0), 20000)

    times = {line: [], per_type: []}
    for _ in range(7):  # interleaved, so a slow spell of the machine hits both
        for f in times:
            t = time.perf_counter()
            f(genomes)
            times[f].append(time.perf_counter() - t)
    assert min(times[per_type]) < 1.5 * min(times[line])


def test_a_table_without_per_type_predicts_with_the_line_exactly():
    space = load_space("mbv3-tiny")
    table = synthetic_table(space, {"overhead_ms": 0.25, "scale": 1.5, "offset_ms": 0.75})
    arch = sample(space, np.random.default_rng(0))
    assert table.predict(arch) == 1.5 * table.predict_raw(arch) + 0.75  # bit for bit, as before
    assert not table.calibration.per_type
    # Recorded but not chosen: still the line.
    table.update_calibration(per_type={"used": False, "scales": {"stem": 2.0}, "offset_ms": 9.0})
    assert table.predict(arch) == 1.5 * table.predict_raw(arch) + 0.75
