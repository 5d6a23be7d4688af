"""reference_watcher.py: the champion's reference is applied at start-up and on a requested
check; consuming may start even while MLflow is down; a promotion on ``model-events`` asks for
a check, other records are counted and skipped (through the shared subscriber)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from driftloop_contracts import MODEL_NAME, ModelPromoted
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.reference import LoadedReference, ReferenceManager, VersionRef
from driftloop_drift_consumer.reference_watcher import ReferenceWatcher, promotions_subscriber
from driftloop_drift_consumer.settings import DriftConsumerSettings

from .conftest import FakeSource, Record, ReferenceData, make_reference, until

EVENTS = TopicPartition("model-events", 0)


async def test_start_up_applies_the_champion_and_a_check_follows_a_promotion(
    tmp_path: Path, reference: ReferenceData
) -> None:
    source = FakeSource({"1": reference.profile, "2": make_reference(seed=3, n=4000).profile})
    references = ReferenceManager(source, tmp_path)
    applied: list[str] = []

    async def apply(loaded: LoadedReference) -> None:
        references.accept(loaded)
        applied.append(loaded.version)

    stopping = asyncio.Event()
    settings = DriftConsumerSettings(reference_check_interval_seconds=3600, state_dir=tmp_path)
    watcher = ReferenceWatcher(references, settings=settings, stopping=stopping, apply=apply)
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.ready.wait(), 10)
    assert applied == ["1"]
    source.champion_version = "2"
    watcher.request_check("2")  # long before the periodic check
    await until(lambda: applied == ["1", "2"])
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_a_promotion_naming_a_non_champion_is_counted_and_the_alias_followed(
    tmp_path: Path, reference: ReferenceData
) -> None:
    """A forged event announcing version 2 while the alias stays on 1: the reference stays
    on 1 and the event is counted as not_champion (once, after the check)."""
    source = FakeSource({"1": reference.profile, "2": make_reference(seed=3, n=4000).profile})
    references = ReferenceManager(source, tmp_path)
    applied: list[str] = []
    ignored: list[str] = []

    async def apply(loaded: LoadedReference) -> None:
        references.accept(loaded)
        applied.append(loaded.version)

    stopping = asyncio.Event()
    settings = DriftConsumerSettings(reference_check_interval_seconds=3600, state_dir=tmp_path)
    watcher = ReferenceWatcher(
        references, settings=settings, stopping=stopping, apply=apply, on_ignored=ignored.append
    )
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.ready.wait(), 10)
    watcher.request_check("2")
    await until(lambda: ignored == ["not_champion"])
    assert applied == ["1"] and references.current is not None
    assert references.current.version == "1"
    source.champion_version = "2"
    watcher.request_check("2")  # the real promotion: followed, nothing more counted
    await until(lambda: applied == ["1", "2"])
    assert ignored == ["not_champion"]
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_consuming_may_start_while_mlflow_is_down(
    tmp_path: Path, reference: ReferenceData
) -> None:
    class Down(FakeSource):
        def champion(self) -> VersionRef:
            raise ConnectionError("mlflow down")

    source = Down({"1": reference.profile})
    applied: list[str] = []

    async def apply(loaded: LoadedReference) -> None:
        applied.append(loaded.version)

    stopping = asyncio.Event()
    watcher = ReferenceWatcher(
        ReferenceManager(source, tmp_path),
        settings=DriftConsumerSettings(state_dir=tmp_path),
        stopping=stopping,
        apply=apply,
    )
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.ready.wait(), 10)
    assert applied == []
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_a_requested_check_cuts_a_start_up_wait_short(
    tmp_path: Path, reference: ReferenceData
) -> None:
    class Flaky(FakeSource):
        down = True

        def champion(self) -> VersionRef:
            if self.down:
                raise ConnectionError("mlflow down")
            return super().champion()

    source = Flaky({"1": reference.profile})
    applied: list[str] = []
    waits: list[float] = []

    async def apply(loaded: LoadedReference) -> None:
        applied.append(loaded.version)

    def retried(attempt: int, error: BaseException, delay: float) -> None:
        waits.append(delay)
        if attempt == 2:  # the coming wait is 2 s: a promotion is announced meanwhile
            source.down = False
            watcher.request_check()

    stopping = asyncio.Event()
    watcher = ReferenceWatcher(
        ReferenceManager(source, tmp_path),
        settings=DriftConsumerSettings(state_dir=tmp_path, reference_retry_max_seconds=60),
        stopping=stopping,
        apply=apply,
        on_retry=retried,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(watcher.run())
    await until(lambda: applied == ["1"])
    assert waits == [1.0, 2.0]
    assert loop.time() - started < 1.0 + 2.0  # the second wait did not run out
    stopping.set()
    await asyncio.wait_for(task, 5)


class FakeEventsConsumer:
    """Hands out its records once; fails ``start`` while ``fail_start`` is positive."""

    def __init__(self, records: list[Record], fail_start: list[int]) -> None:
        self.records = records
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start[0] > 0:
            self.fail_start[0] -= 1
            raise ConnectionError("broker away")

    async def stop(self) -> None:
        return None

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        records, self.records = self.records, []
        if not records:
            await asyncio.sleep(0.01)
            return {}
        return {EVENTS: records}

    def assignment(self) -> set[TopicPartition]:
        return {EVENTS}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 3 for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        return 3

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        return None


async def test_model_events_ask_for_a_check_on_our_promotions() -> None:
    def promoted(model_name: str) -> bytes:
        return ModelPromoted(model_name=model_name, version="2", run_id="r2").to_bytes()

    records = [
        Record("model-events", 0, 0, b"not json"),
        Record("model-events", 0, 1, promoted("another-model")),
        Record("model-events", 0, 2, promoted(MODEL_NAME)),
    ]
    fail_start = [1]
    made: list[FakeEventsConsumer] = []

    def factory() -> FakeEventsConsumer:
        made.append(FakeEventsConsumer(records if made else [], fail_start))
        return made[-1]

    metrics = ConsumerMetrics()
    stopping = asyncio.Event()
    checks: list[int] = []
    subscriber = promotions_subscriber(
        factory,
        model_name=MODEL_NAME,
        topic="model-events",
        metrics=metrics,
        on_promoted=lambda version: checks.append(1),
    )
    task = asyncio.create_task(subscriber.run(stopping))
    await until(lambda: checks == [1])
    assert len(made) == 2  # the first consumer failed to start and was replaced

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert value("driftloop_events_invalid_total", topic="model-events", reason="malformed") == 1
    assert (
        value("driftloop_events_invalid_total", topic="model-events", reason="unknown_model") == 1
    )
    assert value("driftloop_events_consumed_total", topic="model-events") == 2
    assert value("driftloop_retries_total", operation="model_events_consumer") == 1
    stopping.set()
    await asyncio.wait_for(task, 5)
