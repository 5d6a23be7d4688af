"""Rebalance listener: finish and commit what is finished before partitions move; start clean
on the partitions we get.

aiokafka awaits these callbacks during a rebalance. Both take the loop's processing lock, which
the loop holds around *processing and committing* a batch but never around ``getmany``, so a
rebalance waits for the batch in flight and cannot deadlock with the fetch (aiokafka's docs,
"Consumer rebalance listener").

On revoke: due labelled rows of the revoked feedback partitions are written (once, no retry),
their online error too, and the revoked partitions are committed; a failure is only logged,
since the next owner replays from the last commit into idempotent sinks. Then their state is
dropped. On assign: state starts clean from the group's committed offset, and the labelled
log is scanned for part files written beyond it (so a replay does not write them twice).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from .committer import Committer
from .kafka_consumer import DataConsumer
from .labelled_rows import LabelledRows
from .partition_state import PartitionState
from .sinks.facade import Sinks
from .status import LoopStatus

log = structlog.get_logger(__name__)


class DriftRebalanceListener(ConsumerRebalanceListener):
    """Owns revoke/assign of one consumer's partitions against :class:`PartitionState`."""

    def __init__(
        self,
        consumer: DataConsumer,
        *,
        lock: asyncio.Lock,
        state: PartitionState,
        labelled_rows: LabelledRows,
        sinks: Sinks,
        committer: Committer,
        status: LoopStatus,
    ) -> None:
        """``lock`` is the loop's processing lock (never held around ``getmany``)."""
        self._consumer = consumer
        self._lock = lock
        self._state = state
        self._labelled_rows = labelled_rows
        self._sinks = sinks
        self._committer = committer
        self._status = status

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        revoked = set(revoked)
        async with self._lock:
            feedback = {tp.partition for tp in revoked if tp.topic == self._state.feedback_topic}
            try:
                lines = await self._labelled_rows.flush(
                    time.monotonic(), force=True, partitions=feedback
                )
                await self._sinks.write_points_once(lines)
                await self._committer.commit(self._consumer, only=revoked)
            except Exception as exc:  # not fatal: the new owner replays from the commit
                log.warning("revoke_flush_failed", error=str(exc))
            self._state.forget(revoked)
            log.info(
                "partitions_revoked",
                partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked),
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        assigned = set(assigned)
        async with self._lock:
            self._state.forget(assigned)
            for tp in assigned:
                committed = None
                try:
                    committed = await self._consumer.committed(tp)
                except Exception:
                    committed = None
                through = None
                if tp.topic == self._state.feedback_topic:
                    through = await self._sinks.logged_through(tp.partition, committed)
                    if through is not None:
                        log.info(
                            "labelled_log_recovered",
                            partition=tp.partition,
                            committed=committed,
                            logged_through=through,
                        )
                self._state.assign(tp, committed, through)
            self._status.assigned = sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)
            log.info("partitions_assigned", partitions=self._status.assigned)
