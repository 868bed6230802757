"""The calibration line cannot lie: positive, growing predictions, and a check that says when the
calibration subnets' measurements do not support a table."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenas.latency.calibration import MARGIN, Calibration, assess_calibration, fit_calibration

positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.just(0.0) | positive, positive), min_size=1, max_size=30),
       st.just(0.0) | st.floats(1e-6, 1.0), st.just(0.0) | positive)
def test_any_calibration_predicts_positive_latency_that_grows_with_the_layers(points, smallest_share, overhead):
    raw, measured = map(np.array, zip(*points))
    smallest = smallest_share * raw.min()  # the space's smallest subnet sums at most what any fitted one does
    cal = fit_calibration(raw, measured, overhead_ms=overhead, smallest_raw_ms=smallest)
    assert cal.scale > 0 and np.isfinite(cal.offset_ms)
    grid = np.linspace(smallest, max(raw.max(), 1e-3) * 2, 50)
    pred = cal.apply(grid)
    assert np.all(np.diff(pred) > 0)
    floor = max(0.5 * cal.scale * smallest, overhead)
    assert cal.apply(smallest) >= floor * (1 - 1e-9)
    if smallest > 0 or overhead > 0:
        assert cal.apply(smallest) > 0


def test_layers_all_under_the_call_overhead_still_predict_one_call():
    # Under load every layer of a tiny space can measure at or below the one-ReLU model, so the
    # summed layers are 0: the prediction is then the per-call overhead, not 0 (issue #17's flaky test).
    cal = fit_calibration([0.0, 0.0, 0.01], [0.05, 0.06, 0.07], overhead_ms=0.04, smallest_raw_ms=0.0)
    assert cal.apply(0.0) >= 0.04 and cal.scale > 0
    # Measurements below the overhead: held on the floor, not below it.
    cal = fit_calibration([0.0, 0.0, 0.01], [0.01, 0.012, 0.02], overhead_ms=0.04, smallest_raw_ms=0.0)
    assert cal.apply(0.0) == pytest.approx(0.04) and cal.scale > 0


def test_a_line_that_would_go_below_zero_is_held_on_the_boundary():
    # Two subnets whose line crosses zero above the smallest subnet: today's cause of a negative
    # prediction for the smallest mbv3-tiny subnet (tests/test_profile_local.py, issue #17).
    raw, measured = np.array([1.0, 2.0]), np.array([0.5, 3.0])
    free = np.polyfit(raw, measured, 1)
    assert np.polyval(free, 0.3) < 0  # the unconstrained line would predict a negative latency
    cal = fit_calibration(raw, measured, 0.0, smallest_raw_ms=0.3)
    assert cal.apply(0.3) == pytest.approx(0.5 * cal.scale * 0.3)
    assert cal.scale > 0


def test_a_good_line_is_left_alone():
    raw = np.linspace(1.0, 5.0, 12)
    cal = fit_calibration(raw, 1.3 * raw + 0.4, overhead_ms=0.05, smallest_raw_ms=0.8)
    assert cal.scale == pytest.approx(1.3) and cal.offset_ms == pytest.approx(0.4)


def test_noise_gets_a_positive_scale_and_an_unreliable_verdict():
    # What 2 threads gave on a busy 2-core machine: measurements unrelated to the summed layers.
    rng = np.random.default_rng(0)
    raw = rng.uniform(2.0, 6.0, 24)
    measured = rng.uniform(2.75, 6.1, 24)
    repeat = measured * rng.uniform(0.7, 1.3, 24)
    cal = fit_calibration(raw, measured, 0.0, smallest_raw_ms=1.5)
    assert cal.scale > 0
    check = assess_calibration(raw, measured, cal, repeat)
    assert not check.reliable
    text = " ".join(check.reasons)
    assert "Spearman" in text and "moved by more than" in text
    header = check.to_header()
    assert header["reliable"] is False and header["reasons"] == check.reasons and "threads" in header["advice"]
    assert len(check.warning("t")) < 600 and "\n" not in check.warning("t")


def test_a_quiet_device_is_reliable():
    rng = np.random.default_rng(1)
    raw = rng.uniform(2.0, 6.0, 24)
    measured = 1.1 * raw + 0.2 + rng.normal(0, 0.02, 24)
    cal = fit_calibration(raw, measured, 0.0)
    check = assess_calibration(raw, measured, cal, measured * rng.uniform(0.98, 1.02, 24))
    assert check.reliable and check.reasons == [] and check.spearman > 0.95 and check.within == 1.0
    assert check.unstable == 0.0 and check.repeat_spread < 0.03


def test_each_check_fails_alone():
    raw = np.linspace(1.0, 4.0, 20)
    measured = 2.0 * raw
    cal = Calibration(0.0, 2.0, 0.0)
    # Repeats that move by more than the margin on a quarter of the subnets.
    repeat = measured.copy()
    repeat[:5] *= 1 + 2 * MARGIN
    check = assess_calibration(raw, measured, cal, repeat)
    assert len(check.reasons) == 1 and "moved" in check.reasons[0] and check.unstable == 0.25
    repeat[:1] = measured[:1]  # 4 of 20: below the limit
    assert assess_calibration(raw, measured, cal, repeat).reliable
    # A line that does not hold the points, though their order is right.
    check = assess_calibration(raw, measured, Calibration(0.0, 2.6, 0.0), measured)
    assert len(check.reasons) == 1 and "within" in check.reasons[0]
    # Order reversed within the margin of nothing.
    check = assess_calibration(raw, measured[::-1], cal, None)
    assert any("Spearman" in r for r in check.reasons)


def test_too_few_subnets_are_not_judged():
    check = assess_calibration([1.0, 2.0], [1.0, 5.0], Calibration(), [2.0, 1.0])
    assert check.reliable and check.to_header()["checked_on"] == 2 and check.spearman is None


# ---- the per-type correction ---------------------------------------------------------------

from edgenas.latency.calibration import (MIN_SLOPE_SHARE, PER_TYPE_MIN_NETS, SMALLEST_FLOOR,  # noqa: E402
                                         choose_calibration, fit_per_type, op_type)


def _per_type_data(true_scales, n, noise, seed=0, offset=0.3):
    """Calibration subnets of mbv3-w1.0 over its resolutions on a MACs-proportional table, their
    'measurements' made with known per-type scales (1.0 for types not named)."""
    from edgenas.latency.ops import enumerate_ops
    from edgenas.latency.table import LatencyTable, entry
    from edgenas.space import load_space, sample, smallest

    space = load_space("mbv3-w1.0")
    table = LatencyTable.create(space, "synthetic")
    for op in enumerate_ops(space):
        ms = op.macs / 1e7 + 0.01
        table.set(op.key, entry(ms, ms, 0.0, 1))
    rng = np.random.default_rng(seed)
    archs = sample(space, rng, n)
    sums = [table.type_sums(a) for a in archs]
    measured = np.array([sum(true_scales.get(t, 1.0) * v for t, v in s.items()) + offset for s in sums])
    measured *= rng.normal(1.0, noise, n)
    low = [smallest(space, r) for r in space.resolutions]
    smallest_raw = min(table.predict_raw(a) for a in low)
    line = fit_calibration([sum(s.values()) for s in sums], measured, 0.0, smallest_raw_ms=smallest_raw)
    return sums, measured, line, [table.type_sums(a) for a in low], smallest_raw


def test_op_types_follow_what_the_layers_are():
    from edgenas.space import arch_ops, largest, load_space

    space = load_space("mbv3-tiny")
    types = [op_type(op) for op in arch_ops(space, largest(space))]
    assert types[:2] == ["stem", "first_block"] and types[-4:] == ["final_expand", "head", "head", "head"]
    # mbv3-tiny's units: relu, relu+SE, hswish, hswish+SE, hswish+SE; largest() takes kernel 7
    assert set(types[2:-4]) == {"mbconv-k7-relu", "mbconv-k7-relu-se", "mbconv-k7-hswish", "mbconv-k7-hswish-se"}


def test_per_type_fit_recovers_known_scales():
    true = {"mbconv-k3-relu": 0.7, "mbconv-k5-hswish-se": 1.4, "mbconv-k7-hswish-se": 0.85, "mbconv-k7-relu-se": 1.25}
    sums, measured, line, low, smallest_raw = _per_type_data(true, 80, noise=0.002)
    choice = choose_calibration(sums, measured, line, low, smallest_raw_ms=smallest_raw)
    assert choice.used and choice.cv_per_type < 0.5 * choice.cv_line and choice.n == 80
    for t, s in true.items():
        assert choice.scales[t] == pytest.approx(s, rel=0.05), t
    # The types measured as they are stay near 1: the line's scale does not leak into them.
    for t in ("mbconv-k3-hswish", "mbconv-k5-relu", "mbconv-k7-hswish"):
        assert choice.scales[t] == pytest.approx(1.0, rel=0.05), t
    cal = choice.calibration(line)
    pred = [cal.predict_sums(s) for s in sums]
    assert np.max(np.abs(np.array(pred) / measured - 1)) < 0.02


def test_per_type_falls_back_to_the_line_when_it_does_not_help():
    # One factor for every type: the line already says everything, per type only adds variance.
    sums, measured, line, low, smallest_raw = _per_type_data({}, 24, noise=0.02, seed=3)
    choice = choose_calibration(sums, measured, line, low, smallest_raw_ms=smallest_raw)
    assert not choice.used and choice.decision.startswith("the line: leave-one-out error")
    assert choice.cv_line is not None and choice.cv_per_type is not None
    assert choice.calibration(line) is line
    header = choice.to_header()
    assert header["used"] is False and header["cv_line"] == round(choice.cv_line, 6) and header["scales"]
    # Too few subnets: not even tried.
    few = choose_calibration(sums[:PER_TYPE_MIN_NETS - 1], measured[:PER_TYPE_MIN_NETS - 1], line, low)
    assert not few.used and few.cv_line is None and f"needs at least {PER_TYPE_MIN_NETS}" in few.decision
    assert "scales" not in few.to_header()


def test_a_per_type_calibration_round_trips_through_the_header():
    sums, measured, line, low, smallest_raw = _per_type_data({"mbconv-k7-relu-se": 1.5}, 30, noise=0.002)
    choice = choose_calibration(sums, measured, line, low, smallest_raw_ms=smallest_raw)
    assert choice.used
    header = {"calibration": {"overhead_ms": line.overhead_ms, "scale": line.scale, "offset_ms": line.offset_ms,
                              "per_type": choice.to_header()}}
    back = Calibration.from_header(header)
    assert back.per_type and back.type_scales == choice.scales and back.offset_ms == choice.offset_ms
    assert back.scale == line.scale and back.layer_scale("no-such-type") == line.scale
    with pytest.raises(ValueError, match="per-type"):
        back.apply(1.0)
    header["calibration"]["per_type"]["used"] = False  # recorded but not chosen: the line
    assert Calibration.from_header(header) == line


layer_sums = st.lists(st.floats(0.0, 50.0), min_size=3, max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(layer_sums, positive), min_size=2, max_size=20),
       st.lists(layer_sums, min_size=1, max_size=3), st.just(0.0) | st.floats(1e-4, 5.0),
       st.floats(0.0, 10.0))
def test_any_per_type_fit_is_positive_monotone_and_holds_the_floor(points, floors, overhead, shrink):
    x, measured = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    floor = np.minimum(np.array(floors), x.min(0))  # the smallest subnets sum at most what any fitted one does
    raw = x.sum(1)
    line = fit_calibration(raw, measured, overhead, smallest_raw_ms=float(floor.sum(1).min()))
    scales, offset = fit_per_type(x, measured, line, floor, shrink)
    assert np.all(np.isfinite(scales)) and np.isfinite(offset)
    # Positive scales: a prediction grows with every layer.
    assert np.all(scales >= MIN_SLOPE_SHARE * line.scale * (1 - 1e-12)) and np.all(scales > 0)
    for row in floor:
        scaled = float(row @ scales)
        assert scaled + offset >= max(SMALLEST_FLOOR * scaled, overhead) - 1e-9 * max(1.0, abs(offset))
    assert np.all(x @ scales + offset >= -1e-9)  # each fitted subnet sums at least a floor row's layers
