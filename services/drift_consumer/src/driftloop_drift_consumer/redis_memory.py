"""Redis memory, exported so a person hears about it before ``maxmemory`` refuses writes.

Redis holds the join keys, the label claims and the watch rows with TTLs and evicts nothing
(``noeviction``, docs/operations.md): at sustained traffic it grows to a plateau set by the
TTLs, and at ``maxmemory`` every write fails (labels refused with 503, the loop paused). The
failure itself pages (``RedisUnavailable``), but by then the loop has stopped; this gives the
warning before: ``RedisMemoryHigh`` compares ``used_memory`` with ``maxmemory`` from
``INFO memory``, read by the drift consumer (the component that writes most of it) every
``redis_memory_poll_seconds``. No Prometheus exporter for Redis runs in the local stack, and
one ``INFO`` call every 15 s costs nothing.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from driftloop_service.retry import wait_or_stop

from .metrics import ConsumerMetrics

log = structlog.get_logger(__name__)


async def read_memory(client: Redis, metrics: ConsumerMetrics) -> None:
    """One ``INFO memory``: ``used_memory`` and ``maxmemory`` (0: unbounded) into the gauges."""
    info = await client.info("memory")
    metrics.redis_used_memory.set(float(info["used_memory"]))
    metrics.redis_max_memory.set(float(info.get("maxmemory", 0)))


async def run_memory_watch(
    client: Redis, metrics: ConsumerMetrics, stopping: asyncio.Event, interval_s: float
) -> None:
    """Read the memory figures until ``stopping``; a failed read is counted and retried at the
    next pass (the gauges keep their last value; Redis down pages on its own)."""
    while True:
        try:
            await read_memory(client, metrics)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, KeyError, ValueError) as exc:
            metrics.sink_failures.labels("redis_memory").inc()
            log.warning("redis_memory_read_failed", error=str(exc))
        if await wait_or_stop(stopping, interval_s):
            return
