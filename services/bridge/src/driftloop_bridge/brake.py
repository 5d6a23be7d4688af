"""The circuit breaker: at most N accepted retraining triggers per window, then stop until reset.

A loop that keeps retraining (a promotion that does not settle, a drift that flaps) burns
compute and churns the champion. The bridge cannot see promotions (a DAG run may end without
one), but it controls what bounds them: every promotion comes from a trigger the bridge
accepted. So the brake counts **accepted triggers**: when ``max_triggers`` were accepted within
``window_seconds``, the next alert that would trigger is answered ``braked`` instead, no DAG run
is requested, and the brake stays **engaged** (also after the window slides on) until a person
resets it (``POST /brake/reset``, ``driftloop loop reset-brake``) or ``hold_seconds`` pass.

State lives in Redis, beside the claim keys, so every bridge instance agrees and a restart keeps
it; the check and the count happen inside the claim's Lua script (:mod:`dedupe`), so concurrent
webhooks can never accept more than N:

    <p>:brake:triggers   zset dag_run_id -> accepted at (ms)   triggers inside the window
    <p>:brake:engaged    "<since_ms>|<until_ms>"               the brake is on (judged by the clock)

``max_triggers = 0`` turns the brake off (nothing is counted).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from pydantic import BaseModel
from redis.asyncio import Redis

from .errors import StoreUnavailable
from .metrics import BridgeMetrics
from .store import Clock, RedisKeys, guarded, ms

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BrakePolicy:
    """How many accepted triggers per window before the brake engages, and for how long."""

    max_triggers: int = 2
    window_seconds: float = 3600.0
    hold_seconds: float = 6 * 3600.0

    @property
    def enabled(self) -> bool:
        return self.max_triggers > 0

    def script_args(self) -> list[int]:
        """ARGV tail the claim script reads: max, window (ms), hold (ms)."""
        return [self.max_triggers, ms(self.window_seconds), ms(self.hold_seconds)]


#: Lua fragment of the claim script (after duplicate/cooldown, before accepting): answers
#: ``braked`` when the brake is engaged or this trigger would be one too many. KEYS[5] is the
#: trigger zset, KEYS[6] the engaged key; ARGV[1] now (ms), ARGV[9..11] the policy.
BRAKE_CHECK = """
local brake_max = tonumber(ARGV[9])
if brake_max > 0 then
  local now = tonumber(ARGV[1])
  local engaged = redis.call('GET', KEYS[6])
  if engaged then
    local sep = string.find(engaged, '|', 1, true)
    local until_ms = tonumber(string.sub(engaged, (sep or 0) + 1))
    if until_ms and until_ms > now then
      return {'braked', engaged}
    end
    redis.call('DEL', KEYS[6])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[10]))
  if redis.call('ZCARD', KEYS[5]) >= brake_max then
    local value = ARGV[1] .. '|' .. (now + tonumber(ARGV[11]))
    redis.call('SET', KEYS[6], value, 'PX', tonumber(ARGV[11]) + 60000)
    return {'braked', value}
  end
end
"""

#: Lua fragment run once a trigger is accepted: count it in the window.
BRAKE_COUNT = """
if tonumber(ARGV[9]) > 0 then
  redis.call('ZADD', KEYS[5], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[10]) + 60000)
end
"""


def parse_engaged(value: bytes | str) -> tuple[float, float]:
    """``"<since_ms>|<until_ms>"`` -> (since, until) in epoch seconds."""
    text = value.decode() if isinstance(value, bytes) else value
    since, _, until = text.partition("|")
    return int(since) / 1000, int(until) / 1000


class BrakeTrigger(BaseModel):
    dag_run_id: str
    accepted_at: datetime


class BrakeState(BaseModel):
    """What ``GET /brake`` answers."""

    enabled: bool
    engaged: bool
    #: When the brake engaged, and when it lets go by itself unless reset first.
    since: datetime | None = None
    until: datetime | None = None
    max_triggers: int
    window_seconds: float
    hold_seconds: float
    triggers_in_window: int
    triggers: list[BrakeTrigger]


class BrakeResetResponse(BaseModel):
    """What ``POST /brake/reset`` answers: the state it cleared, and the state now."""

    was: BrakeState
    now: BrakeState


class Brake:
    """Reads and resets the brake's Redis state, and keeps the ``brake_engaged`` gauge true."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        policy: BrakePolicy,
        *,
        clock: Clock,
        metrics: BridgeMetrics,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.policy = policy
        self._clock = clock
        self._metrics = metrics

    async def state(self) -> BrakeState:
        """The brake as every instance sees it (engaged judged by the clock, like cooldowns)."""
        now = self._clock()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.brake_engaged)
            pipe.zrangebyscore(
                self._keys.brake_triggers,
                f"({ms(now - self.policy.window_seconds)}",
                "+inf",
                withscores=True,
            )
            engaged_raw, window = await guarded("reading the brake", pipe.execute())
        since = until = None
        if engaged_raw is not None:
            since_s, until_s = parse_engaged(engaged_raw)
            if until_s > now:
                since, until = _at(since_s), _at(until_s)
        triggers = [
            BrakeTrigger(
                dag_run_id=m.decode() if isinstance(m, bytes) else m, accepted_at=_at(s / 1000)
            )
            for m, s in window
        ]
        engaged = since is not None
        self._metrics.brake_engaged.set(1 if engaged else 0)
        return BrakeState(
            enabled=self.policy.enabled,
            engaged=engaged,
            since=since,
            until=until,
            max_triggers=self.policy.max_triggers,
            window_seconds=self.policy.window_seconds,
            hold_seconds=self.policy.hold_seconds,
            triggers_in_window=len(triggers),
            triggers=triggers,
        )

    async def reset(self) -> BrakeResetResponse:
        """Release the brake and forget the window's triggers (a person has looked at the loop:
        keeping the count would re-engage it at the very next trigger)."""
        was = await self.state()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.brake_engaged, self._keys.brake_triggers)
            await guarded("resetting the brake", pipe.execute())
        self._metrics.brake_resets.inc()
        log.warning(
            "brake_reset",
            was_engaged=was.engaged,
            since=was.since.isoformat() if was.since else None,
            triggers_in_window=was.triggers_in_window,
        )
        return BrakeResetResponse(was=was, now=await self.state())

    def engaged_now(self) -> None:
        """Called when a decision came back ``braked``: the gauge need not wait for a refresh."""
        self._metrics.brake_engaged.set(1)

    async def watch(self, stopping: asyncio.Event, every_seconds: float) -> None:
        """Keep the gauge true while nothing is decided (expiry, another instance's reset)."""
        while not stopping.is_set():
            try:
                await self.state()
            except StoreUnavailable as exc:
                log.warning("brake_refresh_failed", error=str(exc))
            except Exception:  # a bug must not kill the refresher silently
                log.exception("brake_refresh_unexpected_error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=every_seconds)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
