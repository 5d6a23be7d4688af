"""Event publishing off the request path: one bounded buffer per topic, drained by one task.

A request calls :meth:`EventPublisher.publish`, which only appends to its topic's in-memory
deque and returns; it never awaits the broker, so a slow or absent broker cannot slow a
prediction. The sender task takes up to ``batch_size`` events, hands them to an aiokafka
producer (``acks=all``; no idempotence, which the local Tansu broker does not support) and
waits for the acks.

Delivery policy (documented in the service README):

* **One buffer per topic** (``buffer_sizes``: ``predictions`` and ``feedback``), so a flood of
  one topic can never evict the other's events: feedback that was already answered 202 is not
  pushed out by predictions arriving during a broker outage.
* **Fair draining**: every batch is shared between the topics that have events waiting (each
  gets an equal share of ``batch_size``; a share a topic cannot fill goes to the others), and
  the topic served first rotates from batch to batch. Neither topic waits behind a backlog of
  the other. Within a topic the order is the order of :meth:`EventPublisher.publish`.
* **Failure**: a batch not acknowledged within ``ack_timeout_s`` has its unacknowledged events
  counted in ``driftloop_events_failed_total{topic}`` (one per attempt) and put back at the
  *front* of their topic's buffer, in order. The producer is then *aborted*: its internal
  retries are abandoned, so it never re-sends old batches into a broker that restarted empty
  (Tansu acknowledges records sent to a topic that does not exist yet and then loses them). A
  fresh producer is started with capped exponential backoff (:func:`driftloop_service.retrying`,
  counted in ``driftloop_retries_total{operation="publish"}``), and only once the broker lists
  every topic it must write to (checked with an all-topics metadata request, which cannot
  auto-create them).
* **Drop**: a topic's buffer holds at most its ``buffer_sizes[topic]`` waiting events (plus
  what is in flight). When full, that topic's **oldest** waiting event is dropped and counted
  in ``driftloop_events_dropped_total{topic}``: drift monitoring cares about what the model
  sees now, so recent traffic is worth more than old. Events still unsent at shutdown (after a
  bounded drain) are counted as dropped too, per topic, so for every topic
  ``published + dropped + buffered == accepted``.
* ``driftloop_events_buffered{topic}`` = that topic's waiting + in flight.
* **Ledger** (optional, :mod:`.ledger`): every accepted event's key is written to a
  memory-mapped slot, freed when the event is acknowledged or counted as dropped, and each
  acknowledgement records its partition's offset. What a SIGKILL leaves there is what the
  process had not delivered; the next incarnation counts it (:mod:`.recovery`). The offset is
  only advanced while no event of the topic is awaiting a re-send, so an unacknowledged event
  that reached the broker anyway always lies after the recorded offset.

Delivery is at-least-once: a batch whose ack was lost is re-sent, so consumers dedupe by key
(the ``request_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from driftloop_service import Backoff, RetryStopped, retrying

from .ledger import EventLedger, NullLedger
from .metrics import Metrics

log = structlog.get_logger(__name__)


class Producer(Protocol):
    """The slice of :class:`aiokafka.AIOKafkaProducer` the publisher uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        """Enqueue one record; returns a future resolved by the broker's ack."""

    async def abort(self) -> None:
        """Close without delivering (or retrying) anything still pending."""


ProducerFactory = Callable[[], Producer]


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    topic: str
    key: bytes
    value: bytes
    #: The event's slot in the ledger (-1: none).
    slot: int = -1
    #: Sent at least once without an ack (it may be on the broker already).
    resent: bool = False


class TopicsMissing(RuntimeError):
    """The broker is up but does not (yet) have a topic we write to."""


