"""thresholds.py: defaults, override names and values, and the effective lookup (no Redis)."""

from __future__ import annotations

import pytest

from driftloop_contracts import DEFAULT_THRESHOLDS, STATISTICS
from driftloop_contracts.thresholds import (
    GLOBAL_STATISTICS,
    SERIES_STATISTICS,
    ThresholdError,
    ThresholdSet,
    field_name,
    parse_value,
)


def test_every_statistic_has_a_default_and_one_scope() -> None:
    assert set(DEFAULT_THRESHOLDS) == set(STATISTICS)
    assert set(SERIES_STATISTICS) | set(GLOBAL_STATISTICS) == set(STATISTICS)
    assert not set(SERIES_STATISTICS) & set(GLOBAL_STATISTICS)


def test_bad_fields_in_redis_are_ignored_not_fatal() -> None:
    t, problems = ThresholdSet.from_hash({b"psi": b"0.3", b"bogus": b"1", b"ks": b"x"})
    assert t.overrides == {"psi": 0.3}
    assert len(problems) == 2


@pytest.mark.parametrize(("value", "expected"), [("0.3", 0.3), (b"1.5", 1.5), (0, 0.0), (2, 2.0)])
def test_values_from_redis_or_the_cli_are_parsed(value: object, expected: float) -> None:
    assert parse_value(value) == expected


@pytest.mark.parametrize("value", ["abc", b"\xff", None, [1.0], float("inf"), -0.1])
def test_a_value_that_is_not_a_finite_non_negative_number_is_refused(value: object) -> None:
    with pytest.raises(ThresholdError):
        parse_value(value)


def test_field_names() -> None:
    assert field_name("psi") == "psi"
    assert field_name("psi", "prediction") == "psi:prediction"
    with pytest.raises(ThresholdError, match="not per feature"):
        field_name("rmse_ratio", "prediction")


def test_thresholds_widen_for_a_reference_smaller_than_the_calibration_one() -> None:
    """Variance of a statistic ~ 1/window + 1/reference: PSI widens by that ratio against the
    calibration's (200-event windows, 5,000-row sample), KS and Wasserstein by its root."""
    from driftloop_contracts import (
        CALIBRATION_WINDOW_EVENTS,
        REFERENCE_SAMPLE_ROWS,
        reference_widening,
    )

    w, n0 = 1 / CALIBRATION_WINDOW_EVENTS, 1 / REFERENCE_SAMPLE_ROWS
    ratio = (w + 1 / 300) / (w + n0)
    assert reference_widening("psi", 300) == pytest.approx(ratio)
    assert reference_widening("ks", 300) == pytest.approx(ratio**0.5)
    assert reference_widening("wasserstein", 300) == pytest.approx(ratio**0.5)
    assert 1.26 < reference_widening("ks", 300) < 1.27
    for stat in ("psi", "ks", "wasserstein"):
        assert reference_widening(stat, REFERENCE_SAMPLE_ROWS) == 1.0
        assert reference_widening(stat, 20_000) == 1.0  # never narrower than configured
        sizes = (10, 100, 300, 1000, 4999)
        factors = [reference_widening(stat, n) for n in sizes]
        assert factors == sorted(factors, reverse=True) and factors[-1] > 1.0
    for stat in ("drift_share", "rmse_ratio"):
        assert reference_widening(stat, 300) == 1.0
