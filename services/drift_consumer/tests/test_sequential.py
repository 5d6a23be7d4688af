"""sequential.py: the CUSUM recursion, batch-boundary independence, calibration, detection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftloop_drift_consumer.sequential import (
    CusumDesign,
    SequentialDetector,
    alarm_positions,
    calibrate_threshold,
    calibrated_design,
    cusum_path,
)

from .conftest import ReferenceData

#: A small ERT keeps the calibration test fast while it still sees ~100 false alarms.
TEST_ERT = 2_000.0


@pytest.fixture(scope="module")
def design(reference: ReferenceData) -> CusumDesign:
    return calibrate_threshold(
        CusumDesign.from_reference(reference.compiled, 0.5), TEST_ERT, paths=96, seed=3
    )


def stationary(reference: ReferenceData, n: int, seed: int) -> np.ndarray:
    """Bin indices of rows drawn with replacement from the reference data (no drift)."""
    rng = np.random.default_rng(seed)
    rows = reference.values[rng.integers(0, len(reference.values), n)]
    return reference.compiled.bin_index(rows)


def shifted(reference: ReferenceData, n: int, seed: int, sd: float = 0.5) -> np.ndarray:
    """Rows with median income moved by ``sd`` of its standard deviation (and the synthetic
    prediction, a function of income, recomputed)."""
    rng = np.random.default_rng(seed)
    rows = reference.values[rng.integers(0, len(reference.values), n)].copy()
    delta = sd * reference.values[:, 0].std()
    rows[:, 0] += delta
    rows[:, -1] += 40_000 * delta
    return reference.compiled.bin_index(rows)


def test_closed_form_equals_the_recursion() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(-0.1, 1.0, (500, 3))
    start = np.array([0.0, 2.0, 5.0])
    expected = np.empty_like(x)
    s = start.copy()
    for t in range(len(x)):
        s = np.maximum(0.0, s + x[t])
        expected[t] = s
    np.testing.assert_allclose(cusum_path(x, start), expected, atol=1e-9)


def test_ratios_are_negative_on_average_under_the_reference(design: CusumDesign) -> None:
    # E_p[ln q/p] = -KL(p||q) < 0: the CUSUM drifts down while nothing changes.
    drift = (design.shares[:, None, :] * design.llr).sum(axis=2)
    assert (drift < 0).all(), drift


def test_batch_boundaries_do_not_change_the_state(
    reference: ReferenceData, design: CusumDesign
) -> None:
    idx = np.concatenate([stationary(reference, 3_000, 1), shifted(reference, 500, 2)])
    whole = SequentialDetector(design, "1")
    first = whole.update(idx)
    pieces = SequentialDetector(design, "1")
    starts = []
    for lo in range(0, len(idx), 137):
        hit = pieces.update(idx[lo : lo + 137])
        if hit is not None:
            starts.append(lo + hit)
    np.testing.assert_allclose(pieces.state, whole.state)
    assert first is not None and starts and starts[0] == first == whole.alarm_at


def test_false_alarm_rate_matches_the_calibrated_ert(
    reference: ReferenceData, design: CusumDesign
) -> None:
    """Run length between false alarms on 300,000 stationary events (restart after each).

    At the calibrated ERT of 2,000 that is 150 alarms expected if the estimate were exact;
    series correlated in the data (income and prediction) only make alarms rarer. A Poisson
    count of mean 150 exceeds 225 (5 standard deviations above) with probability < 1e-6, so
    the assertion is ERT >= 0.66 x target; and the threshold is not wastefully high if the
    measured ERT stays below 5 x target.
    """
    n = 300_000
    alarms = alarm_positions(design, stationary(reference, n, seed=11))
    measured = n / max(len(alarms), 1)
    assert len(alarms) <= 225, f"{len(alarms)} false alarms: ERT {measured:.0f} < {TEST_ERT}"
    assert measured <= 5 * TEST_ERT, f"ERT {measured:.0f}: threshold far too conservative"


def test_a_half_sd_shift_is_detected_quickly(reference: ReferenceData, design: CusumDesign) -> None:
    delays = []
    for trial in range(40):
        detector = SequentialDetector(design, "1")
        detector.update(stationary(reference, 300, seed=100 + trial))
        if detector.in_alarm:
            continue  # a false alarm before the shift (rare at ERT 2,000)
        hit = detector.update(shifted(reference, 1_000, seed=200 + trial))
        delays.append(hit if hit is not None else math.inf)
    assert len(delays) >= 35
    assert np.median(delays) < 120, sorted(delays)
    assert max(delays) < 1_000, sorted(delays)


def test_state_survives_until_a_switch_and_restarts_after_it(
    reference: ReferenceData, design: CusumDesign
) -> None:
    detector = SequentialDetector(design, "1")
    detector.update(shifted(reference, 2_000, seed=5))
    assert detector.in_alarm and detector.alarms == 1
    assert detector.update(shifted(reference, 100, seed=6)) is None  # still the same alarm
    assert SequentialDetector(design, "2").per_series().max() == 0.0


def test_calibrated_design_is_cached_by_content(reference: ReferenceData) -> None:
    a = calibrated_design(reference.compiled, 0.5, 500.0)
    b = calibrated_design(reference.compiled, 0.5, 500.0)
    assert a.threshold == b.threshold and a.ert == 500.0
    with pytest.raises(ValueError):
        calibrate_threshold(a, 1.0)
