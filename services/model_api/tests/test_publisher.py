"""The event buffers: one per topic, never block, drop the topic's oldest when full, drain the
topics fairly, re-queue failures in order, count everything per topic."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC
from driftloop_model_api.metrics import Metrics
from driftloop_model_api.publisher import EventPublisher

from .conftest import RecordingProducer

TOPIC = PREDICTIONS_TOPIC


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def counts(metrics: Metrics, topic: str = TOPIC) -> dict[str, float]:
    return {
        name: metrics.value(f"driftloop_events_{name}_total", topic=topic)
        for name in ("published", "failed", "dropped")
    }


def gauge(metrics: Metrics, topic: str) -> float:
    return metrics.value("driftloop_events_buffered", topic=topic)


def sizes(predictions: int, feedback: int = 100) -> dict[str, int]:
    return {PREDICTIONS_TOPIC: predictions, FEEDBACK_TOPIC: feedback}


def keys(producer: RecordingProducer, topic: str) -> list[bytes]:
    return [k for t, k, _ in producer.sent if t == topic]


def numbered(prefix: str, ids: range) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in ids]


class Silent(RecordingProducer):
    """A broker that takes the records and never answers while ``fail`` is set (restarting)."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[bytes] = []

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[None]:
        self.handed.append(key or b"")
        if self.fail:
            return asyncio.get_running_loop().create_future()
        return await super().send(topic, value, key)


def fast_retrying(producer: RecordingProducer, metrics: Metrics, **kw: Any) -> EventPublisher:
    """A publisher over ``producer`` whose reconnect backoff is milliseconds, not seconds."""
    return EventPublisher(lambda: producer, metrics, retry_initial_s=0.01, retry_max_s=0.02, **kw)


async def test_publish_delivers_in_order() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    publisher = EventPublisher(lambda: producer, metrics, buffer_sizes=sizes(10), batch_size=3)
    await publisher.start()
    for i in range(7):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await until(lambda: counts(metrics)["published"] == 7)
    assert [k for _, k, _ in producer.sent] == [str(i).encode() for i in range(7)]
    assert counts(metrics) == {"published": 7, "failed": 0, "dropped": 0}
    await publisher.stop()
    assert gauge(metrics, TOPIC) == 0 and gauge(metrics, FEEDBACK_TOPIC) == 0


async def test_buffered_gauge_exists_per_topic_before_any_event() -> None:
    """The alerts' zero fillers (``sum by (replica) (driftloop_events_buffered) * 0``) need it."""
    metrics = Metrics("r")
    EventPublisher(RecordingProducer, metrics, buffer_sizes=sizes(10))
    for topic in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC):
        sample = metrics.registry.get_sample_value(
            "driftloop_events_buffered", {"replica": "r", "topic": topic}
        )
        assert sample == 0.0


async def test_full_buffer_drops_the_oldest_and_counts_it() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True  # broker away from the start
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(5),
        batch_size=2,
    )
    await publisher.start()
    for i in range(12):  # publish is synchronous: it cannot wait for the broker
        publisher.publish(TOPIC, str(i).encode(), b"v")
    assert publisher.buffered == 5 and gauge(metrics, TOPIC) == 5
    assert counts(metrics)["dropped"] == 7
    producer.fail_start = False
    await until(lambda: counts(metrics)["published"] == 5)
    assert [k for _, k, _ in producer.sent] == [str(i).encode() for i in range(7, 12)]
    assert counts(metrics) == {"published": 5, "failed": 0, "dropped": 7}
    await publisher.stop()


