"""The one ``model-events`` subscriber: every replica and every drift consumer reads it alike.

``ModelPromoted`` is a broadcast: each subscriber reads every partition on its own, with *no
consumer group*, so no reader takes an event away from another (a group per reader would do
the same with a slower join on Tansu). It starts at the end of the topic: whoever starts later
has read the ``champion`` alias at start-up, so older events are not news.

What the subscriber does, so its users only decide what a promotion means to them:

* decodes each record; a bad one (any bytes at all: ``decode_event`` raises nothing but an
  ``EventError``, tested with :mod:`driftloop_contracts.poison`) is logged with
  topic/partition/offset, passed to ``on_invalid`` (to count it per reason) and skipped, never
  stopping the subscriber;
* **dead letters**: given a ``dead_letters`` publisher, it also copies each bad record to
  ``model-events.dlq`` (and waits for the ack, or for the publisher to give up, before the
  next record). The subscriber is a broadcast, so every reader sees every bad record: only
  the *designated writer* passes a publisher, so each record lands there once. In driftloop
  that is the drift consumer (setting ``model_events_dead_letters``, on by default; run one
  instance with it on); replicas only count;
* calls ``on_promoted(event)`` (sync or async) for each valid event, in order;
* **log reset**: every ``reset_check_s`` it compares its position with the end of each
  partition. An end *behind* the position means the log was reset (Tansu keeps nothing across
  a restart and the topic is recreated empty), so it rewinds to the beginning, where
  everything is new. Without this a reader waits for offsets the new log reaches only after
  as many events as the old one had;
* a broken connection is rebuilt with :func:`~driftloop_service.retry.retrying` (capped
  exponential backoff, stop-aware), starting over at the first wait once a connection has
  worked; ``on_connected`` runs after each (re)connect, so a user can re-read the alias for
  whatever was announced while nobody listened.

Example::

    subscriber = ModelEventsSubscriber(
        model_events_consumer_factory(bootstrap, client_id="replica-0", session_timeout_ms=6000),
        on_promoted=reloader.handle_event,
        on_connected=reloader.request_alias_check,
    )
    task = asyncio.create_task(subscriber.run(stopping))
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog
from tenacity import RetryCallState

from driftloop_contracts import (
    MODEL_EVENTS_TOPIC,
    DeadLetter,
    EventError,
    ModelPromoted,
    decode_event,
)

from .dead_letters import DeadLetterPublisher
from .retry import Backoff, RetryHook, RetryStopped, retrying

__all__ = [
    "ModelEventsConsumer",
    "ModelEventsSubscriber",
    "model_events_consumer_factory",
]

log = structlog.get_logger(__name__)

#: Waits between reconnects: 0.5 s doubling up to 10 s.
DEFAULT_BACKOFF = Backoff(0.5, 10.0)


class ModelEventsConsumer(Protocol):
    """The slice of :class:`aiokafka.AIOKafkaConsumer` the subscriber uses (fakes in tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, *, timeout_ms: int) -> Mapping[Any, list[Any]]: ...

    def assignment(self) -> Any: ...

    async def end_offsets(self, partitions: list[Any]) -> Mapping[Any, int]: ...

    async def position(self, partition: Any) -> int: ...

    async def seek_to_beginning(self, *partitions: Any) -> Any: ...


ConsumerFactory = Callable[[], ModelEventsConsumer]
PromotedHandler = Callable[[ModelPromoted], Awaitable[object] | object]


def model_events_consumer_factory(
    bootstrap: str, *, client_id: str, session_timeout_ms: int, topic: str = MODEL_EVENTS_TOPIC
) -> ConsumerFactory:
    """Build group-less aiokafka consumers of ``topic`` that start at its end (a broadcast)."""

    def make() -> ModelEventsConsumer:
        from aiokafka import AIOKafkaConsumer

        consumer: ModelEventsConsumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=session_timeout_ms,
            request_timeout_ms=max(session_timeout_ms + 1_000, 10_000),
            metadata_max_age_ms=10_000,
        )
        return consumer

    return make


