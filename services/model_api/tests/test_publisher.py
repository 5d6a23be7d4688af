"""The event buffer: never blocks, drops the oldest when full, re-queues failures, counts all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from driftloop_model_api.metrics import Metrics
from driftloop_model_api.publisher import EventPublisher

from .conftest import RecordingProducer

TOPIC = "predictions"


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def counts(metrics: Metrics) -> dict[str, float]:
    return {
        name: metrics.value(f"driftloop_events_{name}_total", topic=TOPIC)
        for name in ("published", "failed", "dropped")
    }


async def test_publish_delivers_in_order() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    publisher = EventPublisher(lambda: producer, metrics, buffer_size=10, batch_size=3)
    await publisher.start()
    for i in range(7):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await until(lambda: counts(metrics)["published"] == 7)
    assert [k for _, k, _ in producer.sent] == [str(i).encode() for i in range(7)]
    assert counts(metrics) == {"published": 7, "failed": 0, "dropped": 0}
    await publisher.stop()
    assert metrics.value("driftloop_events_buffered") == 0


async def test_full_buffer_drops_the_oldest_and_counts_it() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True  # broker away from the start
    publisher = EventPublisher(
        lambda: producer,
        metrics,
        buffer_size=5,
        batch_size=2,
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )
    await publisher.start()
    for i in range(12):  # publish is synchronous: it cannot wait for the broker
        publisher.publish(TOPIC, str(i).encode(), b"v")
    assert publisher.buffered == 5
    assert counts(metrics)["dropped"] == 7
    producer.fail_start = False
    await until(lambda: counts(metrics)["published"] == 5)
    assert [k for _, k, _ in producer.sent] == [str(i).encode() for i in range(7, 12)]
    assert counts(metrics) == {"published": 5, "failed": 0, "dropped": 7}
    await publisher.stop()


async def test_failed_delivery_is_requeued_in_order_and_delivered_after_recovery() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    publisher = EventPublisher(
        lambda: producer,
        metrics,
        buffer_size=100,
        batch_size=4,
        retry_initial_s=0.01,
        retry_max_s=0.02,
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


async def test_stop_counts_undeliverable_events_as_dropped() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail_start = True
    publisher = EventPublisher(
        lambda: producer,
        metrics,
        buffer_size=100,
        batch_size=4,
        retry_initial_s=0.01,
        retry_max_s=0.02,
        drain_timeout_s=0.2,
    )
    await publisher.start()
    for i in range(6):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await publisher.stop()
    assert counts(metrics)["dropped"] == 6
    assert metrics.value("driftloop_events_buffered") == 0
    publisher.publish(TOPIC, b"late", b"v")  # after stop: counted, not kept
    assert counts(metrics)["dropped"] == 7


async def test_stop_drains_when_the_broker_is_up() -> None:
    producer, metrics = RecordingProducer(), Metrics("r")
    publisher = EventPublisher(lambda: producer, metrics, buffer_size=100, batch_size=4)
    await publisher.start()
    for i in range(9):
        publisher.publish(TOPIC, str(i).encode(), b"v")
    await publisher.stop()
    assert len(producer.sent) == 9 and counts(metrics)["dropped"] == 0


async def test_unacknowledged_batch_counts_as_failed_and_is_requeued() -> None:
    class Silent(RecordingProducer):
        """A broker that takes the records and never answers (it is restarting)."""

        async def send(
            self, topic: str, value: bytes | None = None, key: bytes | None = None
        ) -> asyncio.Future[None]:
            if self.fail:
                return asyncio.get_running_loop().create_future()
            return await super().send(topic, value, key)

    producer, metrics = Silent(), Metrics("r")
    producer.fail = True
    publisher = EventPublisher(
        lambda: producer,
        metrics,
        buffer_size=100,
        batch_size=10,
        retry_initial_s=0.01,
        retry_max_s=0.02,
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
