"""The audit trail: every decision the bridge takes, newest first, in a capped Redis list.

Shared by every bridge instance and kept across restarts, so ``GET /decisions`` answers
"why did (or didn't) this alert retrain the model?" after the fact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from .store import Clock, RedisKeys, guarded

DecisionKind = Literal[
    "triggered",
    "queued",
    "duplicate",
    "cooldown",
    "braked",
    "run_active",
    "resolved",
    "ignored",
    "dead_letter",
    "released",
    "brake_reset",
]


class Decision(BaseModel):
    """What happened to one alert (or, for ``via="retry"``, to a queued trigger later)."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    source: str
    alertname: str
    fingerprint: str = ""
    status: str = ""
    rule: str | None = None
    decision: DecisionKind
    reason: str = ""
    dag_id: str | None = None
    dag_run_id: str | None = None
    #: created / exists (Airflow 409) / pending / rejected / dead_letter; for ``released``,
    #: why the trigger was given up on (max_age / rejected).
    outcome: str | None = None
    via: Literal["webhook", "retry"] = "webhook"
    #: For ``run_active``: the DAG run that was still queued or running.
    active_dag_run_id: str | None = None


class DecisionsResponse(BaseModel):
    count: int
    decisions: list[Decision]


class DecisionLog:
    def __init__(self, redis: Redis, keys: RedisKeys, *, keep: int, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._keep = keep
        self._clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    async def record(self, *decisions: Decision) -> None:
        if not decisions:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._keys.decisions, *(d.model_dump_json() for d in decisions))
            pipe.ltrim(self._keys.decisions, 0, self._keep - 1)
            await guarded("recording decisions", pipe.execute())

    async def recent(self, limit: int) -> list[Decision]:
        raw = await guarded(
            "reading decisions", self._redis.lrange(self._keys.decisions, 0, limit - 1)
        )
        return [Decision.model_validate_json(r) for r in raw]
