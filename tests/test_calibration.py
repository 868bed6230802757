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
