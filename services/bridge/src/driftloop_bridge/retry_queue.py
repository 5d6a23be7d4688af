"""Durable pending triggers: persisted in Redis, retried with exponential backoff, dead-lettered.

A trigger enters the queue atomically with its dedupe claim (see :mod:`dedupe`), before
Airflow is called, so neither an Airflow outage nor a bridge crash or restart loses it. The
webhook then tries Airflow once inline; the background :meth:`RetryQueue.run` loop picks up
whatever is due (a Redis sorted set scored by next-attempt time), *leases* it by pushing its
score forward (so a second bridge instance, or the inline attempt, is not raced), and calls
Airflow again. Waits grow exponentially: the shared :class:`driftloop_service.Backoff` (the
one every in-process retry uses) asked for the wait after the attempt count stored with the
item, since the retry state must outlive the process. A
trigger older than ``max_age`` or rejected by Airflow as invalid moves to the dead letters:
kept in Redis, counted in ``driftloop_bridge_dead_letters``, listed on ``GET /dead-letters``.

Giving up also *releases* what the claim took: in the same Lua script that dead-letters it, the
incident key is deleted and so is the DAG's cooldown window if this trigger still holds it
(another incident's window is left alone). Without that, an alert whose trigger was given up on
would be answered ``duplicate`` (and every other incident for the DAG ``cooldown``) for as long
as it keeps firing, and the loop would never retrain for it. Released, the same alert's next
notification claims the same deterministic ``dag_run_id`` again; should Airflow in fact have
created the run during the outage, it answers 409, which counts as success. Releases are counted
in ``driftloop_bridge_released_total{reason}``.

Repeated calls are harmless: the run id is deterministic and Airflow's 409 counts as success.

One retrain per incident: before every trigger (the webhook's inline attempt and the worker's)
the queue asks Airflow whether a run of the DAG is queued or running. If another run is
active, the trigger is *stood down*: in one Lua script it leaves the queue and releases what
its claim took (incident key, the DAG's cooldown window if it holds it, its count in the
brake's window), and the outcome is ``run_active`` naming the active run. Nothing is
dead-lettered: alerts raised while a retrain is under way are the same incident seen again (or
the old champion's drift still visible); if the alert is still firing once the run has ended,
its next notification is claimed afresh. If Airflow cannot answer the check, the trigger stays
pending and is retried like any unavailable trigger, so an outage loses no incident and the
check is never skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import structlog
from redis.asyncio import Redis

from driftloop_service import Backoff

from .errors import StoreUnavailable, TriggerRejected, TriggerUnavailable
from .metrics import BridgeMetrics
from .store import Clock, RedisKeys, guarded, ms

log = structlog.get_logger(__name__)

AttemptOutcome = Literal["created", "exists", "retry", "dead_letter", "run_active"]
#: Why a trigger was given up on (and its keys released): too old, or refused by Airflow (4xx).
ReleaseReason = Literal["max_age", "rejected"]
#: Which of the claim's keys a release deleted (the incident's, the DAG's cooldown window).
ReleasedKey = Literal["incident", "cooldown"]


@dataclass
class PendingTrigger:
    """A DAG run the bridge has promised to create."""

    dag_id: str
    dag_run_id: str
    conf: dict[str, Any]
    source: str
    alertname: str
    fingerprint: str
    rule: str
    first_seen: float
    attempts: int = 0
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> PendingTrigger:
        data = json.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class TriggerResult:
    outcome: Literal["created", "exists"]
    state: str | None = None


class Trigger(Protocol):
    """What the queue needs from Airflow (a fake in unit tests)."""

    async def trigger(
        self,
        dag_id: str,
        dag_run_id: str,
        conf: dict[str, Any],
        *,
        call_timeout: float | None = None,
    ) -> TriggerResult: ...

    async def active_runs(self, dag_id: str, *, call_timeout: float | None = None) -> list[str]:
        """Run ids of ``dag_id`` that are queued or running (oldest first)."""
        ...


@dataclass(frozen=True)
class Release:
    """What giving up on a trigger gave back, so the same alert can trigger again."""

    reason: ReleaseReason
    keys: tuple[ReleasedKey, ...] = ()


@dataclass(frozen=True)
class Attempt:
    outcome: AttemptOutcome
    detail: str = ""
    next_attempt_at: float | None = None
    #: Set when ``outcome`` is ``dead_letter``: the claim was released.
    release: Release | None = None
    #: Set when ``outcome`` is ``run_active``: the run that was still queued or running.
    active_run_id: str | None = None


FinalHook = Callable[[PendingTrigger, Attempt], Awaitable[None]]

_LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, run_id in ipairs(due) do
  local body = redis.call('HGET', KEYS[2], run_id)
  if body then
    redis.call('ZADD', KEYS[1], ARGV[2], run_id)
    table.insert(out, body)
  else
    redis.call('ZREM', KEYS[1], run_id)
  end
end
return out
"""


