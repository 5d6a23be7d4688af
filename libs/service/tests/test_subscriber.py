"""The model-events subscriber against a fake consumer: decoding, bad records, reconnects and
the broker-log reset (the topic's end falls behind our position -> rewind)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftloop_contracts import MODEL_EVENTS_TOPIC, EventError, ModelPromoted, utcnow
from driftloop_contracts.poison import poison_corpus
from driftloop_service import Backoff, ModelEventsSubscriber


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Record:
    value: bytes | None
    offset: int


def promoted(version: str) -> bytes:
    event = ModelPromoted(
        model_name="house-prices", version=version, run_id="r", reason="test", timestamp=utcnow()
    )
    return event.model_dump_json().encode()


@dataclass
class FakeLog:
    """The broker: records per partition, which a test may wipe (a Tansu restart)."""

    records: list[bytes | None] = field(default_factory=list)
    start_failures: int = 0

    def append(self, value: bytes | None) -> None:
        self.records.append(value)


class FakeConsumer:
    TP0 = TP(MODEL_EVENTS_TOPIC, 0)

    def __init__(self, log: FakeLog, fail_after: int | None = None) -> None:
        self.log = log
        self.position_ = len(log.records)  # auto_offset_reset=latest
        self.fail_after = fail_after
        self.polls = 0
        self.stopped = False
        self.rewinds = 0

    async def start(self) -> None:
        if self.log.start_failures > 0:
            self.log.start_failures -= 1
            raise ConnectionError("broker away")

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(self, *, timeout_ms: int) -> dict[Any, list[Any]]:
        self.polls += 1
        if self.fail_after is not None and self.polls > self.fail_after:
            raise ConnectionError("connection lost")
        await asyncio.sleep(0.001)
        new = self.log.records[self.position_ :]
        records = [Record(v, self.position_ + i) for i, v in enumerate(new)]
        self.position_ += len(new)
        return {self.TP0: records} if records else {}

    def assignment(self) -> set[TP]:
        return {self.TP0}

    async def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        return {tp: len(self.log.records) for tp in partitions}

    async def position(self, partition: Any) -> int:
        return self.position_

    async def seek_to_beginning(self, *partitions: Any) -> None:
        self.rewinds += 1
        self.position_ = 0


async def until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


async def test_decodes_events_counts_bad_ones_and_stops() -> None:
    log = FakeLog()
    consumers: list[FakeConsumer] = []
    got: list[str] = []
    invalid: list[tuple[str, str]] = []
    connected: list[bool] = []

    def factory() -> FakeConsumer:
        consumers.append(FakeConsumer(log))
        return consumers[-1]

    async def handler(event: ModelPromoted) -> None:  # async handlers are awaited
        got.append(event.version)

    def bad(topic: str, exc: EventError) -> None:
        invalid.append((topic, exc.reason))

    subscriber = ModelEventsSubscriber(
        factory, handler, on_invalid=bad, on_connected=lambda: connected.append(True)
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(subscriber.run(stopping))
    await until(lambda: subscriber.connected, "connected")
    log.append(promoted("2"))
    log.append(b"not json")
    log.append(None)
    log.append(promoted("3"))
    await until(lambda: got == ["2", "3"], "both events")
    assert invalid == [(MODEL_EVENTS_TOPIC, "malformed"), (MODEL_EVENTS_TOPIC, "malformed")]
    assert connected == [True]
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert consumers[-1].stopped and not subscriber.connected


async def test_reconnects_with_backoff_and_reports_retries() -> None:
    log = FakeLog(start_failures=2)
    retries: list[int] = []
    got: list[str] = []
    consumers: list[FakeConsumer] = []

    def factory() -> FakeConsumer:
        # the first consumer that starts loses its connection after a few polls
        consumers.append(FakeConsumer(log, fail_after=3 if len(consumers) == 2 else None))
        return consumers[-1]

    subscriber = ModelEventsSubscriber(
        factory,
        lambda e: got.append(e.version),
        on_retry=lambda attempt, error, delay: retries.append(attempt),
        backoff=Backoff(0.001, 0.002),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(subscriber.run(stopping))
    await until(lambda: len(consumers) >= 4 and subscriber.connected, "reconnected")
    # two failed starts (attempts 1, 2), then a working connection that broke: the count
    # starts over at 1 because that connection had worked
    assert retries == [1, 2, 1]
    log.append(promoted("7"))
    await until(lambda: got == ["7"], "event after reconnect")
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_rewinds_when_the_log_was_reset() -> None:
    log = FakeLog([promoted("1"), promoted("2"), promoted("3")])
    consumers: list[FakeConsumer] = []
    got: list[str] = []

    def factory() -> FakeConsumer:
        consumers.append(FakeConsumer(log))
        return consumers[-1]

    subscriber = ModelEventsSubscriber(factory, lambda e: got.append(e.version), reset_check_s=0)
    stopping = asyncio.Event()
    task = asyncio.create_task(subscriber.run(stopping))
    await until(lambda: subscriber.connected, "connected")
    assert got == []  # starts at the end: old events are not news
    log.records.clear()  # the broker restarted empty and the topic was recreated
    log.append(promoted("4"))  # end 1 < our position 3: a reset, not "no news yet"
    await until(lambda: got == ["4"], "the event after the reset")
    assert consumers[-1].rewinds >= 1
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_cancelling_the_task_stops_the_consumer() -> None:
    log = FakeLog()
    consumers: list[FakeConsumer] = []

    def factory() -> FakeConsumer:
        consumers.append(FakeConsumer(log))
        return consumers[-1]

    subscriber = ModelEventsSubscriber(factory, lambda e: None)
    task = asyncio.create_task(subscriber.run())
    await until(lambda: subscriber.connected, "connected")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert consumers[-1].stopped


async def test_the_poison_corpus_is_counted_by_reason_and_the_next_event_still_arrives() -> None:
    log = FakeLog()
    consumers: list[FakeConsumer] = []
    got: list[str] = []
    invalid: list[tuple[str, str]] = []

    def factory() -> FakeConsumer:
        consumers.append(FakeConsumer(log))
        return consumers[-1]

    def bad(topic: str, exc: EventError) -> None:
        invalid.append((topic, exc.reason))

    subscriber = ModelEventsSubscriber(factory, lambda e: got.append(e.version), on_invalid=bad)
    stopping = asyncio.Event()
    task = asyncio.create_task(subscriber.run(stopping))
    await until(lambda: subscriber.connected, "connected")
    corpus = poison_corpus(json.loads(promoted("0")))
    for case in corpus:
        log.append(case.value)
    log.append(promoted("after"))
    await until(lambda: got == ["after"], "the event after the poison")
    assert invalid == [(MODEL_EVENTS_TOPIC, case.reason) for case in corpus]
    assert len(consumers) == 1 and subscriber.connected and subscriber.last_error is None
    stopping.set()
    await asyncio.wait_for(task, 5)
