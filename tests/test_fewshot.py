"""Few-shot latency tables (issue #20): the design of the K subnets, the transfer fit and the
MACs-only baseline, refining without measuring a subnet twice, a full table started from a
few-shot one, and bad input as one line with exit 2.

The fits are checked on synthetic targets with known per-type scales (exact, fast); the commands
run for real on this machine (`edgenas profile` on device_profiles/local-cpu.yaml, mbv3-tiny at
24 px, few timed runs), so what they prove is the mechanics, not the accuracy of a noisy tiny net.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_table
from edgenas.cli import main
from edgenas.errors import ConfigError, EdgeNASError
from edgenas.latency import LatencyTable
from edgenas.latency import fewshot as F
from edgenas.latency.calibration import op_type
from edgenas.latency.ops import enumerate_ops
from edgenas.space import Arch, SearchSpace, arch_cost, encode, load_space, sample, smallest
from edgenas.space.ops import arch_ops

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "device_profiles" / "local-cpu.yaml"
FAST = ["--resolutions", "24", "--warmup", "1", "--runs", "3"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def space():
    return load_space("mbv3-tiny")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, space):
    """A reference device: a table of mbv3-tiny whose entries are not proportional to MACs (each
    layer off by its own seeded factor, as layers on real devices are), written by edgenas's writer."""
    path = write_table(space, tmp_path_factory.mktemp("ref") / "ref.yaml", "ref-device")
    table = LatencyTable.load(path)
    rng = np.random.default_rng(3)
    for key in sorted(table.ops):
        ms = table.ops[key]["mean"] * float(np.exp(rng.normal(0.0, 0.5)))
        table.ops[key] = {"mean": ms, "median": ms, "std": 0.0, "count": 1}
    table.update_calibration(overhead_ms=0.004)
    return LatencyTable.load(table.save())


def target_of(reference, space, seed=1, spread=0.3, offset=0.2):
    """A target device: per-type scales of the reference (drawn around 2x) and a call cost."""
    types = F.space_types(space, space.resolutions)
    rng = np.random.default_rng(seed)
    scales = {t: 2.0 * float(np.exp(rng.normal(0.0, spread))) for t in types}
    ov = reference.calibration.overhead_ms

    def ms(a):
        return sum(scales[op_type(op)] * max(reference.value(op.key) - ov, 0.0) for op in arch_ops(space, a)) + offset
    return ms


def transfer_table(reference, space, archs, measured, target_ov=0.05, res=None):
    """The table the profiler writes from a transfer fit (reference entries, fitted calibration)."""
    table = LatencyTable.create(space, "few", calibration={"overhead_ms": reference.calibration.overhead_ms})
    table.ops = dict(reference.ops)
    fit = F.fit_transfer(table, space, res or list(space.resolutions), archs, measured, target_ov)
    table.header["calibration"] = fit.calibration
    table.update_calibration()
    return table, fit


def within(pred, truth, tol):
    return float(np.mean(np.abs(np.asarray(pred) / np.asarray(truth) - 1.0) <= tol))


# ---- the design ---------------------------------------------------------------------------

def test_the_design_is_seeded_nested_distinct_and_spread_over_the_resolutions(space, reference):
    res = list(space.resolutions)
    for ref in (reference, None):
        d40 = F.design_subnets(space, res, 40, seed=5, reference=ref)
        assert F.design_subnets(space, res, 40, seed=5, reference=ref) == d40  # deterministic
        for k in (5, 10, 20):
            assert F.design_subnets(space, res, k, seed=5, reference=ref) == d40[:k]  # nested
        assert len(set(d40)) == 40
        assert [a.resolution for a in d40[:6]] == res + res  # each resolution in turn
        # Continuing from subnets measured earlier keeps them first, then adds the design's picks.
        assert F.design_subnets(space, res, 12, seed=5, reference=ref, measured=d40[:7]) == d40[:12]
    assert F.design_subnets(space, res, 10, seed=6, reference=reference) != F.design_subnets(space, res, 10, seed=5,
                                                                                              reference=reference)


def _logdet(rows):
    m = F.EPS * np.eye(rows.shape[1]) + rows.T @ rows
    return float(np.linalg.slogdet(m)[1])


