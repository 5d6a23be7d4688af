"""Where the group's slot partials meet: Redis (``redis.asyncio``), with Lua scripts for the
steps that must be atomic.

Why Redis (and not a compacted topic and a separate aggregator): the stack runs it already
and the consumer already depends on it for the join; a Lua script checks a partition's
progress and writes its partials and new progress in one step, which a topic cannot; and any
consumer can aggregate, so there is no extra process to deploy, watch and fail over.

Keys, per ``<prefix><group>:<model version>:`` (prefix
:data:`driftloop_contracts.redis_keys.SHARED_WINDOWS_PREFIX`)::

    progress      hash partition -> "<offset> <slot>" (shared through that offset and slot)
    slots         sorted set of the slots that hold unmerged partials
    slot:<slot>   hash partition -> partial (shared_windows.encode_partial)
    cursor        "<next slot> <first slot of the open window>" ("-" for none)
    windows       sorted set: the closed windows and their decisions (JSON), scored by first
                  slot; those older than ``ttl_seconds`` of slots are trimmed
    lease         the aggregating instance (SET NX PX, renewed by its holder)

Exactly once:

- *publish* (per partition): refused with :class:`.errors.SharedProgressConflict` when the
  stored progress is past what is published (another owner shared further); a retry of a
  call that was applied (the reply was lost) finds its own progress and is a no-op.
- *close* (per aggregation): the cursor moves by compare-and-set, with the windows it closed
  and the deletion of the merged partials, in one script; only the instance whose
  set succeeds counts the windows. The lease only keeps the others from doing the same work:
  two aggregators compute the same windows and InfluxDB points (a pure function of the
  partials), and one of them wins the cursor.

The slot keys are computed inside the scripts, which is fine for one Redis (not a cluster).
No pipelines: redis-py 8.1's asyncio pipeline was seen to swallow a task's cancellation (the
consumer then ran on after a kill in the loop test); one call per partition or slot is cheap.
Every key expires ``ttl_seconds`` after its last write.
"""

from __future__ import annotations

import json
import math
from typing import Any

from driftloop_contracts.redis_keys import SHARED_WINDOWS_PREFIX

from .drift import DriftDecision
from .errors import SharedProgressConflict, SharedStoreError
from .shared_windows import (
    Cursor,
    PartitionPublication,
    Progress,
    decode_partial,
    encode_partial,
)
from .windows import ClosedWindow, SlotPartial

_PUBLISH = """
local prefix, ttl, p = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local off, slot, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cur = redis.call('HGET', prefix .. 'progress', p)
local co, cs = -1, nil
if cur then
  local a, b = string.match(cur, '^(%-?%d+) (%-?%d+)$')
  co, cs = tonumber(a), tonumber(b)
  if co == off and cs == slot then return 0 end
  if off < co or slot < cs then return -1 end
end
for i = 0, n - 1 do
  local s, first = tonumber(ARGV[7 + 3 * i]), tonumber(ARGV[8 + 3 * i])
  if first <= co or (cs and s <= cs) then return -1 end
end
for i = 0, n - 1 do
  local s = ARGV[7 + 3 * i]
  local key = prefix .. 'slot:' .. s
  redis.call('HSET', key, p, ARGV[9 + 3 * i])
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', prefix .. 'slots', tonumber(s), s)
end
redis.call('HSET', prefix .. 'progress', p, ARGV[4] .. ' ' .. ARGV[5])
redis.call('EXPIRE', prefix .. 'progress', ttl)
if n > 0 then redis.call('EXPIRE', prefix .. 'slots', ttl) end
return 1
"""

_CLOSE = """
local prefix, ttl, expected, new, drop_below = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local keep_from = ARGV[6]
local cur = redis.call('GET', prefix .. 'cursor') or ''
if cur ~= expected then return 0 end
redis.call('SET', prefix .. 'cursor', new, 'EX', ttl)
local n = (#ARGV - 6) / 2
for i = 0, n - 1 do
  redis.call('ZADD', prefix .. 'windows', tonumber(ARGV[7 + 2 * i]), ARGV[8 + 2 * i])
end
if n > 0 then
  redis.call('EXPIRE', prefix .. 'windows', ttl)
  redis.call('ZREMRANGEBYSCORE', prefix .. 'windows', '-inf', '(' .. keep_from)
end
if drop_below ~= '' then
  local old = redis.call('ZRANGEBYSCORE', prefix .. 'slots', '-inf', '(' .. drop_below)
  for _, s in ipairs(old) do redis.call('DEL', prefix .. 'slot:' .. s) end
  redis.call('ZREMRANGEBYSCORE', prefix .. 'slots', '-inf', '(' .. drop_below)
end
return 1
"""

_LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def window_record(window: ClosedWindow, decision: DriftDecision) -> dict[str, Any]:
    """What the ``windows`` hash keeps of a closed window: its span, its partitions' shares,
    its statistics and its decision."""
    stats = window.statistics
    return {
        "first_slot": window.first_offset,
        "last_slot": window.last_offset,
        "events": window.n,
        "time_ns": window.time_ns,
        "parts": [
            [s.partition, s.slot, s.first_offset, s.last_offset, s.events] for s in window.parts
        ],
        "statistics": {k: [float(x) for x in v] for k, v in stats.by_statistic().items()},
        "declared": decision.any_drift,
        "drift_share": decision.drift_share,
        "drifted_series": list(decision.drifted_series),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedStore:
    """The group's shared partials in Redis; every failure is a :class:`SharedStoreError`
    (retried by the caller), a refused publish a :class:`SharedProgressConflict`."""

    def __init__(
        self,
        redis: Any,
        *,
        group: str,
        ttl_seconds: int,
        instance_id: str,
        prefix: str = SHARED_WINDOWS_PREFIX,
    ) -> None:
        self._redis = redis
        self._base = f"{prefix}{group}:"
        self._ttl = ttl_seconds
        self.instance_id = instance_id
        self._publish = redis.register_script(_PUBLISH)
        self._close = redis.register_script(_CLOSE)
        self._lease = redis.register_script(_LEASE)

    def prefix(self, model_version: str) -> str:
        return f"{self._base}{model_version}:"

    async def progress(self, model_version: str) -> dict[int, Progress]:
        """Every partition's progress (partitions without one are absent)."""
        try:
            raw = await self._redis.hgetall(self.prefix(model_version) + "progress")
        except Exception as exc:
            raise SharedStoreError(f"could not read shared progress: {exc}") from exc
        return {int(_text(k)): Progress.decode(v) for k, v in raw.items()}

    async def publish(self, model_version: str, publications: list[PartitionPublication]) -> None:
        """Publish each partition's partials and progress (one atomic script per partition)."""
        prefix = self.prefix(model_version)
        results = []
        try:
            for pp in publications:
                args: list[Any] = [
                    prefix,
                    self._ttl,
                    pp.partition,
                    pp.progress.offset,
                    pp.progress.slot,
                    len(pp.partials),
                ]
                for part in pp.partials:
                    first = part.state.segments[part.partition][0]
                    args += [part.slot, first, encode_partial(part)]
                results.append(await self._publish(args=args))
        except Exception as exc:
            raise SharedStoreError(f"could not publish shared partials: {exc}") from exc
        refused = [pp.partition for pp, r in zip(publications, results, strict=True) if r == -1]
        if refused:
            raise SharedProgressConflict(
                f"partitions {refused}: shared progress is already past this instance's"
            )

    async def lease(self, model_version: str, seconds: float) -> bool:
        """Take or renew the aggregator's lease; True while this instance holds it."""
        try:
            got = await self._lease(
                keys=[self.prefix(model_version) + "lease"],
                args=[self.instance_id, max(1, round(seconds * 1000))],
            )
        except Exception as exc:
            raise SharedStoreError(f"could not take the aggregator lease: {exc}") from exc
        return bool(got)

    async def cursor(self, model_version: str) -> tuple[Cursor, str]:
        """The aggregation cursor and its raw value (for the compare-and-set)."""
        try:
            raw = await self._redis.get(self.prefix(model_version) + "cursor")
        except Exception as exc:
            raise SharedStoreError(f"could not read the aggregation cursor: {exc}") from exc
        text = "" if raw is None else _text(raw)
        return Cursor.decode(text or None), text

    async def partials(
        self, model_version: str, first: int | None, through: int
    ) -> dict[int, list[SlotPartial]]:
        """The published partials of slots ``first..through`` (``None``: from the oldest)."""
        prefix = self.prefix(model_version)
        low = "-inf" if first is None else first
        try:
            slots = await self._redis.zrangebyscore(prefix + "slots", low, through)
            blobs = [await self._redis.hvals(prefix + "slot:" + _text(s)) for s in slots]
        except Exception as exc:
            raise SharedStoreError(f"could not read shared partials: {exc}") from exc
        out: dict[int, list[SlotPartial]] = {}
        for s, values in zip(slots, blobs, strict=True):
            out[int(_text(s))] = [decode_partial(v) for v in values]
        return out

    async def close(
        self,
        model_version: str,
        expected: str,
        cursor: Cursor,
        windows: list[tuple[ClosedWindow, DriftDecision]],
        *,
        slot_us: int,
    ) -> bool:
        """Move the cursor from ``expected`` to ``cursor`` with the windows it closed and drop
        the partials no window needs any more (and windows older than ``ttl_seconds``);
        False if another aggregator moved it first."""
        drop_below = cursor.read_from
        kept_slots = math.ceil(self._ttl * 1_000_000 / slot_us)
        keep_from = (cursor.next_slot or 0) - kept_slots
        args: list[Any] = [
            self.prefix(model_version),
            self._ttl,
            expected,
            cursor.encode(),
            "" if drop_below is None else drop_below,
            keep_from,
        ]
        for window, decision in windows:
            args += [window.first_offset, json.dumps(window_record(window, decision))]
        try:
            return bool(await self._close(args=args))
        except Exception as exc:
            raise SharedStoreError(f"could not close shared windows: {exc}") from exc

    async def windows(self, model_version: str) -> list[dict[str, Any]]:
        """Every closed window still kept, oldest first; for accounting and tests."""
        try:
            raw = await self._redis.zrange(self.prefix(model_version) + "windows", 0, -1)
        except Exception as exc:
            raise SharedStoreError(f"could not read shared windows: {exc}") from exc
        return [json.loads(v) for v in raw]
