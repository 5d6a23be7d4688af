"""The event ledger survives SIGKILL, and the next incarnation counts exactly what was lost:
pending keys not on the topic, with the total carried across restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

from fastapi.testclient import TestClient

from driftloop_contracts import EXAMPLE_FEATURES, FEEDBACK_TOPIC, PREDICTIONS_TOPIC
from driftloop_model_api.app import create_app
from driftloop_model_api.ledger import (
    KEY_BYTES,
    MmapLedger,
    ledger_glob,
    read_ledger,
    slot_key,
    totals_name,
)
from driftloop_model_api.metrics import Metrics
from driftloop_model_api.publisher import EventPublisher
from driftloop_model_api.recovery import REASON_KILLED, LossRecovery
from driftloop_model_api.settings import ModelApiSettings

from .conftest import FakeSource, RecordingProducer, wait_for

TOPICS = (PREDICTIONS_TOPIC, FEEDBACK_TOPIC)


def lost(metrics: Metrics, topic: str) -> float:
    return metrics.value("driftloop_events_lost_total", topic=topic, reason=REASON_KILLED)


def test_what_a_sigkilled_process_wrote_is_in_the_file(tmp_path: Path) -> None:
    """The premise: a MAP_SHARED page outlives the process that wrote it, with no flush."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from driftloop_model_api.ledger import MmapLedger
        ledger = MmapLedger(Path({str(tmp_path)!r}), "r-1", {TOPICS!r}, 16)
        a = ledger.add("predictions", b"p-1")
        ledger.add("predictions", b"p-2")
        ledger.add("feedback", b"f-1")
        ledger.settle(a)
        ledger.acked("predictions", 3, 41)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False)
    assert done.returncode == -signal.SIGKILL
    (path,) = tmp_path.glob(ledger_glob("r-1"))
    contents = read_ledger(path)
    assert contents.pending == {PREDICTIONS_TOPIC: [b"p-2"], FEEDBACK_TOPIC: [b"f-1"]}
    assert contents.acked == {PREDICTIONS_TOPIC: {3: 41}, FEEDBACK_TOPIC: {}}


def test_clean_close_removes_an_empty_ledger_and_keeps_a_pending_one(tmp_path: Path) -> None:
    empty = MmapLedger(tmp_path, "r", TOPICS, 4)
    empty.settle(empty.add(PREDICTIONS_TOPIC, b"k"))
    empty.close()
    assert not empty.path.exists()
    left = MmapLedger(tmp_path, "r", TOPICS, 4)
    left.add(PREDICTIONS_TOPIC, b"k")
    left.close()
    assert read_ledger(left.path).pending[PREDICTIONS_TOPIC] == [b"k"]


def test_slots_are_reused_and_long_keys_stored_as_a_digest(tmp_path: Path) -> None:
    ledger = MmapLedger(tmp_path, "r", TOPICS, 2)
    for i in range(1_000):
        ledger.settle(ledger.add(PREDICTIONS_TOPIC, f"k{i}".encode()))
    long_key = b"x" * (KEY_BYTES + 1)
    ledger.add(FEEDBACK_TOPIC, long_key)
    assert read_ledger(ledger.path).pending[FEEDBACK_TOPIC] == [slot_key(long_key)]
    assert slot_key(long_key) != long_key and len(slot_key(long_key)) <= KEY_BYTES


async def test_publisher_frees_acknowledged_slots_and_records_their_offsets(
    tmp_path: Path,
) -> None:
    """What stays in the ledger is exactly what was not acknowledged; the offset of a partition
    only advances while no event awaits a re-send (it may already be on the broker)."""

    class Meta:
        def __init__(self, partition: int, offset: int) -> None:
            self.partition, self.offset = partition, offset

    class Acking(RecordingProducer):
        next_offset = 0

        async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None):
            future: asyncio.Future[Meta] = asyncio.get_running_loop().create_future()
            if self.fail:
                return future  # never acknowledged: the broker may or may not have it
            self.sent.append((topic, key or b"", value or b""))
            future.set_result(Meta(0, self.next_offset))
            self.next_offset += 1
            return future

    producer, metrics = Acking(), Metrics("r")
    sizes = {PREDICTIONS_TOPIC: 10, FEEDBACK_TOPIC: 10}
    ledger = MmapLedger(tmp_path, "r", TOPICS, EventPublisher.ledger_slots(sizes, 4))
    publisher = EventPublisher(
        lambda: producer,
        metrics,
        buffer_sizes=sizes,
        batch_size=4,
        ack_timeout_s=0.05,
        retry_initial_s=0.01,
        retry_max_s=0.02,
        ledger=ledger,
    )
    await publisher.start()
    for i in range(3):
        publisher.publish(PREDICTIONS_TOPIC, f"a{i}".encode(), b"v")
    deadline = time.monotonic() + 5
    while metrics.value("driftloop_events_published_total", topic=PREDICTIONS_TOPIC) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert read_ledger(ledger.path).pending[PREDICTIONS_TOPIC] == []
    assert read_ledger(ledger.path).acked[PREDICTIONS_TOPIC] == {0: 2}

    producer.fail = True
    publisher.publish(PREDICTIONS_TOPIC, b"b0", b"v")
    publisher.publish(FEEDBACK_TOPIC, b"f0", b"v")
    while metrics.value("driftloop_events_failed_total", topic=PREDICTIONS_TOPIC) < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    contents = read_ledger(ledger.path)  # as a SIGKILL now would leave it
    assert contents.pending == {PREDICTIONS_TOPIC: [b"b0"], FEEDBACK_TOPIC: [b"f0"]}
    assert contents.acked[PREDICTIONS_TOPIC] == {0: 2}
    producer.fail = False
    while publisher.buffered:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert read_ledger(ledger.path).pending == {PREDICTIONS_TOPIC: [], FEEDBACK_TOPIC: []}
    await publisher.stop()
    ledger.close()
    assert not ledger.path.exists()


