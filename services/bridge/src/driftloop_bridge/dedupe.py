"""Idempotency and storm control: one DAG run per incident, one incident per DAG per cooldown.

An *incident* is one firing episode of one alert series: the routing rule, the alert's
identity (its fingerprint; the group key plus labels when a sender leaves it empty) and its
``startsAt``. Repeated notifications of the same incident (Alertmanager's repeat_interval,
Grafana's re-sends, a sender retrying after a timeout, 100 concurrent copies) all map to the
same deterministic ``dag_run_id``, which is also what makes Airflow answer 409 to a repeat.

:meth:`Deduper.claim` decides atomically in one Lua script, so concurrent webhooks cannot both
win: ``duplicate`` if the incident is known; else ``cooldown`` if the DAG's window is open;
else the incident is recorded, the window opened and the trigger persisted to the pending
queue in the same step (``accepted``), so an accepted trigger is never lost even if the bridge
dies before calling Airflow. A ``cooldown`` answer does not record the incident: if it is
still firing after the window, its next notification triggers.

Between cooldown and acceptance the same script applies the circuit breaker (:mod:`brake`):
``braked`` when the brake is engaged or this trigger would exceed the window's budget; like
``cooldown`` it records nothing, so a still-firing alert triggers once the brake is reset.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

from redis.asyncio import Redis

from .brake import BRAKE_CHECK, BRAKE_COUNT, BrakePolicy, parse_engaged
from .payloads import Alert
from .retry_queue import PendingTrigger
from .store import Clock, RedisKeys, guarded, ms

ClaimKind = Literal["accepted", "duplicate", "cooldown", "braked"]

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")

_CLAIM = (
    """
local incident = redis.call('GET', KEYS[1])
if incident then
  return {'duplicate', incident}
end
local cd = redis.call('GET', KEYS[2])
if cd then
  local sep = string.find(cd, '|', 1, true)
  local until_ms = tonumber(string.sub(cd, 1, (sep or 0) - 1))
  if until_ms and until_ms > tonumber(ARGV[1]) then
    return {'cooldown', cd}
  end
end
"""
    + BRAKE_CHECK
    + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[2], ARGV[7] .. '|' .. ARGV[4], 'PX', ARGV[8])
end
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
"""
    + BRAKE_COUNT
    + """
return {'accepted', ''}
"""
)


def incident_identity(alert: Alert) -> str:
    """What identifies the alert series: its fingerprint, else group key + sorted labels."""
    if alert.fingerprint:
        return alert.fingerprint
    labels = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return f"{alert.group_key}|{labels}"


def dag_run_id_for(rule_name: str, alert: Alert) -> str:
    """Deterministic Airflow run id for this incident (Airflow's ``^[A-Za-z0-9_.~:+-]+$``).

    Readable prefix (alert name and start time) for the Airflow UI; a digest of rule,
    identity and the exact ``startsAt`` for uniqueness.
    """
    starts = alert.starts_at.astimezone(UTC)
    digest = hashlib.sha256(
        "\x1f".join((rule_name, incident_identity(alert), starts.isoformat())).encode()
    ).hexdigest()[:16]
    name = _SLUG.sub("-", alert.name or "alert")[:64]
    return f"alert__{name}__{starts:%Y%m%dT%H%M%S}__{digest}"


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    #: For ``cooldown``: the run id holding the window and when it closes (epoch seconds).
    #: For ``braked``: ``until`` is when the brake lets go by itself, ``since`` when it engaged.
    holder: str = ""
    until: float | None = None
    since: float | None = None


class Deduper:
    """Atomic duplicate / cooldown decision that also enqueues the accepted trigger."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        clock: Clock,
        cooldown_seconds: float,
        incident_ttl_seconds: float,
        brake: BrakePolicy | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._cooldown = cooldown_seconds
        self._incident_ttl = incident_ttl_seconds
        self._brake = brake or BrakePolicy(max_triggers=0)
        self._script = redis.register_script(_CLAIM)

    async def claim(self, item: PendingTrigger, *, first_attempt_at: float) -> Claim:
        """Decide for ``item``; when accepted it is pending, due at ``first_attempt_at``."""
        now = self._clock()
        cooldown_ms = ms(self._cooldown)
        result = await guarded(
            "checking duplicates and cooldown",
            self._script(
                keys=[
                    self._keys.incident(item.dag_run_id),
                    self._keys.cooldown(item.dag_id),
                    self._keys.pending_schedule,
                    self._keys.pending_items,
                    self._keys.brake_triggers,
                    self._keys.brake_engaged,
                ],
                args=[
                    ms(now),
                    cooldown_ms,
                    ms(self._incident_ttl),
                    item.dag_run_id,
                    item.to_json(),
                    ms(first_attempt_at),
                    ms(now) + cooldown_ms,
                    # Real-time TTL only garbage-collects; the window is judged by the clock.
                    cooldown_ms + 60_000,
                    *self._brake.script_args(),
                ],
            ),
        )
        kind = _text(result[0])
        if kind == "cooldown":
            until_ms, _, holder = _text(result[1]).partition("|")
            return Claim("cooldown", holder=holder, until=int(until_ms) / 1000)
        if kind == "duplicate":
            return Claim("duplicate")
        if kind == "braked":
            since, until = parse_engaged(_text(result[1]))
            return Claim("braked", since=since, until=until)
        return Claim("accepted")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