class KafkaProducer:
    """:class:`aiokafka.AIOKafkaProducer` plus a topic check at start and an abort.

    ``acks=all``; no idempotence (Tansu rejects it). aiokafka has no way to drop pending
    batches, so :meth:`abort` uses its 0.14 internals (sender task, accumulator), falling back
    to a bounded ``stop()`` if they change.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topics: tuple[str, ...],
        linger_ms: int,
        request_timeout_ms: int,
        client_id: str,
    ) -> None:
        from aiokafka import AIOKafkaProducer

        self._topics = topics
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=request_timeout_ms,
            # Far beyond ack_timeout_s: aiokafka never re-sends a batch by itself; the publisher
            # aborts first and re-queues, and a fresh producer checks the topics exist. An
            # internal retry could land in a restarted Tansu before its topics are recreated.
            retry_backoff_ms=10_000,
            metadata_max_age_ms=30_000,
            connections_max_idle_ms=60_000,
        )

    async def start(self) -> None:
        await self._producer.start()
        cluster = await self._producer.client.fetch_all_metadata()
        missing = sorted(set(self._topics) - set(cluster.topics()))
        if missing:
            await self.abort()
            raise TopicsMissing(f"broker has no topic {', '.join(missing)} yet")

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        return await self._producer.send(topic, value, key=key)

    async def abort(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        producer: Any = self._producer
        try:
            producer._closed = True
            await producer._sender.close()
            producer._message_accumulator.fail_all(KafkaConnectionError(ABORT_MESSAGE))
            await producer.client.close()
        except Exception as exc:  # internals moved: a bounded graceful stop is second best
            log.debug("producer_abort_fallback", error=str(exc))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 2)


ABORT_MESSAGE = "producer aborted"


class AbortedBatchFilter(logging.Filter):
    """Drops asyncio's "exception never retrieved" for batches :meth:`abort` fails on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return ABORT_MESSAGE not in record.getMessage()


def aiokafka_producer_factory(
    bootstrap: str,
    *,
    topics: tuple[str, ...],
    linger_ms: int,
    request_timeout_ms: int,
    client_id: str,
) -> ProducerFactory:
    """Build :class:`KafkaProducer` instances for this service."""

    def make() -> Producer:
        return KafkaProducer(
            bootstrap,
            topics=topics,
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            client_id=client_id,
        )

    return make


