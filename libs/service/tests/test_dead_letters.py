"""dead_letters.py: each dead letter is acknowledged or given up (counted either way), retries
use the shared backoff and stop on shutdown; the model-events subscriber dead-letters its bad
records only when it is the designated writer."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from driftloop_contracts import MODEL_EVENTS_TOPIC, DeadLetter, decode_dead_letter, dlq_topic
from driftloop_contracts.poison import poison_corpus
from driftloop_service import Backoff, DeadLetterPublisher, ModelEventsSubscriber, RetryStopped

from .test_subscriber import FakeConsumer, FakeLog, promoted, until

FAST = Backoff(0.001, 0.005)


@dataclass
class FakeBroker:
    """The dead-letter topics: the first ``fail_sends`` sends and ``fail_acks`` acks fail."""

    fail_starts: int = 0
    fail_sends: int = 0
    fail_acks: int = 0
    acked: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    producers: int = 0


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        broker.producers += 1

    async def start(self) -> None:
        if self.broker.fail_starts > 0:
            self.broker.fail_starts -= 1
            raise ConnectionError("no broker")

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[Any]:
        b = self.broker
        if b.fail_sends > 0:
            b.fail_sends -= 1
            raise ConnectionError("send failed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if b.fail_acks > 0:
            b.fail_acks -= 1
            future.set_exception(TimeoutError("no ack"))
        else:
            b.acked.append((topic, key, value))
            future.set_result(None)
        return future


def letter(offset: int, topic: str = "feedback") -> DeadLetter:
    return DeadLetter.of(topic, 0, offset, key=None, value=b"bad", reason="malformed", error="e")


def publisher(broker: FakeBroker, outcomes: list[tuple[str, str]], attempts: int = 5) -> Any:
    return DeadLetterPublisher(
        lambda: FakeProducer(broker),
        on_outcome=lambda topic, outcome: outcomes.append((topic, outcome)),
        backoff=FAST,
        attempts=attempts,
    )


async def test_failed_starts_sends_and_acks_are_retried_until_each_is_acknowledged_once() -> None:
    broker = FakeBroker(fail_starts=1, fail_sends=1, fail_acks=1)
    outcomes: list[tuple[str, str]] = []
    await publisher(broker, outcomes).publish([letter(0), letter(1), letter(2)])
    assert sorted(key for _, key, _ in broker.acked) == [
        b"feedback:0:0",
        b"feedback:0:1",
        b"feedback:0:2",
    ]
    assert {topic for topic, _, _ in broker.acked} == {dlq_topic("feedback")}
    assert outcomes == [("feedback", "published")] * 3
    assert broker.producers == 2  # the one that failed to start was replaced


async def test_a_letter_that_keeps_failing_is_given_up_and_counted_failed() -> None:
    broker = FakeBroker(fail_sends=10**9)
    outcomes: list[tuple[str, str]] = []
    await publisher(broker, outcomes, attempts=3).publish([letter(0), letter(1)])
    assert broker.acked == [] and outcomes == [("feedback", "failed")] * 2


async def test_shutdown_ends_the_retries_without_a_verdict() -> None:
    broker = FakeBroker(fail_sends=10**9)
    outcomes: list[tuple[str, str]] = []
    stopping = asyncio.Event()
    stopping.set()
    with pytest.raises(RetryStopped):
        await publisher(broker, outcomes, attempts=100).publish([letter(0)], stopping=stopping)
    assert outcomes == []  # neither published nor given up: the caller commits nothing


@pytest.mark.parametrize("writer", [True, False], ids=["designated_writer", "replica"])
async def test_the_subscriber_dead_letters_each_bad_record_once_only_as_the_writer(
    writer: bool,
) -> None:
    log = FakeLog()
    broker = FakeBroker()
    outcomes: list[tuple[str, str]] = []
    invalid: list[str] = []
    got: list[str] = []
    subscriber = ModelEventsSubscriber(
        lambda: FakeConsumer(log),
        lambda e: got.append(e.version),
        on_invalid=lambda topic, exc: invalid.append(exc.reason),
        dead_letters=publisher(broker, outcomes) if writer else None,
        dead_letter_client="test",
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(subscriber.run(stopping))
    await until(lambda: subscriber.connected, "connected")
    corpus = poison_corpus(json.loads(promoted("0")))
    for case in corpus:
        log.append(case.value)
    log.append(promoted("after"))
    await until(lambda: got == ["after"], "the event after the poison")
    assert invalid == [case.reason for case in corpus]  # counted either way
    if writer:
        letters = [decode_dead_letter(value) for _, _, value in broker.acked]
        assert [(x.source_topic, x.offset, x.reason) for x in letters] == [
            (MODEL_EVENTS_TOPIC, offset, case.reason) for offset, case in enumerate(corpus)
        ]
        assert [x.value_head for x in letters] == [
            None if c.value is None else c.value[:1024] for c in corpus
        ]
        assert outcomes == [(MODEL_EVENTS_TOPIC, "published")] * len(corpus)
    else:
        assert broker.acked == [] and outcomes == []
    stopping.set()
    await asyncio.wait_for(task, 5)