@pytest.mark.parametrize("with_reference", [True, False])
def test_the_design_is_more_informative_than_random_subnets(space, reference, with_reference):
    """The greedy D-optimal picks hold more information (log det of the regression's rows) than
    any of 50 random draws of as many subnets from the same pool, and span more of the latency
    range than the median random draw."""
    res = list(space.resolutions)
    ref = reference if with_reference else None
    pool = F.candidate_pool(space, res, seed=0)
    if ref is not None:
        feats = F.type_sums(ref, space, pool, F.space_types(space, res))
        proxy = feats.sum(1) + ref.calibration.overhead_ms
    else:
        feats = F.baseline_features(space, pool)
        proxy = (feats / feats.mean(0)).sum(1)
    rows = F.design_rows(feats, proxy)
    index = {a: i for i, a in enumerate(pool)}
    rng = np.random.default_rng(0)
    for k in (5, 10, 20):
        picked = [index[a] for a in F.design_subnets(space, res, k, seed=0, reference=ref)]
        randoms = [rng.choice(len(pool), k, replace=False) for _ in range(50)]
        assert _logdet(rows[picked]) > max(_logdet(rows[r]) for r in randoms)
        span = lambda idx: np.ptp(np.log(proxy[idx]))  # noqa: E731
        assert span(picked) > np.median([span(r) for r in randoms])


def test_k_is_checked_against_the_space(tmp_path):
    tiny = yaml.safe_load((REPO / "edgenas/space/presets/mbv3-tiny.yaml").read_text())
    tiny.update(name="two-subnets", kernel_sizes=[3], expand_ratios=[3], depths=[1], resolutions=[24, 28])
    tiny["units"] = tiny["units"][:1]
    small = SearchSpace.from_dict(tiny)
    assert F.distinct_subnets(small, [24, 28]) == 2
    assert sorted(map(str, F.candidate_pool(small, [24, 28], 0))) == ["r24_k3e3", "r28_k3e3"]
    with pytest.raises(EdgeNASError, match="more than the 2 distinct subnets"):
        F.design_subnets(small, [24, 28], 3)
    with pytest.raises(EdgeNASError, match="at least 3"):
        F.check_k(load_space("mbv3-tiny"), [24], 2)


# ---- the fits -----------------------------------------------------------------------------

def test_the_transfer_recovers_a_target_and_beats_the_macs_baseline(space, reference):
    """A target whose op types run 1.5-3x the reference's, plus a call cost: from 40 designed
    subnets the transfer predicts 200 held-out ones within 2%; from 20, 95% within 10%; the
    MACs-only baseline, which cannot know the reference's per-layer costs, does far worse."""
    res = list(space.resolutions)
    truth = target_of(reference, space)
    held = sample(space, np.random.default_rng(9), 200)
    want = np.array([truth(a) for a in held])
    noise = np.random.default_rng(2)
    errors = {}
    for k in (5, 10, 20, 40):
        archs = F.design_subnets(space, res, k, reference=reference)
        measured = [truth(a) * (1 + noise.normal(0, 0.01)) for a in archs]
        table, fit = transfer_table(reference, space, archs, measured)
        pred = table.predict(held)
        errors[k] = float(np.mean(np.abs(pred / want - 1)))
        assert np.all(pred > 0)
        assert np.allclose(fit.fitted_ms, table.predict(archs))  # the report's in-sample predictions are the table's
        if k >= 20:
            assert within(pred, want, 0.10) >= 0.95
            assert table.calibration.per_type  # the op types differ: the per-type scales win the leave-one-out
        if k == 40:
            assert within(pred, want, 0.02) >= 0.95
            base = F.fit_baseline(space, res, archs, measured, 0.05)
            btable = LatencyTable.create(space, "base", calibration=base.calibration)
            btable.ops = base.ops
            bpred = btable.predict(held)
            assert np.mean(np.abs(bpred / want - 1)) > 3 * errors[40]
    assert errors[40] < errors[5]


