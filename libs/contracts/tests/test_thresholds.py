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
