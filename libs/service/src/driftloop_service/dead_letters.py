"""The one dead-letter publisher: copies skipped records to ``<topic>.dlq`` and counts each.

Used by the drift consumer for ``predictions``/``feedback`` and by the ``model-events``
subscriber where it is the designated writer (see :mod:`.subscriber`). The envelope, its key
and the delivery guarantee are defined once in :mod:`driftloop_contracts.dead_letters`.

Delivery policy, and why:

* :meth:`DeadLetterPublisher.publish` returns only when every letter it was given is either
  **acknowledged** by the broker (``acks="all"``; counted
  ``driftloop_dead_letters_total{topic,outcome="published"}``) or **given up** after
  ``attempts`` tries with the shared capped backoff (counted ``outcome="failed"`` and logged at
  error level with the record's origin and first bytes). A caller that commits only after
  ``publish`` returned never commits past a dead letter still in flight.
* Giving up, instead of retrying forever, is deliberate: a dead-letter topic that is missing
  or refuses writes must not stop valid traffic behind one bad record for good. The record is
  still counted in ``driftloop_events_invalid_total`` and ``outcome="failed"`` raises the
  ``DeadLettersLost`` alert, so nothing disappears unseen.
* Shutdown (``stopping`` set) ends the retries with :class:`~.retry.RetryStopped`, which the
  caller treats as "commit nothing" (the record is replayed by the next owner).
* The producer is created on first use and recreated after it fails to start, so a service
  whose broker is away at start-up is not held up by a topic it may never write to.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import structlog

from driftloop_contracts import DeadLetter, dlq_topic

from .retry import Backoff, RetryHook, RetryStopped, retrying

__all__ = [
    "DeadLetterNotAcknowledged",
    "DeadLetterOutcome",
    "DeadLetterProducer",
    "DeadLetterPublisher",
    "dead_letter_producer_factory",
]

log = structlog.get_logger(__name__)

DeadLetterOutcome = Literal["published", "failed"]

#: Waits between tries: 0.2 s doubling up to 5 s; with 8 tries about 16 s of waiting, plus the
#: producer's own 5 s request timeout per try.
DEFAULT_BACKOFF = Backoff(0.2, 5.0)
DEFAULT_ATTEMPTS = 8


class DeadLetterProducer(Protocol):
    """What the publisher uses of :class:`aiokafka.AIOKafkaProducer` (tests pass a fake)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[Any]: ...


class DeadLetterNotAcknowledged(Exception):
    """Some dead letters of a try were not acknowledged (retried, then given up)."""


def dead_letter_producer_factory(
    bootstrap: str, *, client_id: str, request_timeout_ms: int = 5_000
) -> Callable[[], DeadLetterProducer]:
    """aiokafka producers for dead letters: acknowledged by all replicas, failing fast (the
    publisher retries), small requests (a dead letter is a few KiB)."""

    def make() -> DeadLetterProducer:
        from aiokafka import AIOKafkaProducer

        producer: DeadLetterProducer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            request_timeout_ms=request_timeout_ms,
            linger_ms=0,
        )
        return producer

    return make


class DeadLetterPublisher:
    """Publishes dead letters to their ``<topic>.dlq`` (see the module docstring)."""

    def __init__(
        self,
        producer_factory: Callable[[], DeadLetterProducer],
        *,
        on_outcome: Callable[[str, DeadLetterOutcome], object],
        on_retry: RetryHook | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        """``on_outcome(source_topic, outcome)`` counts each letter once it is settled."""
        self._factory = producer_factory
        self._on_outcome = on_outcome
        self._on_retry = on_retry
        self._backoff = backoff
        self._attempts = attempts
        self._producer: DeadLetterProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(
        self, letters: Sequence[DeadLetter], *, stopping: asyncio.Event | None = None
    ) -> None:
        """Return once each letter is acknowledged or given up (both counted); raises
        :class:`~.retry.RetryStopped` if ``stopping`` is set while retrying."""
        if not letters:
            return
        async with self._lock:  # one batch at a time: letters of one caller stay in order
            remaining = list(letters)
            policy = retrying(
                backoff=self._backoff,
                attempts=self._attempts,
                retry_on=Exception,
                stopping=stopping,
                on_retry=self._retrying,
            )
            try:
                async for attempt in policy:
                    with attempt:
                        remaining = await self._try(remaining)
                        if remaining:
                            raise DeadLetterNotAcknowledged(
                                f"{len(remaining)} dead letter(s) not acknowledged"
                            )
            except RetryStopped:
                raise
            except DeadLetterNotAcknowledged:
                pass
            except Exception as exc:
                log.error("dead_letter_producer_failed", error=repr(exc))
            for letter in remaining:
                self._give_up(letter)

    async def _try(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Send the letters one at a time, each waiting for its ack; returns those not
        acknowledged. One at a time, not all at once: dead letters are rare, and the local
        broker (Tansu 0.6, memory storage) was seen to acknowledge records of a produce request
        spanning several partitions that it then did not store."""
        producer = await self._started()
        failed: list[DeadLetter] = []
        for letter in letters:
            try:
                future = await producer.send(
                    dlq_topic(letter.source_topic), letter.to_bytes(), key=letter.key
                )
                await future
            except Exception as exc:  # unknown topic, no ack, broker away: retried
                log.warning("dead_letter_not_acked", key=letter.key.decode(), error=repr(exc))
                failed.append(letter)
                continue
            self._on_outcome(letter.source_topic, "published")
            log.info(
                "dead_letter_published",
                topic=letter.source_topic,
                partition=letter.partition,
                offset=letter.offset,
                reason=letter.reason,
            )
        return failed

    async def _started(self) -> DeadLetterProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    def _retrying(self, attempt: int, error: BaseException, delay: float) -> None:
        if self._on_retry is not None:
            self._on_retry(attempt, error, delay)

    def _give_up(self, letter: DeadLetter) -> None:
        self._on_outcome(letter.source_topic, "failed")
        log.error(
            "dead_letter_lost",
            topic=letter.source_topic,
            partition=letter.partition,
            offset=letter.offset,
            reason=letter.reason,
            error=letter.error[:300],
            value_size=letter.value_size,
            value_head_b64=(letter.value_b64 or "")[:200],
        )

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