def test_with_five_subnets_the_fit_stays_near_the_common_scale(space, reference):
    """Where the target is the reference at one scale, K = 5 (noisy) fits the common scale (the
    line: too few subnets for per-type scales) and held-out subnets land within 10%."""
    res = list(space.resolutions)
    truth = target_of(reference, space, spread=0.0)
    archs = F.design_subnets(space, res, 5, reference=reference)
    noise = np.random.default_rng(4)
    table, fit = transfer_table(reference, space, archs, [truth(a) * (1 + noise.normal(0, 0.02)) for a in archs])
    assert not table.calibration.per_type and "need 8 subnets" in fit.calibration["per_type"]["decision"]
    held = sample(space, np.random.default_rng(8), 100)
    assert within(table.predict(held), [truth(a) for a in held], 0.10) >= 0.95
    assert fit.loo_ms.shape == (5,) and np.all(np.isfinite(fit.loo_ms))
    # Three subnets fit, and predict positive latencies across the space.
    table3, _ = transfer_table(reference, space, archs[:3], [truth(a) for a in archs[:3]])
    assert all(table3.predict(smallest(space, r)) > 0 for r in res)


def test_the_baseline_is_linear_in_macs_params_and_activation_bytes(space):
    """Its table's entries sum to a * MACs + b * params + c * bytes, the offset added by the usual
    predictor (scalar and vectorised); it recovers a target that is such a line."""
    res = list(space.resolutions)
    archs = F.design_subnets(space, res, 12)
    truth = lambda a: 3e-8 * arch_cost(space, a).macs + 2e-7 * F.baseline_features(space, [a])[0, 2] + 0.3  # noqa: E731
    fit = F.fit_baseline(space, res, archs, [truth(a) for a in archs], 0.05)
    table = LatencyTable.create(space, "base", calibration=fit.calibration)
    table.ops = fit.ops
    c = fit.report["coefficients"]
    held = sample(space, np.random.default_rng(3), 50)
    f = F.baseline_features(space, held)
    line = c["ms_per_mac"] * f[:, 0] + c["ms_per_param"] * f[:, 1] + c["ms_per_activation_byte"] * f[:, 2] + c["offset_ms"]
    assert np.allclose(table.predict(held), line, rtol=1e-4)
    assert np.allclose(table.predictor(space)(encode(space, held)), line, rtol=1e-4)
    assert within(line, [truth(a) for a in held], 0.01) == 1.0
    assert c["offset_ms"] >= 0.05  # a whole network pays at least one call


# ---- the commands on this machine ---------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgenas", "profile", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def _header(path):
    return yaml.safe_load(Path(path).read_text())["header"]


@pytest.fixture(scope="module")
def ref24(tmp_path_factory, space):
    """A reference table of mbv3-tiny at 24 px (made-up timings, edgenas's writer)."""
    return write_table(space, tmp_path_factory.mktemp("ref24") / "ref24.yaml", "ref24", resolutions=[24])


@pytest.fixture(scope="module")
def five(tmp_path_factory, ref24):
    out = tmp_path_factory.mktemp("five") / "few.yaml"
    p = _cli(LOCAL, "--few-shot", "5", "--from-table", ref24, "--out", out, "--json", *FAST)
    assert p.returncode == 0, p.stderr
    return out, json.loads(p.stdout.splitlines()[-1]), p.stderr


