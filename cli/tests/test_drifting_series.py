"""observe.drifting_series: windowed gauges and the sequential detector's latch, one list."""

from __future__ import annotations

from typing import Any

import pytest

from driftloop_cli import observe
from driftloop_contracts.thresholds import SEQUENTIAL_STATISTIC

#: Never contacted: the tests answer every query themselves.
ENDPOINTS = observe.Endpoints("", "", "", "", "", "", "", [], "")


def sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Prometheus' answers by query (what the real one returns for the stack's series)."""
    table: dict[str, list[dict[str, Any]]] = {}

    def fake(ep: Any, query: str) -> list[dict[str, Any]]:
        return table.get(query, [])

    monkeypatch.setattr(observe, "prom_query", fake)
    return table


def test_the_sequential_peak_over_its_level_counts_as_drift_before_any_window(
    answers: dict[str, list[dict[str, Any]]],
) -> None:
    """The CUSUM crosses first (seconds after onset); the timeline's "drift detected" must not
    wait for two windows when the alert that triggers the run is the sequential one."""
    answers[observe.SEQUENTIAL_OVER_LEVEL.format(sel='model_version="3"')] = [
        sample(30.0, feature="block_latitude")
    ]
    answers[observe.SEQUENTIAL_LEVEL] = [sample(22.4)]
    series = observe.drifting_series(ENDPOINTS, "3")
    assert series == [
        {
            "feature": "block_latitude",
            "statistic": SEQUENTIAL_STATISTIC,
            "value": 30.0,
            "threshold": 22.4,
        }
    ]


def test_windowed_and_sequential_series_are_ranked_by_their_ratio_to_the_threshold(
    answers: dict[str, list[dict[str, Any]]],
) -> None:
    answers[observe.DRIFT_OVER_THRESHOLD.format(sel="")] = [
        sample(0.5, feature="median_income_in_block", statistic="psi")
    ]
    answers["driftloop_drift_threshold"] = [
        sample(0.1, feature="median_income_in_block", statistic="psi")
    ]
    answers[observe.SEQUENTIAL_OVER_LEVEL.format(sel="")] = [sample(30.0, feature="x")]
    answers[observe.SEQUENTIAL_LEVEL] = [sample(25.0)]
    series = observe.drifting_series(ENDPOINTS)
    assert [(s["statistic"], s["value"] / s["threshold"]) for s in series] == [
        ("psi", 5.0),
        (SEQUENTIAL_STATISTIC, 1.2),
    ]


def test_nothing_over_is_an_empty_list(answers: dict[str, list[dict[str, Any]]]) -> None:
    assert observe.drifting_series(ENDPOINTS, "3") == []
