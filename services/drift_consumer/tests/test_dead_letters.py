"""dead_letters.py + committer.py: every bad record's dead letter is acknowledged before the
commit passes it; a dead letter that keeps failing is given up and counted, not waited for
forever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.structs import TopicPartition

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC, decode_dead_letter, dlq_topic
from driftloop_contracts.poison import feedback_poison
from driftloop_drift_consumer.feedback_join import JoinStore
from driftloop_drift_consumer.loop import DriftLoop
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.reference import ReferenceManager
from driftloop_drift_consumer.sinks.influx import InfluxSink
from driftloop_drift_consumer.windows import WindowManager, WindowPolicy
from driftloop_service import Backoff, DeadLetterPublisher

from .conftest import FakeAsyncRedis, FakeConsumer, ReferenceData, feedback_event, until
from .test_loop import Harness, committed, metric, start, stop

FEEDBACK_0 = TopicPartition(FEEDBACK_TOPIC, 0)


@dataclass
class FakeDlqBroker:
    """Dead-letter topics: ``fail_sends`` sends raise, acks wait for ``acks_open``."""

    fail_sends: int = 0
    acks_open: asyncio.Event = field(default_factory=asyncio.Event)
    acked: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    in_flight: int = 0
    sends: int = 0


class FakeDlqProducer:
    def __init__(self, broker: FakeDlqBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[Any]:
        b = self.broker
        b.sends += 1
        if b.fail_sends > 0:
            b.fail_sends -= 1
            raise ConnectionError("broker away")
        b.in_flight += 1

        async def ack() -> None:
            await b.acks_open.wait()
            b.in_flight -= 1
            b.acked.append((topic, key, value))

        return asyncio.ensure_future(ack())


class CommitWatcher(FakeConsumer):
    """Records, at each commit, which dead letters the broker had acknowledged by then."""

    snapshots: list[tuple[dict[TopicPartition, int], set[bytes]]]
    broker: FakeDlqBroker

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.snapshots.append((dict(offsets), {key for _, key, _ in self.broker.acked}))
        await super().commit(offsets)


def make_loop(h: Harness, broker: FakeDlqBroker, *, attempts: int = 8) -> DriftLoop:
    metrics = ConsumerMetrics()
    snapshots: list[tuple[dict[TopicPartition, int], set[bytes]]] = []

    def consumer() -> FakeConsumer:
        c = CommitWatcher(h.log, [FEEDBACK_0, TopicPartition(PREDICTIONS_TOPIC, 0)])
        c.snapshots, c.broker = snapshots, broker
        h.consumers.append(c)
        return c

    s = h.settings
    loop = DriftLoop(
        s,
        metrics=metrics,
        windows=WindowManager(WindowPolicy(s.window_events, s.window_seconds, s.min_window_events)),
        references=ReferenceManager(h.source, s.state_dir),
        join_store=JoinStore(FakeAsyncRedis(h.redis), s.join_ttl_seconds),
        labelled=h.writer(),
        influx=InfluxSink(
            "http://influx",
            "driftloop",
            client=httpx.AsyncClient(transport=httpx.MockTransport(h.influx.handler)),
            retry_initial_s=0.001,
            attempts=1,
        ),
        reports=None,
        consumer_factory=consumer,
        model_events_factory=None,
        dead_letters=DeadLetterPublisher(
            lambda: FakeDlqProducer(broker),
            on_outcome=lambda topic, outcome: metrics.dead_letters.labels(topic, outcome).inc(),
            on_retry=metrics.retries.hook("dead_letter_publish"),
            backoff=Backoff(0.001, 0.01),
            attempts=attempts,
        ),
    )
    loop.commit_snapshots = snapshots  # type: ignore[attr-defined]
    return loop


def poison(h: Harness, n: int) -> list[bytes]:
    """``n`` bad feedback records on partition 0 (offsets 0..n-1); returns their values."""
    corpus = feedback_poison(json.loads(feedback_event("p", 1.0).to_bytes()))
    values = [case.value or b"" for case in corpus[1 : n + 1]]  # [0] is a null value
    for value in values:
        h.log.append(FEEDBACK_TOPIC, 0, value)
    return values


def keys(n: int) -> set[bytes]:
    return {f"{FEEDBACK_TOPIC}:0:{offset}".encode() for offset in range(n)}


async def test_no_commit_passes_a_dead_letter_before_the_broker_acknowledged_it(
    tmp_path: Path, reference: ReferenceData
) -> None:
    """The first two sends fail, the acks are held back: nothing is committed until every dead
    letter is acknowledged; then the commit passes them, and each is in the DLQ once."""
    h = Harness(tmp_path, reference)
    values = poison(h, 3)
    broker = FakeDlqBroker(fail_sends=2)
    loop = make_loop(h, broker)
    tasks = await start(loop)
    await until(lambda: broker.in_flight == 1 and broker.sends == 3)  # 2 failed, 1 waits
    assert committed(h, FEEDBACK_TOPIC, 0) is None
    assert loop.status.consumer_started
    # a commit attempted meanwhile (as the rebalance listener would) stops before the first
    # unacknowledged dead letter, though the sinks would allow offset 3
    assert loop.state.offsets_to_commit({FEEDBACK_0}) == {FEEDBACK_0: 3}
    await loop.committer.commit(h.consumers[-1])
    assert committed(h, FEEDBACK_TOPIC, 0) in (None, 0)
    broker.acks_open.set()
    await until(lambda: committed(h, FEEDBACK_TOPIC, 0) == 3)

    snapshots: list[Any] = loop.commit_snapshots  # type: ignore[attr-defined]
    for offsets, acked in snapshots:
        through = offsets.get(FEEDBACK_0, 0)
        assert keys(through) <= acked, (offsets, acked)  # every record committed past: acked
    assert sorted(key for _, key, _ in broker.acked) == sorted(keys(3))  # once each
    letters = [decode_dead_letter(value) for _, _, value in broker.acked]
    assert {topic for topic, _, _ in broker.acked} == {dlq_topic(FEEDBACK_TOPIC)}
    by_offset = {letter.offset: letter for letter in letters}
    for offset, value in enumerate(values):
        letter = by_offset[offset]
        assert (letter.source_topic, letter.partition) == (FEEDBACK_TOPIC, 0)
        assert letter.value_head == value[:1024] and letter.value_size == len(value)
    assert (
        metric(loop, "driftloop_dead_letters_total", topic=FEEDBACK_TOPIC, outcome="published") == 3
    )
    assert metric(loop, "driftloop_dead_letters_total", topic=FEEDBACK_TOPIC, outcome="failed") == 0
    assert metric(loop, "driftloop_retries_total", operation="dead_letter_publish") == 1
    assert metric(loop, "driftloop_retries_total", operation="consumer_restart") == 0
    await stop(loop, tasks)


async def test_a_dead_letter_that_keeps_failing_is_given_up_counted_and_passed(
    tmp_path: Path, reference: ReferenceData
) -> None:
    """A dead-letter topic that refuses every write does not hold valid traffic forever: after
    the tries each letter is counted ``failed`` and the commit moves on."""
    h = Harness(tmp_path, reference)
    poison(h, 2)
    broker = FakeDlqBroker(fail_sends=10**9)
    loop = make_loop(h, broker, attempts=3)
    tasks = await start(loop)
    await until(lambda: committed(h, FEEDBACK_TOPIC, 0) == 2)
    assert broker.sends == 2 * 3 and broker.acked == []
    failed: Callable[[], float] = lambda: metric(  # noqa: E731
        loop, "driftloop_dead_letters_total", topic=FEEDBACK_TOPIC, outcome="failed"
    )
    assert failed() == 2
    assert metric(loop, "driftloop_events_invalid_total", topic=FEEDBACK_TOPIC, reason="malformed")
    await stop(loop, tasks)


async def test_without_a_publisher_bad_records_are_counted_and_committed(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    poison(h, 2)
    loop = h.make_loop()  # dead_letters=None
    tasks = await start(loop)
    await until(lambda: committed(h, FEEDBACK_TOPIC, 0) == 2)
    assert loop.dead_letters.held_from() == {}
    await stop(loop, tasks)
