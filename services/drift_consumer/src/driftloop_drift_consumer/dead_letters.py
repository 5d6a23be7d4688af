"""Dead letters of the data topics: every invalid prediction/feedback record is copied to
``<topic>.dlq`` before the consumer can commit past it.

The loop hands each decoded-invalid record to :meth:`DeadLetters.hold` while it reads a fetch,
and calls :meth:`DeadLetters.publish` before it commits; :class:`~.committer.Committer` never
commits a partition past its first held (not yet settled) dead letter
(:meth:`DeadLetters.held_from`), whatever the call order. Publishing, retries, counting
(``driftloop_dead_letters_total{topic,outcome}``) and the give-up policy are the shared
:class:`driftloop_service.DeadLetterPublisher`'s; the envelope and key are the contracts'
(:mod:`driftloop_contracts.dead_letters`).

What is dead-lettered: every record decoding refused (its bytes, schema, time or model are
wrong). Feedback the join gives up on (``unmatched_feedback``) is a valid record and is only
counted.

Delivery: at least once (a crash after the ack and before the commit writes the same dead
letter again, under the same key ``<topic>:<partition>:<offset>``), exactly once otherwise.
The loop publishes within the batch that read the records (under its lock), so nothing is
held when the rebalance listener commits; a batch that fails before it published restarts the
consumer, which drops what is held (:meth:`DeadLetters.reset`) and reads the records again.
"""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from driftloop_contracts import DeadLetter
from driftloop_service import DeadLetterPublisher

from .decoding import Invalid


class DeadLetters:
    """The dead letters read but not yet settled, per partition, and their publisher."""

    def __init__(
        self, publisher: DeadLetterPublisher | None, *, consumer: str, stopping: asyncio.Event
    ) -> None:
        """``publisher=None`` turns dead-lettering off (the records are still counted)."""
        self.publisher = publisher
        self._consumer = consumer
        self._stopping = stopping
        self._held: dict[TopicPartition, list[DeadLetter]] = {}

    def hold(self, tp: TopicPartition, invalid: Invalid) -> None:
        """Keep the dead letter of a record decoding refused until :meth:`publish`."""
        record = invalid.record
        if self.publisher is None or record is None:
            return
        letter = DeadLetter.of(
            tp.topic,
            tp.partition,
            invalid.offset,
            key=record.key,
            value=record.value,
            reason=invalid.reason,
            error=invalid.error,
            record_timestamp_ms=record.timestamp,
            consumer=self._consumer,
        )
        self._held.setdefault(tp, []).append(letter)

    def held_from(self) -> dict[TopicPartition, int]:
        """Per partition, the first offset whose dead letter is not settled: the committer's
        ceiling."""
        return {tp: min(letter.offset for letter in held) for tp, held in self._held.items()}

    async def publish(self) -> None:
        """Publish everything held; returns once each is acknowledged or given up (counted),
        raises :class:`~driftloop_service.RetryStopped` on shutdown (then nothing is
        released, and nothing past it committed)."""
        if self.publisher is None or not self._held:
            return
        letters = [letter for held in self._held.values() for letter in held]
        await self.publisher.publish(letters, stopping=self._stopping)
        self._held.clear()

    def reset(self) -> None:
        """The consumer restarts: everything held is read again."""
        self._held.clear()