class ModelEventsSubscriber:
    """Reads ``model-events`` until stopped and hands each ``ModelPromoted`` to a handler."""

    def __init__(
        self,
        consumer_factory: ConsumerFactory,
        on_promoted: PromotedHandler,
        *,
        on_connected: Callable[[], object] | None = None,
        on_invalid: Callable[[str, EventError], object] | None = None,
        dead_letters: DeadLetterPublisher | None = None,
        dead_letter_client: str = "",
        on_retry: RetryHook | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        poll_timeout_ms: int = 1_000,
        reset_check_s: float = 5.0,
    ) -> None:
        self._factory = consumer_factory
        self._on_promoted = on_promoted
        self._on_connected = on_connected
        self._on_invalid = on_invalid
        self._dead_letters = dead_letters
        self._dead_letter_client = dead_letter_client
        self._stopping: asyncio.Event | None = None
        self._on_retry = on_retry
        self._backoff = backoff
        self._poll_timeout_ms = poll_timeout_ms
        self._reset_check_s = reset_check_s
        #: True while a consumer is started and reading (shown on ``/health/ready``).
        self.connected = False
        self.last_error: str | None = None

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Read until ``stopping`` is set (or the task is cancelled); never raises otherwise."""
        stopping = stopping or asyncio.Event()
        self._stopping = stopping
        policy = retrying(backoff=self._backoff, stopping=stopping, on_retry=self._retried)
        with contextlib.suppress(RetryStopped):
            async for attempt in policy:
                with attempt:
                    await self._session(stopping, attempt.retry_state)

    def _retried(self, attempt: int, error: BaseException, delay: float) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        log.warning(
            "model_events_consumer_failed",
            error=self.last_error,
            attempt=attempt,
            retry_in_s=round(delay, 2),
        )
        if self._on_retry is not None:
            self._on_retry(attempt, error, delay)

    async def _session(self, stopping: asyncio.Event, state: RetryCallState) -> None:
        consumer = self._factory()
        try:
            await consumer.start()
            self.connected = True
            self.last_error = None
            # A connection that worked starts the backoff over at its first wait.
            state.attempt_number = 1
            log.info("model_events_consumer_started")
            if self._on_connected is not None:
                self._on_connected()
            clock = asyncio.get_running_loop().time
            checked = clock()
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
                for tp, records in batches.items():
                    for record in records:
                        await self._on_record(tp, record)
                if clock() - checked > self._reset_check_s:
                    checked = clock()
                    await self._rewind_if_reset(consumer)
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    async def _rewind_if_reset(self, consumer: ModelEventsConsumer) -> None:
        """Seek to the beginning of any partition whose end is now behind our position."""
        try:
            partitions = list(consumer.assignment())
            if not partitions:
                return
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                position = await consumer.position(tp)
                if position > ends.get(tp, position):
                    log.warning(
                        "model_events_log_reset",
                        partition=tp.partition,
                        position=position,
                        end=ends[tp],
                    )
                    await consumer.seek_to_beginning(tp)
        except Exception as exc:  # broker away: the next check tries again
            log.debug("model_events_reset_check_failed", error=str(exc))

    async def _on_record(self, tp: Any, record: Any) -> None:
        try:
            event = decode_event(MODEL_EVENTS_TOPIC, record.value)
        except EventError as exc:
            log.warning(
                "model_event_invalid",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                reason=exc.reason,
                error=str(exc),
            )
            if self._on_invalid is not None:
                self._on_invalid(tp.topic, exc)
            if self._dead_letters is not None:
                letter = DeadLetter.of(
                    tp.topic,
                    tp.partition,
                    record.offset,
                    key=getattr(record, "key", None),
                    value=record.value,
                    reason=exc.reason,
                    error=str(exc),
                    record_timestamp_ms=getattr(record, "timestamp", None),
                    consumer=self._dead_letter_client,
                )
                await self._dead_letters.publish([letter], stopping=self._stopping)
            return
        result = self._on_promoted(event)
        if inspect.isawaitable(result):
            await result