async def test_a_flood_of_predictions_never_evicts_buffered_feedback() -> None:
    """Feedback answered 202 survives any number of predictions during an outage."""
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True  # broker away
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(10, feedback=5),
        batch_size=4,
    )
    await publisher.start()
    published = 0
    for f in range(3):
        publisher.publish(FEEDBACK_TOPIC, f"f{f}".encode(), b"v")
        for _ in range(40):  # 120 predictions in all, 12 x the predictions buffer
            publisher.publish(PREDICTIONS_TOPIC, f"p{published}".encode(), b"v")
            published += 1
    assert counts(metrics, PREDICTIONS_TOPIC)["dropped"] == 110
    assert counts(metrics, FEEDBACK_TOPIC)["dropped"] == 0
    assert gauge(metrics, PREDICTIONS_TOPIC) == 10 and gauge(metrics, FEEDBACK_TOPIC) == 3

    producer.fail_start = False  # broker back
    await until(
        lambda: (
            counts(metrics, FEEDBACK_TOPIC)["published"] == 3
            and counts(metrics, PREDICTIONS_TOPIC)["published"] == 10
        )
    )
    assert keys(producer, FEEDBACK_TOPIC) == numbered("f", range(3))
    assert keys(producer, PREDICTIONS_TOPIC) == numbered("p", range(110, 120))
    assert counts(metrics, PREDICTIONS_TOPIC) == {"published": 10, "failed": 0, "dropped": 110}
    assert counts(metrics, FEEDBACK_TOPIC) == {"published": 3, "failed": 0, "dropped": 0}
    assert gauge(metrics, PREDICTIONS_TOPIC) == 0 and gauge(metrics, FEEDBACK_TOPIC) == 0
    await publisher.stop()


async def test_a_flood_of_feedback_never_evicts_buffered_predictions() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(10, feedback=5),
        batch_size=4,
    )
    await publisher.start()
    for i in range(2):
        publisher.publish(PREDICTIONS_TOPIC, f"p{i}".encode(), b"v")
    for i in range(50):
        publisher.publish(FEEDBACK_TOPIC, f"f{i}".encode(), b"v")
    producer.fail_start = False
    await until(
        lambda: (
            counts(metrics, FEEDBACK_TOPIC)["published"] == 5
            and counts(metrics, PREDICTIONS_TOPIC)["published"] == 2
        )
    )
    assert keys(producer, PREDICTIONS_TOPIC) == numbered("p", range(2))
    assert keys(producer, FEEDBACK_TOPIC) == numbered("f", range(45, 50))
    assert counts(metrics, PREDICTIONS_TOPIC) == {"published": 2, "failed": 0, "dropped": 0}
    assert counts(metrics, FEEDBACK_TOPIC) == {"published": 5, "failed": 0, "dropped": 45}
    await publisher.stop()


@pytest.mark.parametrize(
    ("backlog", "few"),
    [(PREDICTIONS_TOPIC, FEEDBACK_TOPIC), (FEEDBACK_TOPIC, PREDICTIONS_TOPIC)],
)
async def test_topics_are_drained_fairly(backlog: str, few: str) -> None:
    """Neither topic waits behind the other's backlog: every batch carries both."""
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True  # let both backlogs build up first
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(1_000, feedback=1_000),
        batch_size=4,
    )
    await publisher.start()
    for i in range(200):
        publisher.publish(backlog, f"b{i}".encode(), b"v")
    for i in range(6):
        publisher.publish(few, f"f{i}".encode(), b"v")
    producer.fail_start = False
    await until(
        lambda: (
            counts(metrics, backlog)["published"] == 200 and counts(metrics, few)["published"] == 6
        )
    )
    sent = [t for t, _, _ in producer.sent]
    # 4 per batch, shared 2 + 2: the 6 few are out within the first 3 batches (12 sends).
    assert sent[:12].count(few) == 6, sent[:12]
    assert keys(producer, backlog) == numbered("b", range(200))
    assert keys(producer, few) == numbered("f", range(6))
    await publisher.stop()


async def test_batches_of_one_alternate_between_topics() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(100),
        batch_size=1,
    )
    await publisher.start()
    for i in range(5):
        publisher.publish(PREDICTIONS_TOPIC, f"p{i}".encode(), b"v")
        publisher.publish(FEEDBACK_TOPIC, f"f{i}".encode(), b"v")
    producer.fail_start = False
    await until(
        lambda: (
            counts(metrics, PREDICTIONS_TOPIC)["published"] == 5
            and counts(metrics, FEEDBACK_TOPIC)["published"] == 5
        )
    )
    sent = [t for t, _, _ in producer.sent]
    assert all(a != b for a, b in itertools.pairwise(sent)), sent
    await publisher.stop()


async def test_failed_delivery_is_requeued_in_order_and_delivered_after_recovery() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(100),
        batch_size=4,
    )
    await publisher.start()
    producer.fail = True
    for i in range(10):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await until(lambda: counts(metrics)["failed"] >= 8)
    assert producer.sent == [] and publisher.buffered == 10
    assert not publisher.connected
    producer.fail = False
    await until(lambda: counts(metrics)["published"] == 10)
    assert [k for _, k, _ in producer.sent] == [str(i).encode() for i in range(10)]
    assert counts(metrics)["dropped"] == 0
    assert producer.aborted >= 1 and producer.started >= 2  # aborted and rebuilt
    await publisher.stop()


