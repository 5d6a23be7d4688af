"""Offset commits: only what the sinks have safely written, per :class:`PartitionState`'s rule,
and never past a record whose dead letter is not yet acknowledged (or given up) by the broker
(:meth:`.dead_letters.DeadLetters.held_from`).

Used by the loop after each batch and at shutdown, and by the rebalance listener before
partitions move. A failed commit is not an error: the group membership changed or the broker
is away, the next commit covers the same offsets, and anything left uncommitted is replayed
into idempotent sinks.
"""

from __future__ import annotations

import time

import structlog
from aiokafka.structs import TopicPartition

from .dead_letters import DeadLetters
from .kafka_consumer import DataConsumer
from .metrics import ConsumerMetrics
from .partition_state import PartitionState
from .status import LoopStatus

log = structlog.get_logger(__name__)


class Committer:
    """Commits the safe offsets of one instance's partitions."""

    def __init__(
        self,
        state: PartitionState,
        *,
        metrics: ConsumerMetrics,
        status: LoopStatus,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.status = status
        self.dead_letters = dead_letters

    async def commit(self, consumer: DataConsumer, only: set[TopicPartition] | None = None) -> None:
        """Commit every assigned partition (or ``only`` these) that has new safe offsets."""
        offsets = self.state.offsets_to_commit(consumer.assignment(), only)
        if self.dead_letters is not None:
            offsets = self._below_dead_letters(offsets)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # membership changed or broker away: the next commit covers it
            self.status.last_error = f"commit: {exc}"
            log.warning(
                "commit_failed",
                error=str(exc),
                offsets={f"{tp.topic}-{tp.partition}": o for tp, o in offsets.items()},
            )
            return
        self.state.mark_committed(offsets)
        self.metrics.last_commit.set(time.time())

    def _below_dead_letters(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``offsets`` capped at each partition's first unsettled dead letter."""
        assert self.dead_letters is not None
        held = self.dead_letters.held_from()
        capped = {tp: min(offset, held.get(tp, offset)) for tp, offset in offsets.items()}
        return {tp: o for tp, o in capped.items() if o > self.state.committed.get(tp, -1)}