@pytest.mark.slow
def test_a_few_shot_table_from_five_subnets(five, ref24, space):
    out, report, stderr = five
    h = _header(out)
    fs, cal = h["few_shot"], h["calibration"]
    ref = LatencyTable.load(ref24)
    design = F.design_subnets(space, [24], 5, reference=ref)
    assert fs["k"] == 5 and fs["subnets"] == [str(a) for a in design]
    assert list(cal["networks"]) == fs["subnets"] and report["calibration_networks_measured"] == 5
    assert fs["reference"]["name"] == "ref24" and fs["target_overhead"]["median"] > 0
    assert h["space"]["name"] == "mbv3-tiny" and h["resolutions"] == [24]
    ops = yaml.safe_load(out.read_text())["ops"]
    assert set(ops) == {op.key for op in enumerate_ops(space, [24])}
    if fs["fit"]["compared"]["used"] == "transfer":  # the entries are the reference's, exactly: not measured
        assert fs["ops"].startswith("transferred") and ops == {k: ref.ops[k] for k in ops}
    else:  # a tiny net on a loaded machine may follow MACs better than the made-up reference
        assert fs["ops"].startswith("modelled") and all(e["count"] == 0 for e in ops.values())
    for part in ("leave_one_out", "in_sample"):
        r = fs["fit"][part]
        assert r["n"] == 5 and r["rmse_ms"] >= 0 and -1 <= r["spearman"] <= 1 and 0 <= r["within_10pct"] <= 1
    assert Path(fs["fit"]["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert "few-shot fit on 5 subnets" in stderr and report["few_shot"]["k"] == 5
    # A normal table: loads through the one validator, predicts the same scalar and vectorised.
    table = LatencyTable.load(out)
    archs = sample(space.replace(resolutions=(24,)), np.random.default_rng(1), 30)
    assert np.allclose(table.predict(archs), table.predictor(space)(encode(space, archs)))
    assert np.all(table.predict(archs) > 0)
    # The recorded fit is the one the stored measurements give.
    again = LatencyTable.create(space, "again", calibration={"networks": cal["networks"]})
    again.header["few_shot"] = {}
    F._fit_into(again, space, [24], design, fs["target_overhead"]["median"], ref, out.parent / "again.png")
    assert again.header["few_shot"]["fit"]["compared"] == fs["fit"]["compared"]
    assert np.allclose(again.predict(archs), table.predict(archs), rtol=1e-5)


@pytest.mark.slow
def test_refining_measures_only_new_subnets_and_validates_like_any_table(five, tmp_path, space):
    out = tmp_path / "few.yaml"
    shutil.copyfile(five[0], out)
    first = _header(out)["calibration"]["networks"]
    p = _cli(LOCAL, "--few-shot", "8", "--from-table", _header(out)["few_shot"]["reference"]["path"], "--out", out,
             "--json", "--validate", "3", *FAST)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.splitlines()[-1])
    h = _header(out)
    assert report["calibration_networks_measured"] == 3 and h["few_shot"]["k"] == 8
    nets = h["calibration"]["networks"]
    assert h["few_shot"]["subnets"][:5] == list(first) and len(nets) == 8
    assert all(nets[a] == first[a] for a in first)  # kept as measured, not measured again
    assert report["validation"]["n"] == 3 and report["validation"]["drift_subnets"] == 8
    # Fitting on fewer than were measured measures nothing and fits on the first K.
    p = _cli(LOCAL, "--few-shot", "6", "--from-table", h["few_shot"]["reference"]["path"], "--out", out, "--json", *FAST)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["calibration_networks_measured"] == 0
    h6 = _header(out)
    assert h6["few_shot"]["k"] == 6 and h6["calibration"]["fitted_on"] == 6 and len(h6["few_shot"]["subnets"]) == 8

    # A full profile of the few-shot file measures the layers and keeps the 8 subnets as calibration subnets.
    p = _cli(LOCAL, "--space", "mbv3-tiny", "--out", out, "--calibrate", "2", "--json", *FAST)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.splitlines()[-1])
    full = yaml.safe_load(out.read_text())
    h = full["header"]
    assert "few_shot" not in h and h["few_shot_history"]["subnets"] == list(nets)
    assert report["measured"] == 96 and report["calibration_networks_measured"] == 2
    assert all(h["calibration"]["networks"][a] == nets[a] for a in nets)
    assert h["calibration"]["fitted_on"] == 10 and h["statistic"] == "median"
    assert set(full["ops"]) == {op.key for op in enumerate_ops(space, [24])}


@pytest.mark.slow
def test_the_macs_only_baseline_without_a_reference(tmp_path, space):
    out = tmp_path / "base.yaml"
    p = _cli(LOCAL, "--few-shot", "4", "--space", "mbv3-tiny", "--out", out, "--json", *FAST)
    assert p.returncode == 0, p.stderr
    h = _header(out)
    fs = h["few_shot"]
    assert fs["reference"] is None and "modelled" in fs["ops"]
    assert fs["subnets"] == [str(a) for a in F.design_subnets(space, [24], 4)]
    c = fs["fit"]["coefficients"]
    table = LatencyTable.load(out)
    for a in sample(space.replace(resolutions=(24,)), np.random.default_rng(2), 10):
        f = F.baseline_features(space, [a])[0]
        line = c["ms_per_mac"] * f[0] + c["ms_per_param"] * f[1] + c["ms_per_activation_byte"] * f[2] + c["offset_ms"]
        assert table.predict(a) == pytest.approx(line, rel=1e-4, abs=1e-5)


# ---- bad input ----------------------------------------------------------------------------

