"""The watch's pure core: the error sums, the rule (margin, minimum rows, end of the watch) and
the decision's record. No I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from driftloop_contracts import ROLLBACK_REASON_PREFIX, WATCH_DECISION_TAG_PREFIX
from driftloop_drift_consumer.feedback_join import LabelledRow, StoredPrediction, join
from driftloop_drift_consumer.watch import (
    Decision,
    ErrorSums,
    Outcome,
    Pair,
    WatchPolicy,
    decide,
    watch_rows,
)

from .conftest import T0, feedback_event, prediction_event

POLICY = WatchPolicy(rmse_margin=0.05, min_rows=200)


def sums_with_ratio(ratio: float, rows: int = 200) -> ErrorSums:
    """``rows`` rows where the champion's error is ``ratio`` times the shadow's."""
    return ErrorSums.of([(1000.0 * ratio, 1000.0)] * rows)


def test_sums_give_the_direct_rmse_and_mae() -> None:
    rng = np.random.default_rng(0)
    c, s = rng.normal(0, 40_000, 500), rng.normal(5_000, 30_000, 500)
    sums = ErrorSums.of(zip(c.tolist(), s.tolist(), strict=True))
    assert sums.rows == 500
    assert sums.champion_rmse == pytest.approx(math.sqrt(np.mean(c**2)), rel=1e-12)
    assert sums.shadow_rmse == pytest.approx(math.sqrt(np.mean(s**2)), rel=1e-12)
    assert sums.champion_mae == pytest.approx(np.mean(np.abs(c)), rel=1e-12)
    assert sums.shadow_mae == pytest.approx(np.mean(np.abs(s)), rel=1e-12)


def test_a_worse_champion_is_rolled_back_at_once_on_enough_rows() -> None:
    assert decide(sums_with_ratio(1.2), POLICY, watch_over=False) is Outcome.ROLLED_BACK


def test_too_few_rows_never_roll_back() -> None:
    assert decide(sums_with_ratio(3.0, rows=199), POLICY, watch_over=False) is None
    # ...and at the end of the watch too few rows is no evidence: kept
    assert decide(sums_with_ratio(3.0, rows=199), POLICY, watch_over=True) is Outcome.KEPT


def test_within_the_margin_is_kept_when_the_watch_ends() -> None:
    worse_by_4 = sums_with_ratio(1.04)
    assert decide(worse_by_4, POLICY, watch_over=False) is None
    assert decide(worse_by_4, POLICY, watch_over=True) is Outcome.KEPT


def test_the_margin_is_strict() -> None:
    # exactly 5 % worse is not "worse by more than 5 %" (1050 vs 1000 is exact in binary)
    assert decide(sums_with_ratio(1.05), POLICY, watch_over=False) is None
    assert decide(sums_with_ratio(1.0501), POLICY, watch_over=False) is Outcome.ROLLED_BACK


def test_a_better_champion_is_kept_only_at_the_end() -> None:
    better = sums_with_ratio(0.5, rows=5000)
    assert decide(better, POLICY, watch_over=False) is None
    assert decide(better, POLICY, watch_over=True) is Outcome.KEPT


def _row(request_id: str, prediction: float, shadow: float | None, actual: float) -> LabelledRow:
    event = prediction_event(request_id, [1.0] * 8 + [prediction], version="2")
    stored = StoredPrediction.from_event(event)
    if shadow is not None:
        stored = StoredPrediction.from_json(
            stored.to_json()[:-1] + f',"shadow_version":"1","shadow":{shadow}}}'
        )
    return join(stored, feedback_event(request_id, actual))


def test_rows_without_a_shadow_are_not_part_of_a_watch() -> None:
    rows = [_row("a", 110.0, 95.0, 100.0), _row("b", 120.0, None, 100.0)]
    picked = watch_rows(rows)
    assert list(picked) == [Pair("2", "1")]
    [only] = picked[Pair("2", "1")]
    assert (only.request_id, only.champion_error, only.shadow_error) == ("a", 10.0, -5.0)


def test_the_shadow_travels_from_the_event_through_the_join_store() -> None:
    event = prediction_event("r", [1.0] * 8 + [110.0], version="2").model_copy(
        update={"shadow_model_version": "1", "shadow_prediction": 95.0}
    )
    stored = StoredPrediction.from_json(StoredPrediction.from_event(event).to_json())
    assert (stored.shadow_model_version, stored.shadow_prediction) == ("1", 95.0)
    row = join(stored, feedback_event("r", 100.0))
    assert (row.shadow_model_version, row.shadow_prediction) == ("1", 95.0)
    # outside a watch nothing extra is stored
    plain = StoredPrediction.from_event(prediction_event("p", [1.0] * 9))
    assert "shadow" not in plain.to_json()
    assert StoredPrediction.from_json(plain.to_json()).shadow_model_version is None


def test_the_decision_round_trips_and_tags_both_figures() -> None:
    sums = ErrorSums.of([(30_000.0, 20_000.0)] * 250)
    d = Decision(
        Outcome.ROLLED_BACK, Pair("2", "1"), sums, 0.05, 200, datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert Decision.from_json(d.to_json()) == d
    assert d.reason().startswith(ROLLBACK_REASON_PREFIX)
    assert "30,000" in d.reason() and "20,000" in d.reason() and "250" in d.reason()
    tags = d.tags()
    p = WATCH_DECISION_TAG_PREFIX
    assert tags[f"{p}.outcome"] == "rolled_back"
    assert tags[f"{p}.rows"] == "250"
    assert tags[f"{p}.champion_rmse_usd"] == "30000.00"
    assert tags[f"{p}.shadow_rmse_usd"] == "20000.00"
    assert (tags[f"{p}.champion"], tags[f"{p}.shadow"]) == ("2", "1")
    # written in this order, one tag at a time: whoever sees the outcome sees every figure
    assert list(tags)[-1] == f"{p}.outcome"


def test_no_rows_tags_empty_figures_not_nan() -> None:
    d = Decision(Outcome.KEPT, Pair("2", "1"), ErrorSums(), 0.05, 200, T0)
    assert d.tags()[f"{WATCH_DECISION_TAG_PREFIX}.champion_rmse_usd"] == ""
    assert "0 labelled rows" in d.summary()