def killed_incarnation(directory: Path, replica: str, pending: Mapping[str, list[str]]) -> Path:
    """A ledger as a killed process leaves it (never closed)."""
    ledger = MmapLedger(directory, replica, TOPICS, 32)
    for topic, keys in pending.items():
        for key in keys:
            ledger.add(topic, key.encode())
    ledger.acked(PREDICTIONS_TOPIC, 1, 99)
    return ledger.path


async def test_recovery_counts_only_the_keys_not_on_the_topic(tmp_path: Path) -> None:
    path = killed_incarnation(
        tmp_path, "r", {PREDICTIONS_TOPIC: ["p1", "p2", "p3"], FEEDBACK_TOPIC: ["f1"]}
    )
    searched: list[tuple[str, set[bytes], dict[int, int]]] = []

    async def find(topic: str, keys: set[bytes], acked: Mapping[int, int]) -> set[bytes]:
        searched.append((topic, set(keys), dict(acked)))
        return {b"p2", b"f1"} & keys

    metrics = Metrics("r")
    recovery = LossRecovery(tmp_path, "r", TOPICS, metrics, find)
    recovery.load()
    assert recovery.unreconciled == {PREDICTIONS_TOPIC: 2 + 1, FEEDBACK_TOPIC: 1}
    assert lost(metrics, PREDICTIONS_TOPIC) == 0  # the series exists before the search
    await recovery.run()
    assert searched[0] == (PREDICTIONS_TOPIC, {b"p1", b"p2", b"p3"}, {1: 99})
    assert lost(metrics, PREDICTIONS_TOPIC) == 2 and lost(metrics, FEEDBACK_TOPIC) == 0
    assert metrics.value("driftloop_events_unreconciled", topic=PREDICTIONS_TOPIC) == 0
    assert not path.exists()
    saved = json.loads((tmp_path / totals_name("r")).read_text())
    assert saved["lost"] == {PREDICTIONS_TOPIC: 2, FEEDBACK_TOPIC: 0}

    # The next incarnation carries the total on (increase() sees one series, no reset).
    killed_incarnation(tmp_path, "r", {FEEDBACK_TOPIC: ["f9"]})
    again = Metrics("r")
    second = LossRecovery(tmp_path, "r", TOPICS, again, find)
    second.load()
    assert lost(again, PREDICTIONS_TOPIC) == 2
    await second.run()
    assert lost(again, FEEDBACK_TOPIC) == 1 and lost(again, PREDICTIONS_TOPIC) == 2


async def test_recovery_retries_until_the_broker_answers(tmp_path: Path) -> None:
    killed_incarnation(tmp_path, "r", {PREDICTIONS_TOPIC: ["p1"]})
    calls = 0

    async def find(topic: str, keys: set[bytes], acked: Mapping[int, int]) -> set[bytes]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("broker down")
        return set()

    metrics = Metrics("r")
    recovery = LossRecovery(tmp_path, "r", TOPICS, metrics, find, retry_initial_s=0.001)
    recovery.load()
    await recovery.run()
    assert calls == 3 and lost(metrics, PREDICTIONS_TOPIC) == 1
    assert metrics.value("driftloop_retries_total", operation="recover_lost_events") == 2


def test_a_restarted_app_reports_what_its_killed_predecessor_lost(tmp_path: Path) -> None:
    """Wired end to end in the app: the ledger file left behind, the finder, the metric; the
    new incarnation's own ledger is removed on a clean stop."""
    killed_incarnation(tmp_path, "r", {PREDICTIONS_TOPIC: ["gone", "there"]})

    async def find(topic: str, keys: set[bytes], acked: Mapping[int, int]) -> set[bytes]:
        return {b"there"} & keys

    settings = ModelApiSettings(
        replica_id="r",
        state_dir=tmp_path,
        kafka_enabled=False,
        cache_enabled=False,
        alias_check_interval_seconds=3600,
    )
    metrics = Metrics("r")
    app = create_app(
        settings,
        source=FakeSource(),
        producer_factory=RecordingProducer,
        consumer_factory=None,
        metrics=metrics,
        key_finder=find,
    )
    with TestClient(app) as client:
        wait_for(lambda: lost(metrics, PREDICTIONS_TOPIC) == 1, what="the loss counted")
        wait_for(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert client.post("/predict", json=EXAMPLE_FEATURES).status_code == 200
        assert len(list(tmp_path.glob(ledger_glob("r")))) == 1  # this incarnation's own
        assert 'driftloop_events_lost_total{reason="process_killed"' in client.get(
            "/metrics"
        ).text.replace('replica="r",', "")
    assert list(tmp_path.glob(ledger_glob("r"))) == []