def _one_line_exit_2(p, *words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenas") and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_few_shot_input_is_one_line_exit_2(tmp_path, ref24, ofa_note10_dir):
    before = Path(ref24).read_bytes()
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "2", "--from-table", ref24), "--few-shot", "from 3")
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "5", "--from-table", ofa_note10_dir, "--space", "mbv3-tiny",
                          "--out", tmp_path / "x.yaml"), "mbv3-w1.2", "not mbv3-tiny")
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "5", "--from-table", ref24, "--resolutions", "28",
                          "--out", tmp_path / "x.yaml"), "lacks", "28 px")
    space_file = tmp_path / "two.yaml"
    tiny = yaml.safe_load((REPO / "edgenas/space/presets/mbv3-tiny.yaml").read_text())
    tiny.update(name="two-subnets", kernel_sizes=[3], expand_ratios=[3], depths=[1], resolutions=[24, 28])
    tiny["units"] = tiny["units"][:1]
    space_file.write_text(yaml.safe_dump(tiny))
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "3", "--space", space_file, "--out", tmp_path / "x.yaml"),
                     "more than the 2 distinct subnets")
    _one_line_exit_2(_cli(LOCAL, "--from-table", ref24, "--out", tmp_path / "x.yaml"), "--few-shot")
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "5"), "--space")
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "5", "--from-table", ref24, "--out", ref24), "--from-table")
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "5", "--from-table", ref24, "--calibrate", "8",
                          "--out", tmp_path / "x.yaml"), "--calibrate", "drop it")
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "5", "--from-table", ref24, "--calibrate", "8", "--chunk-size", "9",
                          "--out", tmp_path / "x.yaml"), "--calibrate and --chunk-size", "drop them")
    assert Path(ref24).read_bytes() == before and not (tmp_path / "x.yaml").exists()


@pytest.mark.slow
def test_a_few_shot_fit_does_not_replace_a_full_table(tmp_path, ref24):
    full = tmp_path / "full.yaml"
    assert main(["-q", "profile", str(LOCAL), "--space", "mbv3-tiny", "--calibrate", "0", "--out", str(full), *FAST]) == 0
    before = full.read_bytes()
    _one_line_exit_2(_cli(LOCAL, "--few-shot", "3", "--from-table", ref24, "--out", full, *FAST), "full table")
    assert full.read_bytes() == before


@pytest.mark.slow
def test_the_table_schema_checks_the_few_shot_records(tmp_path, five):
    data = yaml.safe_load(five[0].read_text())
    for key, value, words in ((("k",), 1, "header.few_shot.k"), (("subnets",), "r24", "header.few_shot.subnets"),
                              (("target_overhead", "median"), -1.0, "header.few_shot.target_overhead")):
        bad = json.loads(json.dumps(data))
        node = bad["header"]["few_shot"]
        for k in key[:-1]:
            node = node[k]
        node[key[-1]] = value
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            LatencyTable.load(path)


def _fitted(space, reference, archs, measured, tmp_path):
    """The table the profiler writes from these measurements (its own fitting step)."""
    table = LatencyTable.create(space, "few", calibration={"networks": {str(a): {"mean": m, "median": m, "std": 0.0,
                                                                                 "count": 1}
                                                                      for a, m in zip(archs, measured)}})
    table.header["few_shot"] = {"k": len(archs), "seed": 0, "subnets": [str(a) for a in archs]}
    F._fit_into(table, space, list(space.resolutions), archs, 0.05, reference, tmp_path / "fit.png")
    return LatencyTable.load(table.save(tmp_path / "few.yaml"))


def test_the_transfer_is_kept_where_it_predicts_better_and_the_baseline_used_where_not(space, reference, tmp_path):
    res = list(space.resolutions)
    archs = F.design_subnets(space, res, 20, reference=reference)
    held = sample(space, np.random.default_rng(9), 100)
    # A device like the reference, per op type: the transfer.
    truth = target_of(reference, space)
    table = _fitted(space, reference, archs, [truth(a) for a in archs], tmp_path)
    fs = table.header["few_shot"]
    assert fs["fit"]["compared"]["used"] == "transfer" and fs["ops"].startswith("transferred")
    assert table.ops == {op.key: reference.ops[op.key] for op in enumerate_ops(space, res)}
    assert within(table.predict(held), [truth(a) for a in held], 0.10) >= 0.95
    assert fs["fit"]["leave_one_out"]["n"] == 20 and (tmp_path / "fit.png").is_file()
    # A device whose latency follows MACs, which the reference's per-layer factors do not: the baseline.
    macs = lambda a: 2e-7 * arch_cost(space, a).macs + 0.2  # noqa: E731
    table = _fitted(space, reference, archs, [macs(a) for a in archs], tmp_path)
    fs = table.header["few_shot"]
    compared = fs["fit"]["compared"]
    assert compared["used"] == "baseline" and compared["baseline"] < compared["transfer"]
    assert fs["ops"].startswith("modelled") and fs["reference"]["name"] == "ref-device"
    assert within(table.predict(held), [macs(a) for a in held], 0.02) == 1.0