#: Dead-letter ``ARGV[1]`` (body ``ARGV[2]``) and release its claim, in one atomic step.
#: KEYS: dead, pending schedule, pending items, incident, cooldown. Returns the released keys.
_DEAD_LETTER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local released = {}
if redis.call('DEL', KEYS[4]) == 1 then
  table.insert(released, 'incident')
end
local cd = redis.call('GET', KEYS[5])
if cd then
  local sep = string.find(cd, '|', 1, true)
  if sep and string.sub(cd, sep + 1) == ARGV[1] then
    redis.call('DEL', KEYS[5])
    table.insert(released, 'cooldown')
  end
end
return released
"""


#: Stand a trigger down because another run of its DAG is active: leave the queue and release
#: the claim. KEYS: pending schedule, pending items, incident, cooldown, brake triggers.
_STAND_DOWN = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
local cd = redis.call('GET', KEYS[4])
if cd then
  local sep = string.find(cd, '|', 1, true)
  if sep and string.sub(cd, sep + 1) == ARGV[1] then
    redis.call('DEL', KEYS[4])
  end
end
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
"""


class RetryQueue:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        trigger: Trigger,
        *,
        clock: Clock,
        backoff: Backoff,
        max_age_seconds: float,
        poll_seconds: float,
        call_timeout_seconds: float,
        on_final: FinalHook | None = None,
        batch: int = 20,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self._metrics = metrics or BridgeMetrics()
        self._redis = redis
        self._keys = keys
        self._trigger = trigger
        self._clock = clock
        self._backoff = backoff
        self._max_age = max_age_seconds
        self._poll = poll_seconds
        self._timeout = call_timeout_seconds
        self._on_final = on_final
        self._batch = batch
        self._lease = redis.register_script(_LEASE)
        self._give_up = redis.register_script(_DEAD_LETTER)
        self._stand_down_script = redis.register_script(_STAND_DOWN)
        self._wake = asyncio.Event()

    def set_final_hook(self, hook: FinalHook) -> None:
        """Called with the final outcome of items the worker finishes (audit trail)."""
        self._on_final = hook

    # --- one attempt -----------------------------------------------------------------------
    async def attempt(self, item: PendingTrigger, *, call_timeout: float | None = None) -> Attempt:
        """Call Airflow for ``item`` once and update the queue with the result."""
        item.attempts += 1
        timeout = call_timeout or self._timeout
        try:
            active = await self._trigger.active_runs(item.dag_id, call_timeout=timeout)
        except TriggerUnavailable as exc:
            return await self._retry_later(item, f"cannot check for an active run: {exc.message}")
        others = [run for run in active if run != item.dag_run_id]
        if others:
            return await self._stand_down(item, others[0])
        try:
            result = await self._trigger.trigger(
                item.dag_id, item.dag_run_id, item.conf, call_timeout=timeout
            )
        except TriggerRejected as exc:
            return await self._dead_letter(item, "rejected", f"rejected by Airflow: {exc.message}")
        except TriggerUnavailable as exc:
            return await self._retry_later(item, exc.message)
        await guarded("completing a trigger", self._complete(item.dag_run_id))
        self._metrics.triggered(result.outcome)
        attempt = Attempt(result.outcome, result.state or "")
        log.info(
            "trigger_done",
            dag_id=item.dag_id,
            dag_run_id=item.dag_run_id,
            outcome=result.outcome,
            attempts=item.attempts,
        )
        return attempt

    async def _complete(self, run_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys.pending_schedule, run_id)
            pipe.hdel(self._keys.pending_items, run_id)
            await pipe.execute()

    async def _retry_later(self, item: PendingTrigger, error: str) -> Attempt:
        now = self._clock()
        item.last_error = error
        if now - item.first_seen >= self._max_age:
            return await self._dead_letter(
                item, "max_age", f"gave up after {item.attempts} attempts over max age: {error}"
            )
        next_at = now + self._backoff.delay(item.attempts)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.pending_items, item.dag_run_id, item.to_json())
            pipe.zadd(self._keys.pending_schedule, {item.dag_run_id: ms(next_at)})
            await guarded("rescheduling a trigger", pipe.execute())
        self._metrics.triggered("retry")
        log.warning(
            "trigger_retry",
            dag_id=item.dag_id,
            dag_run_id=item.dag_run_id,
            attempts=item.attempts,
            retry_in_s=round(next_at - now, 3),
            error=error,
        )
        return Attempt("retry", error, next_at)

    async def _stand_down(self, item: PendingTrigger, active_run_id: str) -> Attempt:
        """Another run of the DAG is active: drop ``item`` and release its claim (no run)."""
        await guarded(
            "standing a trigger down",
            self._stand_down_script(
                keys=[
                    self._keys.pending_schedule,
                    self._keys.pending_items,
                    self._keys.incident(item.dag_run_id),
                    self._keys.cooldown(item.dag_id),
                    self._keys.brake_triggers,
                ],
                args=[item.dag_run_id],
            ),
        )
        self._metrics.triggered("run_active")
        log.info(
            "trigger_stood_down",
            dag_id=item.dag_id,
            dag_run_id=item.dag_run_id,
            active_run_id=active_run_id,
            attempts=item.attempts,
        )
        return Attempt("run_active", f"run {active_run_id} is active", active_run_id=active_run_id)

    async def _dead_letter(self, item: PendingTrigger, why: ReleaseReason, reason: str) -> Attempt:
        """Move ``item`` to the dead letters and release its incident and cooldown keys."""
        item.last_error = reason
        item.extra["dead_at"] = self._clock()
        item.extra["release_reason"] = why
        raw = await guarded(
            "dead-lettering a trigger",
            self._give_up(
                keys=[
                    self._keys.dead,
                    self._keys.pending_schedule,
                    self._keys.pending_items,
                    self._keys.incident(item.dag_run_id),
                    self._keys.cooldown(item.dag_id),
                ],
                args=[item.dag_run_id, item.to_json()],
            ),
        )
        release = Release(why, tuple(_released_key(k) for k in raw))
        self._metrics.triggered("dead_letter")
        self._metrics.released(why)
        log.error(
            "trigger_dead_letter",
            dag_run_id=item.dag_run_id,
            reason=reason,
            released=list(release.keys),
        )
        return Attempt("dead_letter", reason, release=release)

    # --- the worker ------------------------------------------------------------------------
    def wake(self) -> None:
        """Ask the worker to look for due items now instead of at its next poll."""
        self._wake.set()

    async def process_due(self) -> int:
        """Lease every due item (up to a batch) and attempt it; returns how many were tried."""
        now = self._clock()
        lease_until = now + self._timeout + 5.0
        raw = await guarded(
            "leasing due triggers",
            self._lease(
                keys=[self._keys.pending_schedule, self._keys.pending_items],
                args=[ms(now), ms(lease_until), self._batch],
            ),
        )
        for body in raw:
            item = PendingTrigger.from_json(body)
            attempt = await self.attempt(item)
            if attempt.outcome != "retry" and self._on_final is not None:
                await self._on_final(item, attempt)
        return len(raw)

    async def run(self, stopping: asyncio.Event) -> None:
        """Retry loop; survives Redis and Airflow outages, ends when ``stopping`` is set."""
        log.info("retry_queue_start")
        while not stopping.is_set():
            tried = 0
            try:
                tried = await self.process_due()
                await self.refresh_gauges()
                self._metrics.redis_ok()
            except StoreUnavailable as exc:
                self._metrics.redis_failed("worker")
                log.warning("retry_queue_redis_unavailable", error=str(exc))
            except Exception:  # a bug must not kill the worker silently
                log.exception("retry_queue_unexpected_error")
            if tried:
                continue
            self._wake.clear()
            waiters = [
                asyncio.ensure_future(stopping.wait()),
                asyncio.ensure_future(self._wake.wait()),
            ]
            _, pending = await asyncio.wait(
                waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        log.info("retry_queue_stop")

    # --- visibility ------------------------------------------------------------------------
    async def counts(self) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._keys.pending_schedule)
            pipe.hlen(self._keys.dead)
            pending, dead = await guarded("counting triggers", pipe.execute())
        return int(pending), int(dead)

    async def refresh_gauges(self) -> tuple[int, int]:
        pending, dead = await self.counts()
        self._metrics.pending.set(pending)
        self._metrics.dead_letters.set(dead)
        return pending, dead

    async def pending(self, limit: int = 100) -> list[PendingTrigger]:
        raw = await guarded("listing pending triggers", self._redis.hvals(self._keys.pending_items))
        items = sorted((PendingTrigger.from_json(r) for r in raw), key=lambda i: i.first_seen)
        return items[:limit]

    async def dead_letters(self, limit: int = 100) -> list[PendingTrigger]:
        raw = await guarded("listing dead letters", self._redis.hvals(self._keys.dead))
        items = sorted(
            (PendingTrigger.from_json(r) for r in raw),
            key=lambda i: i.extra.get("dead_at", 0),
            reverse=True,
        )
        return items[:limit]


def _released_key(raw: bytes | str) -> ReleasedKey:
    name = raw.decode() if isinstance(raw, bytes) else raw
    if name == "incident":
        return "incident"
    if name == "cooldown":
        return "cooldown"
    raise ValueError(f"unexpected key kind from the dead-letter script: {name!r}")