async def test_requeued_batch_goes_before_newer_events_of_its_topic() -> None:
    """A batch that fails while newer events arrive is put back in front of them, per topic;
    the capacity is then enforced per topic (the oldest predictions go, no feedback)."""
    producer, metrics = Silent(), Metrics("r")
    producer.fail = True
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(6, feedback=100),
        batch_size=8,
        ack_timeout_s=0.3,
    )
    await publisher.start()
    for i in range(4):
        publisher.publish(PREDICTIONS_TOPIC, f"p{i}".encode(), b"v")
        publisher.publish(FEEDBACK_TOPIC, f"f{i}".encode(), b"v")
    await until(lambda: len(producer.handed) == 8)  # the first batch is in flight
    for i in range(4, 8):  # newer events arrive while it waits for its acks
        publisher.publish(PREDICTIONS_TOPIC, f"p{i}".encode(), b"v")
        publisher.publish(FEEDBACK_TOPIC, f"f{i}".encode(), b"v")
    await until(lambda: counts(metrics, FEEDBACK_TOPIC)["failed"] >= 4)
    # Re-queued in front: predictions hold 4 + 4 > 6, so the two oldest (p0, p1) go.
    assert counts(metrics, PREDICTIONS_TOPIC)["dropped"] == 2
    producer.fail = False
    await until(
        lambda: (
            counts(metrics, PREDICTIONS_TOPIC)["published"] == 6
            and counts(metrics, FEEDBACK_TOPIC)["published"] == 8
        )
    )
    assert keys(producer, PREDICTIONS_TOPIC) == numbered("p", range(2, 8))
    assert keys(producer, FEEDBACK_TOPIC) == numbered("f", range(8))
    assert counts(metrics, PREDICTIONS_TOPIC)["dropped"] == 2
    assert counts(metrics, FEEDBACK_TOPIC)["dropped"] == 0
    await publisher.stop()


async def test_stop_counts_undeliverable_events_as_dropped_per_topic() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(100),
        batch_size=4,
        drain_timeout_s=0.2,
    )
    await publisher.start()
    for i in range(6):
        publisher.publish(PREDICTIONS_TOPIC, str(i).encode(), b"v")
    for i in range(3):
        publisher.publish(FEEDBACK_TOPIC, str(i).encode(), b"v")
    await publisher.stop()
    assert counts(metrics, PREDICTIONS_TOPIC) == {"published": 0, "failed": 0, "dropped": 6}
    assert counts(metrics, FEEDBACK_TOPIC) == {"published": 0, "failed": 0, "dropped": 3}
    assert gauge(metrics, PREDICTIONS_TOPIC) == 0 and gauge(metrics, FEEDBACK_TOPIC) == 0
    assert publisher.buffered == 0
    publisher.publish(FEEDBACK_TOPIC, b"late", b"v")  # after stop: counted, not kept
    assert counts(metrics, FEEDBACK_TOPIC)["dropped"] == 4
    assert counts(metrics, PREDICTIONS_TOPIC)["dropped"] == 6


async def test_stop_drains_when_the_broker_is_up() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    publisher = EventPublisher(lambda: producer, metrics, buffer_sizes=sizes(100), batch_size=4)
    await publisher.start()
    for i in range(9):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await publisher.stop()
    assert len(producer.sent) == 9 and counts(metrics)["dropped"] == 0


async def test_unacknowledged_batch_counts_as_failed_and_is_requeued() -> None:
    producer, metrics = Silent(), Metrics("r")
    producer.fail = True
    publisher = fast_retrying(
        producer,
        metrics,
        buffer_sizes=sizes(100),
        batch_size=10,
        ack_timeout_s=0.05,
    )
    await publisher.start()
    for i in range(3):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await until(lambda: counts(metrics)["failed"] >= 3)
    assert producer.aborted >= 1
    producer.fail = False
    await until(lambda: counts(metrics)["published"] == 3)
    assert [k for _, k, _ in producer.sent] == [str(i).encode() for i in range(3)]
    await publisher.stop()
