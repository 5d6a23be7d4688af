"""The in-process prediction cache: keys (version + exact values), LRU eviction, counters."""

from __future__ import annotations

import pytest

from driftloop_contracts import EXAMPLE_FEATURES, FEATURE_NAMES
from driftloop_model_api.cache import PredictionCache
from driftloop_model_api.metrics import Metrics

ROW = [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]


def counts(metrics: Metrics) -> dict[str, float]:
    return {r: metrics.value("driftloop_cache_requests_total", result=r) for r in ("hit", "miss")}


def test_miss_then_hit_and_every_look_up_is_counted() -> None:
    metrics = Metrics("r")
    cache = PredictionCache(metrics, max_entries=10)
    assert cache.get("1", ROW) is None
    cache.put("1", ROW, 123.5)
    assert cache.get("1", list(ROW)) == 123.5
    assert counts(metrics) == {"hit": 1, "miss": 1}


def test_key_is_the_version_and_the_exact_values() -> None:
    cache = PredictionCache(Metrics("r"), max_entries=10)
    cache.put("1", ROW, 1.0)
    assert cache.get("2", ROW) is None  # a promotion never serves the old champion's answer
    assert cache.get("1", [ROW[0] + 1e-9, *ROW[1:]]) is None
    cache.put("1", [41, 0.0, 1], 2.0)
    assert cache.get("1", [41.0, -0.0, 1.0]) == 2.0  # int/float and signed zero agree


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = PredictionCache(Metrics("r"), max_entries=2)
    cache.put("1", [1.0], 1.0)
    cache.put("1", [2.0], 2.0)
    assert cache.get("1", [1.0]) == 1.0  # now [2.0] is the least recently used
    cache.put("1", [3.0], 3.0)
    assert len(cache) == 2
    assert cache.get("1", [2.0]) is None
    assert cache.get("1", [1.0]) == 1.0 and cache.get("1", [3.0]) == 3.0


def test_zero_entries_is_off_and_a_negative_size_is_refused() -> None:
    assert not PredictionCache(Metrics("r"), max_entries=0).enabled
    with pytest.raises(ValueError):
        PredictionCache(Metrics("r"), max_entries=-1)
