"""Cache keys (version + canonical features) and the bypass on Redis failure."""

from __future__ import annotations

import asyncio
from typing import Any

from driftloop_contracts import EXAMPLE_FEATURES, FEATURE_NAMES
from driftloop_model_api.cache import PredictionCache, cache_key, canonical_features
from driftloop_model_api.metrics import Metrics

ROW = [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]


def test_key_depends_on_version_and_values_only() -> None:
    base = cache_key("m", "1", ROW)
    assert base == cache_key("m", "1", list(ROW))
    assert base != cache_key("m", "2", ROW)
    assert base != cache_key("other", "1", ROW)
    assert base != cache_key("m", "1", [ROW[0] + 1e-9, *ROW[1:]])
    assert base.startswith("driftloop:prediction:m:1:")


def test_canonical_text_treats_int_float_and_signed_zero_alike() -> None:
    assert canonical_features([41, 0.0, 1]) == canonical_features([41.0, -0.0, 1.0])
    assert canonical_features([1.0, 2.0]) != canonical_features([2.0, 1.0])


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.down = False
        self.calls = 0

    async def get(self, name: str) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionError("redis down")
        return self.data.get(name)

    async def set(self, name: str, value: Any, ex: int | None = None) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionError("redis down")
        self.data[name] = value.encode() if isinstance(value, str) else value
        return True

    async def aclose(self) -> None:
        return None


async def test_miss_then_hit_then_bypass_while_down_then_recover() -> None:
    now = [0.0]
    redis = FakeRedis()
    metrics = Metrics("r")
    cache = PredictionCache(
        redis, metrics, ttl_s=60, timeout_s=0.5, retry_after_s=5, clock=lambda: now[0]
    )
    key = cache_key("m", "1", ROW)
    assert await cache.get(key) is None
    cache.put(key, 123.5)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get(key) == 123.5
    redis.down = True
    assert await cache.get(key) is None
    calls = redis.calls
    assert await cache.get(key) is None  # bypassed: Redis not even asked
    assert redis.calls == calls and not cache.available
    redis.down = False
    now[0] += 6
    assert await cache.get(key) == 123.5
    values = {
        r: metrics.value("driftloop_cache_requests_total", result=r)
        for r in ("hit", "miss", "error")
    }
    assert values == {"hit": 2, "miss": 1, "error": 2}


async def test_slow_redis_counts_as_error_within_the_budget() -> None:
    class Slow(FakeRedis):
        async def get(self, name: str) -> Any:
            await asyncio.sleep(5)

    cache = PredictionCache(Slow(), Metrics("r"), ttl_s=60, timeout_s=0.05, retry_after_s=5)
    started = asyncio.get_running_loop().time()
    assert await cache.get("k") is None
    assert asyncio.get_running_loop().time() - started < 1
