"""Where the bridge keeps its state in Redis, and the one place Redis errors are translated.

Layout (``<p>`` = ``DRIFTLOOP_BRIDGE_REDIS_PREFIX``, default ``driftloop:bridge``):

    <p>:incident:<dag_run_id>   string, TTL incident_ttl     an accepted incident (-> duplicate)
    <p>:cooldown:<dag_id>       "<until_ms>|<dag_run_id>"    the DAG's cooldown window
    <p>:pending:schedule        zset run_id -> next attempt  triggers not yet accepted by Airflow
    <p>:pending:items           hash run_id -> JSON          their bodies (survive restarts)
    <p>:dead                    hash run_id -> JSON          gave up: max age or rejected
                                                             (its incident key, and the
                                                             cooldown if it held it, deleted)
    <p>:decisions               list of JSON, newest first   the audit trail (capped)
    <p>:brake:triggers          zset run_id -> accepted ms   accepted triggers in the window
    <p>:brake:engaged           "<since_ms>|<until_ms>"      the circuit breaker is on

Times passed to Redis come from the bridge's clock (not Redis TTLs), so tests can drive
cooldowns with a fake clock; TTLs only garbage-collect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from .errors import StoreUnavailable

#: Seconds since the epoch; ``time.time`` in production, a fake in tests.
Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "driftloop:bridge"

    def incident(self, dag_run_id: str) -> str:
        return f"{self.prefix}:incident:{dag_run_id}"

    def cooldown(self, dag_id: str) -> str:
        return f"{self.prefix}:cooldown:{dag_id}"

    @property
    def pending_schedule(self) -> str:
        return f"{self.prefix}:pending:schedule"

    @property
    def pending_items(self) -> str:
        return f"{self.prefix}:pending:items"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}:decisions"

    @property
    def brake_triggers(self) -> str:
        return f"{self.prefix}:brake:triggers"

    @property
    def brake_engaged(self) -> str:
        return f"{self.prefix}:brake:engaged"


@asynccontextmanager
async def redis_errors(action: str) -> AsyncIterator[None]:
    """Re-raise any Redis failure as :class:`StoreUnavailable` saying what was being done."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"Redis unavailable while {action}: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"Redis unavailable while {action}: {exc}") from exc


async def guarded(action: str, call: Awaitable[T]) -> T:
    async with redis_errors(action):
        return await call


def make_redis(url: str) -> Redis:
    """A client that fails within about a second when Redis is down.

    redis-py's default (10 retries with backoff) would hold a webhook for seconds; the
    senders retry on our 503 and the worker polls again, so fail fast instead.
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
    )


def ms(seconds: float) -> int:
    return round(seconds * 1000)
