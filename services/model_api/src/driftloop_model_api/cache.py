"""Redis cache of predictions, keyed by model version and the canonical feature values.

The key carries the model name and version, so a promotion can never serve the previous
champion's answer: the new version simply misses and recomputes. Redis is an optimisation,
never a dependency: every call has a short time budget, and after a failure the cache is
bypassed for ``retry_after_s`` (no request pays for a dead Redis twice in a row), then tried
again. Failures and bypasses are counted as ``result="error"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from driftloop_contracts.redis_keys import PREDICTION_CACHE_PREFIX

from .metrics import Metrics

log = structlog.get_logger(__name__)

KEY_PREFIX = PREDICTION_CACHE_PREFIX


class RedisLike(Protocol):
    """The slice of ``redis.asyncio.Redis`` used here (which returns awaitables, not coroutines)."""

    def get(self, name: str) -> Awaitable[bytes | str | None]: ...

    def set(self, name: str, value: str, ex: int | None = None) -> Awaitable[object]: ...

    async def aclose(self) -> None: ...


def canonical_features(row: Sequence[float]) -> str:
    """Exact, order-fixed text of the values: ``41`` and ``41.0`` (and ``-0.0``/``0.0``) agree."""
    return ",".join(repr(float(v) + 0.0) for v in row)


def cache_key(model_name: str, model_version: str, row: Sequence[float]) -> str:
    """``driftloop:prediction:<model>:<version>:<blake2b of the canonical features>``."""
    digest = hashlib.blake2b(canonical_features(row).encode(), digest_size=16).hexdigest()
    return f"{KEY_PREFIX}:{model_name}:{model_version}:{digest}"


class PredictionCache:
    """Get/set predictions (USD) with a TTL; any Redis problem means "no cache" for a while."""

    def __init__(
        self,
        client: RedisLike | None,
        metrics: Metrics,
        *,
        ttl_s: int,
        timeout_s: float,
        retry_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_pending_writes: int = 1_000,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._retry_after = retry_after_s
        self._clock = clock
        self._down_until = 0.0
        self._max_pending = max_pending_writes
        self._pending: set[asyncio.Task[None]] = set()
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def available(self) -> bool:
        return self._client is not None and self._clock() >= self._down_until

    async def get(self, key: str) -> float | None:
        """The cached USD value, or ``None`` on a miss or any Redis problem."""
        if self._client is None:
            return None
        if not self.available:
            self._metrics.cache("error")
            return None
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._client.get(key)
        except Exception as exc:
            self._fail(exc)
            self._metrics.cache("error")
            return None
        if raw is None:
            self._metrics.cache("miss")
            return None
        try:
            value = float(raw)
        except ValueError:  # not ours or corrupted: recompute and overwrite
            self._metrics.cache("miss")
            return None
        self._metrics.cache("hit")
        return value

    def put(self, key: str, value: float) -> None:
        """Store in the background; the response does not wait for Redis."""
        if not self.available or len(self._pending) >= self._max_pending:
            return
        task = asyncio.create_task(self._set(key, value))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _set(self, key: str, value: float) -> None:
        assert self._client is not None
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.set(key, repr(value), ex=self._ttl)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        first = self._clock() >= self._down_until
        self._down_until = self._clock() + self._retry_after
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first:
            log.warning("cache_bypassed", error=self.last_error, retry_after_s=self._retry_after)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=1)
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:  # closing a broken connection must not fail shutdown
                log.debug("cache_close_failed", error=str(exc))


def redis_client(url: str, timeout_s: float) -> RedisLike:
    """An asyncio Redis client that fails fast (our own bypass replaces its retries)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
