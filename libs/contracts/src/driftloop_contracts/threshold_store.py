"""The threshold overrides in Redis: read, set and reset the hash :data:`THRESHOLDS_REDIS_KEY`.

The CLI (``driftloop thresholds show|set|reset``) calls the synchronous functions; the drift
consumer's watcher awaits :func:`fetch_thresholds` with its own ``redis.asyncio`` client::

    from driftloop_contracts.threshold_store import set_threshold, show_thresholds

    url = "redis://127.0.0.1:18079/0"
    set_threshold(url, "psi", 0.3, feature="median_income_in_block")
    for row in show_thresholds(url):
        print(row.statistic, row.feature, row.value, row.source)

Why a module of its own: contracts stays importable without Redis (the model API and the bridge
never touch thresholds). This module needs ``redis`` only to build a client from a URL, so it
imports it there; install ``driftloop-contracts[redis]`` to use URLs, or pass a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import structlog

from .thresholds import (
    THRESHOLDS_REDIS_KEY,
    ThresholdError,
    ThresholdRow,
    ThresholdSet,
    field_name,
    parse_value,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    SyncClient: TypeAlias = redis.Redis | str
    AsyncClient: TypeAlias = redis.asyncio.Redis
else:
    SyncClient = AsyncClient = Any

__all__ = [
    "fetch_thresholds",
    "load_thresholds",
    "reset_thresholds",
    "set_threshold",
    "show_thresholds",
]

log = structlog.get_logger(__name__)


def _client(client: SyncClient) -> redis.Redis:
    if isinstance(client, str):
        import redis

        return redis.Redis.from_url(client, socket_timeout=5, socket_connect_timeout=5)
    return client


async def fetch_thresholds(client: AsyncClient) -> tuple[ThresholdSet, list[str]]:
    """The stored overrides and the problems of the fields that were skipped (never fatal).

    Redis errors propagate: the caller decides whether an outage keeps the last values.
    """
    return ThresholdSet.from_hash(await client.hgetall(THRESHOLDS_REDIS_KEY))


def load_thresholds(client: SyncClient) -> ThresholdSet:
    """The effective thresholds as stored now (``client``: ``redis.Redis`` or a URL)."""
    thresholds, problems = ThresholdSet.from_hash(_client(client).hgetall(THRESHOLDS_REDIS_KEY))
    for problem in problems:
        log.warning("threshold_override_ignored", problem=problem)
    return thresholds


def show_thresholds(client: SyncClient) -> list[ThresholdRow]:
    """Every effective threshold with its source (``default``, ``override``...)."""
    return load_thresholds(client).rows()


def set_threshold(
    client: SyncClient, statistic: str, value: float | str, feature: str | None = None
) -> ThresholdRow:
    """Override one threshold (for every series, or one ``feature``); returns the new row."""
    name = field_name(statistic, feature)
    number = parse_value(value)
    _client(client).hset(THRESHOLDS_REDIS_KEY, name, repr(number))
    return ThresholdRow(
        statistic, feature or "", number, "feature override" if feature else "override"
    )


def reset_thresholds(
    client: SyncClient, statistic: str | None = None, feature: str | None = None
) -> int:
    """Remove overrides: all of them, one statistic's (incl. its per-feature ones), or one
    ``statistic:feature``. Returns how many fields were removed."""
    c = _client(client)
    if statistic is None:
        if feature:
            raise ThresholdError("name the statistic whose feature override to reset")
        return int(c.delete(THRESHOLDS_REDIS_KEY))  # 1 if there was a hash
    if feature:
        return int(c.hdel(THRESHOLDS_REDIS_KEY, field_name(statistic, feature)))
    field_name(statistic)
    fields = [f.decode() if isinstance(f, bytes) else f for f in c.hkeys(THRESHOLDS_REDIS_KEY)]
    doomed = [f for f in fields if f == statistic or f.startswith(f"{statistic}:")]
    return int(c.hdel(THRESHOLDS_REDIS_KEY, *doomed)) if doomed else 0
