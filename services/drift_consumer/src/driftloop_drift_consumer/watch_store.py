"""The post-promotion watch's state, in Redis: both models' errors per labelled request, the
decision once taken, and which of its steps are done.

Why Redis, not this process: the predictions and feedback partitions are shared out among the
consumer group's instances, so each instance joins only part of the labelled requests; the
decision needs all of them. Redis is already where the join lives (shared, survives a
restart or a rebalance), so the watch keeps its rows there too.

Exactly once per request: one hash field per labelled request (``HSET <rows> <request_id>
"<champion error> <shadow error>"``), so a replayed feedback record (after a crash or a
rebalance) overwrites its own field instead of counting twice; the label claim of
:mod:`.feedback_join` already makes a request's row the same on every replay. The sums are
read back with ``HVALS`` (a watch holds thousands of rows, not millions).

Exactly once per decision: the decision is written with ``HSETNX`` (the first instance to
decide wins; every later one reads that decision and carries *it* out), each step of carrying
it out is marked with ``HSETNX`` too, and the counter moves only for the instance whose
``HSETNX done`` succeeded. Keys expire ``join_ttl_seconds`` after the last write.

Keys (prefix :data:`driftloop_contracts.redis_keys.WATCH_PREFIX`)::

    <prefix><model>:<champion>:<shadow>:rows       hash request_id -> "c_err s_err"
    <prefix><model>:<champion>:<shadow>:decision   hash decision (JSON), <step> -> 1
    <prefix><model>:<champion>:<shadow>:lock       lock of the instance carrying it out
    <prefix><model>:pending                        the pair of a decision not yet carried out

The ``pending`` pointer lets any instance finish a decision without first reading the aliases
(a rollback half done may already have moved ``champion``; MLflow may be down).
"""

from __future__ import annotations

import json
from typing import Any

from driftloop_contracts.redis_keys import WATCH_PREFIX

from .errors import WatchStoreError
from .watch import Decision, ErrorSums, Pair, RowErrors

DECISION_FIELD = "decision"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WatchStore:
    """The watch's rows and decisions in Redis (``redis.asyncio`` client)."""

    def __init__(
        self, redis: Any, *, model_name: str, ttl_seconds: int, prefix: str = WATCH_PREFIX
    ) -> None:
        self._redis = redis
        self._model = model_name
        self._ttl = ttl_seconds
        self._prefix = prefix

    def key(self, pair: Pair, part: str) -> str:
        return f"{self._prefix}{self._model}:{pair.champion}:{pair.shadow}:{part}"

    async def add(self, rows: dict[Pair, list[RowErrors]]) -> None:
        """Record both errors of each labelled request (idempotent: one field per request)."""
        if not rows:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for pair, errors in rows.items():
                key = self.key(pair, "rows")
                pipe.hset(
                    key,
                    mapping={
                        e.request_id: f"{e.champion_error!r} {e.shadow_error!r}" for e in errors
                    },
                )
                pipe.expire(key, self._ttl)
            await pipe.execute()
        except Exception as exc:
            raise WatchStoreError(f"could not record watch rows: {exc}") from exc

    async def sums(self, pair: Pair) -> ErrorSums:
        try:
            values = await self._redis.hvals(self.key(pair, "rows"))
        except Exception as exc:
            raise WatchStoreError(f"could not read watch rows: {exc}") from exc
        errors = []
        for value in values:
            try:
                c, s = _text(value).split()
                errors.append((float(c), float(s)))
            except ValueError:
                continue  # a foreign value under our key: not a row
        return ErrorSums.of(errors)

    async def decision(self, pair: Pair) -> Decision | None:
        try:
            raw = await self._redis.hget(self.key(pair, "decision"), DECISION_FIELD)
        except Exception as exc:
            raise WatchStoreError(f"could not read the watch decision: {exc}") from exc
        return Decision.from_json(json.loads(raw)) if raw is not None else None

    async def record(self, decision: Decision) -> Decision:
        """Store ``decision`` unless one is already stored; return the stored one."""
        key = self.key(decision.pair, "decision")
        pair = decision.pair
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hsetnx(key, DECISION_FIELD, json.dumps(decision.to_json()))
            pipe.expire(key, self._ttl)
            pipe.set(self._pending_key, f"{pair.champion} {pair.shadow}", ex=self._ttl)
            pipe.hget(key, DECISION_FIELD)
            *_, raw = await pipe.execute()
        except Exception as exc:
            raise WatchStoreError(f"could not record the watch decision: {exc}") from exc
        return Decision.from_json(json.loads(raw))

    @property
    def _pending_key(self) -> str:
        return f"{self._prefix}{self._model}:pending"

    async def pending(self) -> Pair | None:
        """The pair of a decision recorded but not yet carried out to the end, if any."""
        try:
            raw = await self._redis.get(self._pending_key)
        except Exception as exc:
            raise WatchStoreError(f"could not read the pending watch decision: {exc}") from exc
        if raw is None:
            return None
        parts = _text(raw).split()
        return Pair(parts[0], parts[1]) if len(parts) == 2 else None

    async def clear_pending(self, pair: Pair) -> None:
        try:
            if await self.pending() == pair:
                await self._redis.delete(self._pending_key)
        except WatchStoreError:
            raise
        except Exception as exc:
            raise WatchStoreError(f"could not clear the pending watch decision: {exc}") from exc

    async def done_steps(self, pair: Pair) -> set[str]:
        try:
            keys = await self._redis.hkeys(self.key(pair, "decision"))
        except Exception as exc:
            raise WatchStoreError(f"could not read the watch steps: {exc}") from exc
        return {_text(k) for k in keys} - {DECISION_FIELD}

    async def mark(self, pair: Pair, step: str) -> bool:
        """Mark ``step`` done; True only for the caller that marked it first."""
        try:
            return bool(await self._redis.hsetnx(self.key(pair, "decision"), step, "1"))
        except Exception as exc:
            raise WatchStoreError(f"could not mark watch step {step}: {exc}") from exc

    def lock(self, pair: Pair, lease_seconds: float) -> Any:
        """A non-blocking lease lock (redis-py's ``Lock``: ``SET NX PX``, released by token)."""
        return self._redis.lock(self.key(pair, "lock"), timeout=lease_seconds, blocking=False)