class EventPublisher:
    """Bounded, non-blocking per-topic event buffers with a background sender (see module docstring)."""

    def __init__(
        self,
        producer_factory: ProducerFactory,
        metrics: Metrics,
        *,
        buffer_sizes: Mapping[str, int],
        batch_size: int = 1_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        ack_timeout_s: float = 2.0,
        drain_timeout_s: float = 5.0,
        ledger: EventLedger | None = None,
    ) -> None:
        if not buffer_sizes or min(buffer_sizes.values()) < 1:
            raise ValueError(f"every topic needs a buffer of at least one event: {buffer_sizes}")
        self._factory = producer_factory
        self._metrics = metrics
        self._capacity = dict(buffer_sizes)
        self._batch_size = batch_size
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._ack_timeout = ack_timeout_s
        self._drain_timeout = drain_timeout_s
        self._buffers: dict[str, deque[OutgoingEvent]] = {t: deque() for t in buffer_sizes}
        self._in_flight: dict[str, int] = dict.fromkeys(buffer_sizes, 0)
        self._ledger = ledger or NullLedger()
        #: Per topic, pending events flagged ``resent`` (see the module docstring, "Ledger").
        self._resent: dict[str, int] = dict.fromkeys(buffer_sizes, 0)
        #: Index of the topic served first in the next batch (rotates for fairness).
        self._first = 0
        self._wakeup = asyncio.Event()
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failures = 0
        self.connected = False
        self.last_error: str | None = None
        for topic in self._buffers:  # a 0 series from the start: the alerts' zero fillers read it
            self._update_gauge(topic)

    # --- request path ---------------------------------------------------------------------

    def reserve(self, topic: str, key: bytes) -> int:
        """Record in the ledger an event accepted now but published later (held for the
        shadow); returns its slot, to hand to :meth:`publish`. Were the process killed in
        between, the next incarnation finds the key pending and counts the event as lost if it
        is not on the topic, as it does for the events waiting in a buffer."""
        return self._ledger.add(topic, key)

    def publish(self, topic: str, key: bytes, value: bytes, slot: int | None = None) -> None:
        """Accept one event; never blocks. Drops the topic's oldest if its buffer is full.

        ``slot``: the ledger slot :meth:`reserve` gave the event (``None``: record it now).
        Raises :class:`KeyError` only for a topic the publisher was not built for (a bug).
        """
        buffer = self._buffers[topic]
        if self._stopping.is_set():
            if slot is not None:
                self._ledger.settle(slot)  # dropped and counted: no longer pending
            self._metrics.dropped(topic)
            return
        if len(buffer) >= self._capacity[topic]:
            self._settle(buffer.popleft())
            self._metrics.dropped(topic)
        if slot is None:
            slot = self._ledger.add(topic, key)
        buffer.append(OutgoingEvent(topic, key, value, slot))
        self._update_gauge(topic)
        self._wakeup.set()

    @staticmethod
    def ledger_slots(buffer_sizes: Mapping[str, int], batch_size: int, held: int = 0) -> int:
        """Most events that can be pending at once: every buffer full, a batch in flight and
        ``held`` events reserved before they are published (the shadow's bound)."""
        return sum(buffer_sizes.values()) + batch_size + held

    @property
    def buffered(self) -> int:
        """Waiting plus in flight, all topics."""
        return sum(self.buffered_by_topic().values())

    def buffered_by_topic(self) -> dict[str, int]:
        """Waiting plus in flight, per topic."""
        return {t: len(b) + self._in_flight[t] for t, b in self._buffers.items()}

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    async def stop(self) -> None:
        """Drain for up to ``drain_timeout_s``, then count what is left as dropped."""
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), self._drain_timeout)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        left = {t: len(b) for t, b in self._buffers.items() if b}
        for topic, count in left.items():
            for event in self._buffers[topic]:
                self._settle(event)
            self._buffers[topic].clear()
            self._metrics.dropped(topic, count)
            self._update_gauge(topic)
        if left:
            log.warning("events_dropped_at_shutdown", count=sum(left.values()), by_topic=left)
        await self._close_producer()

    # --- sender ---------------------------------------------------------------------------

    async def _run(self) -> None:
        policy = retrying(
            backoff=self._backoff,
            retry_on=_DeliveryFailed,
            stopping=self._stopping,
            on_retry=self._delivery_failed,
        )
        while True:
            if not any(self._buffers.values()):
                if self._stopping.is_set():
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await policy(self._send_next_batch)
            except RetryStopped:
                # Shutting down with the broker away: stop() counts the rest as dropped.
                return
            if self._failures:
                log.info("event_delivery_recovered", after_failures=self._failures)
                self._failures = 0
            self._update_gauges()

    async def _send_next_batch(self) -> None:
        """Deliver the next fair batch; on failure put it back and raise :class:`_DeliveryFailed`."""
        try:
            producer = await self._ensure_producer()
        except Exception as exc:
            raise _DeliveryFailed(f"producer start failed: {exc}") from exc
        batch = self._take_batch()
        for event in batch:
            self._in_flight[event.topic] += 1
        try:
            failed = await self._deliver(producer, batch)
        except asyncio.CancelledError:
            # Unconfirmed: back in the buffers, where stop() counts them as dropped.
            self._requeue(batch)
            raise
        finally:
            self._in_flight = dict.fromkeys(self._in_flight, 0)
        if failed:
            self._requeue(failed)
            await self._close_producer(abort=True)
            self._update_gauges()
            raise _DeliveryFailed(self.last_error or "delivery failed")

    def _take_batch(self) -> list[OutgoingEvent]:
        """Up to ``batch_size`` events, shared equally by the topics that have some waiting.

        A share a topic cannot fill is handed to the others in the next round; the topic served
        first rotates, so with a batch smaller than the number of topics they still alternate.
        Each topic's events stay in publish order.
        """
        topics = list(self._buffers)
        self._first = (self._first + 1) % len(topics)
        active = [self._buffers[t] for t in topics[self._first :] + topics[: self._first]]
        active = [b for b in active if b]
        batch: list[OutgoingEvent] = []
        while active and len(batch) < self._batch_size:
            share = max(1, (self._batch_size - len(batch)) // len(active))
            for buffer in active:
                take = min(share, len(buffer), self._batch_size - len(batch))
                batch.extend(buffer.popleft() for _ in range(take))
            active = [b for b in active if b]
        return batch

    def _delivery_failed(self, attempt: int, error: BaseException, delay: float) -> None:
        self._failures = attempt
        self._metrics.retries.hook("publish")(attempt, error, delay)
        self.connected = False
        self.last_error = str(error)
        log.warning(
            "event_delivery_failed",
            reason=self.last_error,
            buffered=self.buffered,
            retry_in_s=round(delay, 2),
            consecutive_failures=attempt,
        )

    async def _deliver(self, producer: Producer, batch: list[OutgoingEvent]) -> list[OutgoingEvent]:
        """Send a batch and wait for its acks; returns the events that were not acknowledged."""
        futures: list[Any] = []
        unsent: list[OutgoingEvent] = []
        for i, event in enumerate(batch):
            try:
                futures.append(await producer.send(event.topic, event.value, key=event.key))
            except Exception as exc:  # metadata timeout, full accumulator, closed producer
                self.last_error = f"{type(exc).__name__}: {exc}"
                unsent = batch[i:]
                break
        if futures:
            await asyncio.wait(futures, timeout=self._ack_timeout)
        failed: list[OutgoingEvent] = []
        offsets: dict[tuple[str, int], int] = {}
        for event, future in zip(batch, futures, strict=False):
            if not future.done():
                self.last_error = f"no ack within {self._ack_timeout}s"
                future.add_done_callback(_retrieve)  # the abort fails it later; nobody waits
                failed.append(event)
            elif future.cancelled() or future.exception() is not None:
                error = "cancelled" if future.cancelled() else future.exception()
                self.last_error = f"{type(error).__name__}: {error}"
                failed.append(event)
            else:
                self._metrics.published(event.topic)
                self._settle(event)
                meta = future.result()
                partition, offset = getattr(meta, "partition", None), getattr(meta, "offset", None)
                if isinstance(partition, int) and isinstance(offset, int):
                    where = (event.topic, partition)
                    offsets[where] = max(offset, offsets.get(where, -1))
        for (topic, partition), offset in offsets.items():
            if not self._resent[topic]:
                self._ledger.acked(topic, partition, offset)
        failed.extend(unsent)
        for event in failed:
            self._metrics.failed(event.topic)
        self.connected = not failed
        return failed

    def _requeue(self, failed: list[OutgoingEvent]) -> None:
        """Put failed events back at the front of their topic's buffer (oldest first), then
        enforce each topic's capacity (dropping that topic's oldest)."""
        for topic, buffer in self._buffers.items():
            events = [e for e in failed if e.topic == topic]
            if not events:
                continue
            self._resent[topic] += sum(not e.resent for e in events)
            buffer.extendleft(reversed([replace(e, resent=True) for e in events]))
            excess = len(buffer) - self._capacity[topic]
            if excess > 0:
                for _ in range(excess):
                    self._settle(buffer.popleft())
                self._metrics.dropped(topic, excess)

    def _settle(self, event: OutgoingEvent) -> None:
        """The event left the publisher (acknowledged or dropped): free its ledger slot."""
        self._ledger.settle(event.slot)
        if event.resent:
            self._resent[event.topic] -= 1

    async def _ensure_producer(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.abort()
                raise
            self._producer = producer
            log.info("event_producer_started")
        return self._producer

    async def _close_producer(self, *, abort: bool = False) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
        if producer is None:
            return
        with contextlib.suppress(Exception):
            if abort:
                await producer.abort()
            else:
                await asyncio.wait_for(producer.stop(), 5)

    def _update_gauge(self, topic: str) -> None:
        self._metrics.set_buffered(topic, len(self._buffers[topic]) + self._in_flight[topic])

    def _update_gauges(self) -> None:
        for topic in self._buffers:
            self._update_gauge(topic)


class _DeliveryFailed(Exception):
    """A batch (or the producer start) failed; its events are back in the buffer."""


def _retrieve(future: Any) -> None:
    """Mark a late failure as seen so asyncio does not log "exception never retrieved"."""
    if not future.cancelled():
        future.exception()