@pytest.mark.slow
def test_search_and_export_measure_take_a_few_shot_table_like_any_other(five, tiny_supernet, tmp_path):
    """`edgenas search` under a budget from the few-shot table: the results name it, and every
    subnet kept is predicted within the budget by the table itself. (--force: a tiny net's
    few-shot fit on a loaded machine may be marked unreliable; the file is what is tested.)
    Then `edgenas export --from` those results `--measure`s the file on the device the table
    was fitted for, against the few-shot table's own prediction."""
    out, _, _ = five
    table = LatencyTable.load(out)
    space = table.space()
    budget = float(np.median(table.predict(sample(space.replace(resolutions=(24,)), np.random.default_rng(0), 50))))
    results = tmp_path / "search.json"
    assert main(["-q", "search", "--supernet", str(tiny_supernet / "supernet.pt"), "--latency-table", str(out),
                 "--latency-ms", f"{budget:.4f}", "--resolutions", "24", "--strategy", "random",
                 "--accuracy", "proxy:naswot", "--evaluations", "12", "--force", "--out", str(results)]) == 0
    data = json.loads(results.read_text())
    assert data["top"] and str(out) in json.dumps(data)
    for row in data["top"]:
        assert table.predict(Arch.parse(row["arch"], space)) <= budget * (1 + 1e-6)

    from edgenas.export import load_card

    export = tmp_path / "export"
    assert main(["-q", "export", "--supernet", str(tiny_supernet / "supernet.pt"), "--from", str(results),
                 "--format", "onnx", "--out", str(export), "--latency-table", str(out), "--measure", str(LOCAL),
                 "--bn-images", "100", "--eval-images", "100"]) == 0
    card = load_card(export)
    best = Arch.parse(data["top"][0]["arch"], space)
    assert card["arch"] == str(best)
    (name, predicted), = card["latency"]["predicted_ms"].items()
    assert predicted == pytest.approx(float(table.predict(best)), rel=1e-6)
    assert card["latency"]["tables"][name] == table.header["device"]["profile_key"] == "local-cpu_onnxruntime-cpu_t1"
    measured = card["files"]["onnx"]["measured"]
    assert measured["device"] == "local-cpu" and measured["error"] is None and measured["median_ms"] > 0
    assert measured["predicted_ms"] == pytest.approx(predicted) and measured["table"] == name


@pytest.mark.slow
def test_ofa_note10_tables_as_the_reference(tmp_path, ofa_note10_dir):
    """OFA's published Note10 tables (a phone; mean statistic, no call overhead, space mbv3-w1.2)
    as the reference of a table for this machine: the space and resolutions come from them."""
    out = tmp_path / "n10.yaml"
    p = _cli(LOCAL, "--few-shot", "3", "--from-table", ofa_note10_dir, "--resolutions", "160", "--warmup", "1",
             "--runs", "3", "--out", out, "--json")
    assert p.returncode == 0, p.stderr
    h = _header(out)
    fs = h["few_shot"]
    assert h["space"]["name"] == "mbv3-w1.2" and h["resolutions"] == [160] and fs["k"] == 3
    assert fs["reference"]["device"] == "ofa-note10" and fs["reference"]["overhead_ms"] == 0.0
    assert h["statistic"] == ("mean" if fs["fit"]["compared"]["used"] == "transfer" else "median")
    table = LatencyTable.load(out)
    space = table.space()
    archs = sample(space.replace(resolutions=(160,)), np.random.default_rng(0), 10)
    assert np.all(table.predict(archs) > 0)
    assert np.allclose(table.predict(archs), table.predictor(space)(encode(space, archs)))
