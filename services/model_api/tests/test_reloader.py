"""Start-up retry, event-driven reload (the alias decides), failed and refused loads keeping
the old model, stale, foreign and forged events counted."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from driftloop_contracts import MODEL_NAME, ModelPromoted, PromotionIgnored, utcnow
from driftloop_contracts.model_artifact import DigestMismatch, UntrustedArtifact
from driftloop_contracts.poison import poison_corpus
from driftloop_model_api.metrics import Metrics
from driftloop_model_api.model_holder import ModelHolder
from driftloop_model_api.reloader import Reloader

from .conftest import FakeSource


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def make(source: FakeSource, interval: float = 3600) -> tuple[Reloader, ModelHolder, Metrics]:
    holder, metrics = ModelHolder(), Metrics("r")
    reloader = Reloader(
        holder,
        source,
        metrics,
        alias="champion",
        consumer_factory=None,
        check_interval_s=interval,
        retry_initial_s=0.01,
        retry_max_s=0.05,
        reload_attempts=2,
    )
    return reloader, holder, metrics


def promoted(version: str, *, age: timedelta = timedelta(0)) -> ModelPromoted:
    """A promotion of ``version`` announced ``age`` ago."""
    return ModelPromoted(
        model_name=MODEL_NAME, version=version, run_id=f"run-{version}", timestamp=utcnow() - age
    )


def served(holder: ModelHolder) -> str | None:
    """The version ``holder`` serves, None before the first load."""
    return holder.current.version if holder.current is not None else None


async def test_start_up_waits_for_the_registry_then_loads_the_alias() -> None:
    source = FakeSource(unavailable=True)
    reloader, holder, metrics = make(source)
    await reloader.start()
    await until(lambda: reloader.last_error is not None)
    assert holder.current is None
    source.unavailable = False
    await until(lambda: holder.current is not None)
    assert served(holder) == "1"
    assert metrics.value("driftloop_model_info", model_name=MODEL_NAME, model_version="1") == 1
    await reloader.stop()


async def test_event_loads_the_alias_version_and_failed_load_keeps_the_old() -> None:
    source = FakeSource(broken={"3"}, versions={"1": 1.0, "2": 2.0, "3": 3.0})
    reloader, holder, metrics = make(source)
    await reloader.start()
    await until(lambda: holder.current is not None)
    source.alias_version = "3"
    assert reloader.handle_event(promoted("3"))
    await until(lambda: metrics.value("driftloop_model_reloads_total", outcome="failure") == 2)
    assert metrics.value("driftloop_model_load_failures_total", reason="error") == 2
    assert served(holder) == "1"
    source.alias_version = "2"
    assert reloader.handle_event(promoted("2"))
    await until(lambda: served(holder) == "2")
    assert metrics.value("driftloop_model_info", model_name=MODEL_NAME, model_version="1") == 0
    assert metrics.value("driftloop_model_info", model_name=MODEL_NAME, model_version="2") == 1
    current = holder.current
    assert current is not None
    loaded_at = current.loaded_at.timestamp()
    gauge = "driftloop_model_loaded_timestamp_seconds"
    assert metrics.value(gauge, model_name=MODEL_NAME, model_version="2") == loaded_at
    assert metrics.value(gauge, model_name=MODEL_NAME, model_version="1") == 0
    assert metrics.value("driftloop_model_events_ignored_total", reason="not_champion") == 0
    await reloader.stop()


async def test_event_naming_a_non_champion_is_counted_and_the_alias_is_served() -> None:
    """A forged promotion of version 2 while the alias stays on 1: 2 is never loaded."""
    source = FakeSource(versions={"1": 1.0, "2": 2.0})
    reloader, holder, metrics = make(source)
    await reloader.start()
    await until(lambda: holder.current is not None)
    assert reloader.handle_event(promoted("2"))
    ignored = "driftloop_model_events_ignored_total"
    await until(lambda: metrics.value(ignored, reason=PromotionIgnored.NOT_CHAMPION) == 1)
    assert served(holder) == "1"
    assert "2" not in source.loads
    await reloader.stop()


async def test_event_behind_the_alias_loads_the_alias_not_the_event() -> None:
    """The alias moved to 2 and an event announces 3 (forged or overtaken): 2 is loaded."""
    source = FakeSource(alias_version="1", versions={"1": 1.0, "2": 2.0, "3": 3.0})
    reloader, holder, metrics = make(source)
    await reloader.start()
    await until(lambda: holder.current is not None)
    source.alias_version = "2"
    assert reloader.handle_event(promoted("3"))
    await until(lambda: served(holder) == "2")
    assert metrics.value("driftloop_model_events_ignored_total", reason="not_champion") == 1
    assert "3" not in source.loads
    await reloader.stop()


async def test_refused_artifact_keeps_the_current_model_counted_by_reason() -> None:
    """An untrusted type or a digest mismatch is refused once per alias read (not retried:
    the verdict cannot change), counted by reason; version 1 keeps serving."""
    source = FakeSource(
        versions={"1": 1.0, "2": 2.0, "3": 3.0},
        rejected={
            "2": UntrustedArtifact(["evil.Payload"], "version 2"),
            "3": DigestMismatch("version 3", "a" * 64, "b" * 64),
        },
    )
    reloader, holder, metrics = make(source)
    await reloader.start()
    await until(lambda: holder.current is not None)
    failures = "driftloop_model_load_failures_total"
    for version, reason in (("2", "untrusted_type"), ("3", "digest_mismatch")):
        source.alias_version = version
        assert reloader.handle_event(promoted(version))

        def refused(version: str = version) -> bool:
            return reloader.last_error is not None and f"version {version}" in reloader.last_error

        await until(refused)
        assert metrics.value(failures, reason=reason) == 1
        assert source.loads.count(version) == 1
        assert served(holder) == "1"
    assert metrics.value("driftloop_model_reloads_total", outcome="failure") == 2
    await reloader.stop()


async def test_stale_and_foreign_events_are_ignored() -> None:
    reloader, holder, metrics = make(FakeSource())
    await reloader.start()
    await until(lambda: holder.current is not None)
    old = promoted("2", age=timedelta(minutes=5))
    assert not reloader.handle_event(old)
    other = ModelPromoted(model_name="someone-else", version="2", run_id="x")
    assert not reloader.handle_event(other)
    ignored = "driftloop_model_events_ignored_total"
    assert metrics.value(ignored, reason="stale") == 1
    assert metrics.value(ignored, reason="other_model") == 1
    await reloader.stop()


async def test_periodic_alias_check_catches_a_missed_event() -> None:
    source = FakeSource()
    reloader, holder, _ = make(source, interval=0.05)
    await reloader.start()
    await until(lambda: holder.current is not None)
    source.alias_version = "2"
    await until(lambda: served(holder) == "2")
    await reloader.stop()


async def test_replayed_events_are_ignored_after_a_newer_one() -> None:
    reloader, holder, metrics = make(FakeSource())
    await reloader.start()
    await until(lambda: holder.current is not None)
    first, second = promoted("2"), promoted("1")
    assert reloader.handle_event(first) and reloader.handle_event(second)
    assert not reloader.handle_event(first)  # re-read after a rewind
    assert metrics.value("driftloop_model_events_ignored_total", reason="replayed") == 1
    await reloader.stop()


class _TP:
    topic, partition = "model-events", 0


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


class FakeEventsConsumer:
    """A group-less model-events consumer whose log a test appends to."""

    def __init__(self, log: list[bytes]) -> None:
        self.log = log
        self.next_offset = len(log)  # starts at the end, like auto_offset_reset="latest"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def getmany(self, *, timeout_ms: int) -> dict[object, list[_Record]]:
        await asyncio.sleep(0.005)
        start = self.next_offset
        new = [_Record(v, start + i) for i, v in enumerate(self.log[start:])]
        self.next_offset += len(new)
        return {_TP(): new} if new else {}

    def assignment(self) -> set[object]:
        return set()

    async def end_offsets(self, partitions: list[object]) -> dict[object, int]:
        return {tp: len(self.log) for tp in partitions}

    async def position(self, partition: object) -> int:
        return self.next_offset

    async def seek_to_beginning(self, *partitions: object) -> None:
        self.next_offset = 0


async def test_a_promotion_on_the_topic_reloads_through_the_shared_subscriber() -> None:
    source = FakeSource(versions={"1": 1.0, "2": 2.0})
    log: list[bytes] = []
    holder, metrics = ModelHolder(), Metrics("r")
    reloader = Reloader(
        holder,
        source,
        metrics,
        alias="champion",
        consumer_factory=lambda: FakeEventsConsumer(log),
        check_interval_s=3600,
        retry_initial_s=0.01,
        retry_max_s=0.05,
    )
    await reloader.start()
    await until(lambda: holder.current is not None and reloader.consumer_connected)
    corpus = poison_corpus(json.loads(promoted("0").model_dump_json()))
    for case in corpus:  # each counted by reason and skipped by the subscriber, never fatal
        log.append(case.value)  # type: ignore[arg-type]
    source.alias_version = "2"
    log.append(promoted("2").model_dump_json().encode())
    await until(lambda: holder.current is not None and holder.current.version == "2")
    for reason, n in Counter(case.reason for case in corpus).items():
        counted = metrics.value(
            "driftloop_events_invalid_total", topic="model-events", reason=reason
        )
        assert counted == n, reason
    await reloader.stop()
    assert not reloader.consumer_connected


async def test_stop_ends_a_start_up_still_waiting_for_the_registry() -> None:
    source = FakeSource(unavailable=True)
    reloader, holder, _ = make(source)
    await reloader.start()
    await until(lambda: reloader.last_error is not None)
    await asyncio.wait_for(
        reloader.stop(), 5
    )  # a replica that cannot stop is killed, not shut down
    assert holder.current is None


async def test_registry_down_keeps_the_model_counts_failed_checks_then_follows() -> None:
    """MLflow unreachable: every alias read that fails is counted (the ``RegistryUnreachable``
    alert watches it), the model served stays, and the promotion lands once it answers."""
    source = FakeSource()
    reloader, holder, metrics = make(source, interval=0.05)

    def failures() -> float:
        value = metrics.registry.get_sample_value(
            "driftloop_model_alias_check_failures_total", {"replica": "r"}
        )
        assert value is not None  # exported at 0 from the start
        return value

    assert failures() == 0
    await reloader.start()
    await until(lambda: served(holder) == "1")
    source.unavailable = True
    source.alias_version = "2"
    reloader.handle_event(promoted("2"))
    await until(lambda: failures() >= 3)
    assert served(holder) == "1"
    source.unavailable = False
    await until(lambda: served(holder) == "2")
    await reloader.stop()
