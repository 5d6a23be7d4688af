"""loop.py against fakes (Kafka, Redis, InfluxDB, MLflow): commits follow written results,
bad records (the whole poison corpus) are skipped, an outage pauses commits, a crash and replay neither loses nor
duplicates labelled rows or windows, a promotion switches the reference."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from aiokafka.structs import TopicPartition

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC, InvalidReason
from driftloop_contracts.poison import feedback_poison, prediction_poison
from driftloop_drift_consumer.feedback_join import JoinStore
from driftloop_drift_consumer.loop import DriftLoop
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.reference import ReferenceManager, VersionRef
from driftloop_drift_consumer.settings import DriftConsumerSettings
from driftloop_drift_consumer.sinks.influx import InfluxSink
from driftloop_drift_consumer.sinks.labelled_log import LabelledLogWriter
from driftloop_drift_consumer.windows import WindowManager, WindowPolicy

from .conftest import (
    T0,
    FakeAsyncRedis,
    FakeConsumer,
    FakeLog,
    FakeRedisState,
    FakeSource,
    ReferenceData,
    feedback_event,
    make_reference,
    prediction_event,
    until,
)

PARTITIONS = [TopicPartition(t, p) for t in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC) for p in (0, 1)]


class FakeInflux:
    """Keeps points like InfluxDB does: identity = series key + timestamp (last write wins)."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, str], str] = {}
        self.down = False
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/query":
            return httpx.Response(200)
        self.requests += 1
        if self.down:
            return httpx.Response(503, text="influx down")
        for line in request.content.decode().splitlines():
            series, fields, ts = line.rsplit(" ", 2)
            self.points[(series, ts)] = fields
        return httpx.Response(204)

    def windows(self) -> set[tuple[str, str]]:
        return {k for k in self.points if k[0].startswith("drift_window,")}


class TrackedLogWriter(LabelledLogWriter):
    """Counts writes in progress: a cancelled task's write goes on in its worker thread, which a
    real SIGKILL would have ended; a test that "kills" a loop waits for it before replaying."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.in_flight = 0
        self._lock = threading.Lock()

    def write(self, flush: Any, *, now: Any = None) -> Any:
        with self._lock:
            self.in_flight += 1
        try:
            return super().write(flush, now=now)
        finally:
            with self._lock:
                self.in_flight -= 1


class Harness:
    def __init__(self, tmp_path: Path, reference: ReferenceData, **overrides: Any) -> None:
        self.reference = reference
        self.log = FakeLog()
        self.redis = FakeRedisState()
        self.influx = FakeInflux()
        self.source = FakeSource({"1": reference.profile})
        self.tmp = tmp_path
        defaults: dict[str, Any] = {
            "labelled_log_dir": tmp_path / "labelled",
            "reports_dir": tmp_path / "reports",
            "state_dir": tmp_path / "state",
            "labelled_flush_seconds": 0.0,
            "feedback_wait_seconds": 60.0,
            "sink_retry_initial_seconds": 0.01,
            "sink_retry_max_seconds": 0.05,
            "reports_interval_seconds": 0,
            # per-partition windows unless a test merges them (merge_window_seconds=...)
            "merge_window_seconds": 0.0,
        }
        self.settings = DriftConsumerSettings(**{**defaults, **overrides})
        self.consumers: list[FakeConsumer] = []
        self._n = 0
        self.batch_by_topic: dict[str, int] = {}
        self.writers: list[TrackedLogWriter] = []

    def consumer(self) -> FakeConsumer:
        c = FakeConsumer(self.log, PARTITIONS, batch=37, batch_by_topic=self.batch_by_topic)
        self.consumers.append(c)
        return c

    def writer(self) -> TrackedLogWriter:
        w = TrackedLogWriter(self.settings.labelled_log_dir)
        self.writers.append(w)
        return w

    def writes_finished(self) -> bool:
        return all(w.in_flight == 0 for w in self.writers)

    def make_loop(self) -> DriftLoop:
        s = self.settings
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.influx.handler))
        return DriftLoop(
            s,
            metrics=ConsumerMetrics(),
            windows=WindowManager(
                WindowPolicy(s.window_events, s.window_seconds, s.min_window_events)
            ),
            references=ReferenceManager(self.source, s.state_dir),
            join_store=JoinStore(FakeAsyncRedis(self.redis), s.join_ttl_seconds),
            labelled=self.writer(),
            influx=InfluxSink(
                "http://influx", "driftloop", client=client, retry_initial_s=0.001, attempts=1
            ),
            reports=None,
            consumer_factory=self.consumer,
            model_events_factory=None,
        )

    def predictions(
        self,
        n: int,
        *,
        version: str = "1",
        rows: np.ndarray | None = None,
        partition_of: Callable[[int], int] = lambda i: i % 2,
    ) -> list[str]:
        values = self.reference.values if rows is None else rows
        ids = []
        for i in range(n):
            rid = f"req-{self._n}"
            self._n += 1
            event = prediction_event(
                rid,
                values[i % len(values)],
                version=version,
                ts=T0 + timedelta(milliseconds=self._n),
            )
            self.log.append(PREDICTIONS_TOPIC, partition_of(i), event.to_bytes())
            ids.append(rid)
        return ids

    def feedback(
        self,
        ids: list[str],
        actual: Callable[[int], float],
        partition_of: Callable[[int], int] = lambda i: i % 2,
    ) -> None:
        for i, rid in enumerate(ids):
            ev = feedback_event(rid, actual(i), ts=T0 + timedelta(minutes=1, milliseconds=i))
            self.log.append(FEEDBACK_TOPIC, partition_of(i), ev.to_bytes())

    def labelled(self) -> pd.DataFrame:
        files = sorted((self.tmp / "labelled").rglob("part-*.parquet"))
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def end(self, topic: str, partition: int) -> int:
        return len(self.log.records.get(TopicPartition(topic, partition), []))


async def start(loop: DriftLoop) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(loop.reference_task()), asyncio.create_task(loop.run())]


async def stop(loop: DriftLoop, tasks: list[asyncio.Task[None]], *, kill: bool = False) -> None:
    if kill:  # like SIGKILL: no final flush, no final commit
        for t in tasks:
            t.cancel()
    else:
        loop.stopping.set()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(t, 10)


def metric(loop: DriftLoop, name: str, **labels: str) -> float:
    value = loop.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def committed(h: Harness, topic: str, partition: int) -> int | None:
    return h.log.committed.get(TopicPartition(topic, partition))


async def test_windows_are_written_then_committed(tmp_path: Path, reference: ReferenceData) -> None:
    h = Harness(tmp_path, reference)
    h.predictions(900)  # 450 per partition: two windows each, 50 events open
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: committed(h, PREDICTIONS_TOPIC, 1) == 400)
    assert committed(h, PREDICTIONS_TOPIC, 0) == 400  # the open window starts at 400
    assert len(h.influx.windows()) == 4
    assert metric(loop, "driftloop_windows_total", model_version="1") == 4
    assert metric(loop, "driftloop_events_consumed_total", topic=PREDICTIONS_TOPIC) == 900
    assert (
        metric(
            loop,
            "driftloop_drift_value",
            feature="median_income_in_block",
            statistic="ks",
            model_version="1",
        )
        > 0
    )
    assert metric(loop, "driftloop_last_commit_timestamp_seconds") > 0
    await stop(loop, tasks)


async def test_bad_records_are_counted_by_reason_and_skipped(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    h.log.append(PREDICTIONS_TOPIC, 0, b"not json")
    h.log.append(PREDICTIONS_TOPIC, 0, b'{"schema_version": 99}')
    h.log.append(PREDICTIONS_TOPIC, 0, None)
    other = prediction_event("x", reference.values[0], model_name="another-model")
    h.log.append(PREDICTIONS_TOPIC, 0, other.to_bytes())
    h.log.append(FEEDBACK_TOPIC, 0, b'{"schema_version": 1, "request_id": "a"}')
    h.predictions(10, partition_of=lambda i: 0)
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: committed(h, FEEDBACK_TOPIC, 0) == 1)
    inv = lambda t, r: metric(loop, "driftloop_events_invalid_total", topic=t, reason=r)  # noqa: E731
    assert inv(PREDICTIONS_TOPIC, "malformed") == 2
    assert inv(PREDICTIONS_TOPIC, "unknown_schema_version") == 1
    assert inv(PREDICTIONS_TOPIC, "unknown_model") == 1
    assert inv(FEEDBACK_TOPIC, "malformed") == 1
    # the invalid records precede the open window, which holds the commit at its start
    assert committed(h, PREDICTIONS_TOPIC, 0) in (None, 4)
    await stop(loop, tasks)


async def test_the_poison_corpus_is_skipped_and_normal_traffic_after_it_is_consumed(
    tmp_path: Path, reference: ReferenceData
) -> None:
    """Every record no producer of ours writes (deeply nested, not UTF-8, megabytes long,
    NaN...) on every partition, then normal traffic: the loop never stops or restarts, counts
    each poison record under its reason, windows and labels all the normal events, and commits
    past the poison."""
    h = Harness(tmp_path, reference)
    bad_predictions = prediction_poison(json.loads(prediction_event("p", [1.0] * 9).to_bytes()))
    bad_feedback = feedback_poison(json.loads(feedback_event("p", 1.0).to_bytes()))
    for partition in (0, 1):
        for case in bad_predictions:
            h.log.append(PREDICTIONS_TOPIC, partition, case.value)
        for case in bad_feedback:
            h.log.append(FEEDBACK_TOPIC, partition, case.value)
    ids = h.predictions(900)  # 450 per partition: two windows each, 50 events open
    h.feedback(ids, actual=lambda i: 100_000.0)
    loop = h.make_loop()
    tasks = await start(loop)
    not_running: list[str | None] = []

    async def watch() -> None:
        await until(lambda: loop.status.consumer_started)
        while not loop.stopping.is_set():
            if not loop.status.consumer_started or loop.status.last_error:
                not_running.append(loop.status.last_error)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    first, feedback_end = len(bad_predictions), len(bad_feedback) + 450
    await until(
        lambda: all(
            committed(h, PREDICTIONS_TOPIC, p) == first + 400  # the open window starts there
            and committed(h, FEEDBACK_TOPIC, p) == feedback_end
            for p in (0, 1)
        )
    )
    assert not_running == [] and len(h.consumers) == 1
    assert metric(loop, "driftloop_retries_total", operation="consumer_restart") == 0
    assert metric(loop, "driftloop_windows_total", model_version="1") == 4
    assert len(h.influx.windows()) == 4
    assert sorted(h.labelled()["request_id"]) == sorted(ids)
    assert metric(loop, "driftloop_labelled_rows_total") == 900
    for topic, corpus in ((PREDICTIONS_TOPIC, bad_predictions), (FEEDBACK_TOPIC, bad_feedback)):
        assert metric(loop, "driftloop_events_consumed_total", topic=topic) == 900 + 2 * len(corpus)
        expected = Counter(case.reason for case in corpus for _ in (0, 1))
        counted = {
            reason: metric(loop, "driftloop_events_invalid_total", topic=topic, reason=reason)
            for reason in InvalidReason
        }
        assert {r: n for r, n in counted.items() if n} == expected, topic
    await stop(loop, tasks)
    await watcher


async def test_feedback_joins_into_the_log_and_online_error(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 30_000, 300)
    ids = h.predictions(300)
    # half the feedback is published before the consumer could have seen its prediction
    h.feedback(ids, actual=lambda i: reference.values[i % len(reference.values), 8] + noise[i])
    loop = h.make_loop()
    tasks = await start(loop)
    await until(
        lambda: (
            len(h.labelled()) == 300
            and committed(h, FEEDBACK_TOPIC, 0) == 150
            and committed(h, FEEDBACK_TOPIC, 1) == 150
        )
    )
    log = h.labelled()
    assert sorted(log["request_id"]) == sorted(ids)
    errors = (log["prediction"] - log["actual"]).to_numpy()
    assert metric(loop, "driftloop_online_rmse_usd", model_version="1") == pytest.approx(
        math.sqrt(np.mean(errors**2)), rel=1e-9
    )
    assert metric(loop, "driftloop_online_bias_usd", model_version="1") == pytest.approx(
        np.mean(errors), rel=1e-9, abs=1e-6
    )
    assert metric(loop, "driftloop_online_rmse_ratio", model_version="1") == pytest.approx(
        math.sqrt(np.mean(errors**2)) / 50_000.0, rel=1e-9
    )
    assert metric(loop, "driftloop_labelled_rows_total") == 300
    await stop(loop, tasks)


async def test_feedback_waits_while_its_predictions_are_still_queued(
    tmp_path: Path, reference: ReferenceData
) -> None:
    """A backlog: feedback is read much faster than predictions. With no wall-clock grace at
    all, nothing is given up while the predictions partition is behind the feedback's time;
    feedback for requests that never had a prediction is given up once it has caught up."""
    h = Harness(tmp_path, reference, feedback_wait_seconds=0.0)
    h.batch_by_topic = {PREDICTIONS_TOPIC: 5, FEEDBACK_TOPIC: 200}
    ids = h.predictions(400)
    h.feedback([*ids, "never-predicted-1", "never-predicted-2"], actual=lambda i: 1.0)
    loop = h.make_loop()
    tasks = await start(loop)
    await until(
        lambda: (
            metric(
                loop,
                "driftloop_events_invalid_total",
                topic=FEEDBACK_TOPIC,
                reason="unmatched_feedback",
            )
            == 2
            and metric(loop, "driftloop_labelled_rows_total") >= 400  # cheap: before reading
            and len(h.labelled()) == 400
        )
    )
    assert sorted(h.labelled()["request_id"]) == sorted(ids)
    await stop(loop, tasks)


async def test_crash_and_replay_lose_and_duplicate_nothing(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    ids = h.predictions(1000)
    h.feedback(ids, actual=lambda i: 100_000.0 + i)
    first = h.make_loop()
    tasks = await start(first)
    await until(lambda: len(h.labelled()) >= 300 and len(h.influx.windows()) >= 2)
    for c in h.consumers:
        c.fail_commits = True  # files and points written, offsets not committed ...
    await until(lambda: len(h.labelled()) >= 600)
    await stop(first, tasks, kill=True)  # ... and then the process dies
    await until(h.writes_finished)  # with it, any write its threads were doing
    windows_before = set(h.influx.windows())
    second = h.make_loop()
    tasks = await start(second)
    await until(
        lambda: (
            committed(h, FEEDBACK_TOPIC, 0) == 500
            and committed(h, FEEDBACK_TOPIC, 1) == 500
            and committed(h, PREDICTIONS_TOPIC, 1) == 400
        )
    )
    log = h.labelled()
    assert len(log) == 1000 and log["request_id"].is_unique
    assert sorted(log["request_id"]) == sorted(ids)
    # every window exactly once: the replay overwrote the same points
    assert windows_before <= h.influx.windows()
    assert len(h.influx.windows()) == 4
    await stop(second, tasks)


async def test_sink_outage_pauses_commits_until_it_recovers(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    h.influx.down = True
    h.predictions(500)
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: metric(loop, "driftloop_sink_failures_total", sink="influxdb") >= 3)
    assert committed(h, PREDICTIONS_TOPIC, 0) in (None, 0)  # nothing past the first window
    assert metric(loop, "driftloop_sink_up", sink="influxdb") == 0
    assert "influxdb" in loop.status.failing_sinks
    h.influx.down = False
    await until(lambda: committed(h, PREDICTIONS_TOPIC, 0) == 200)
    assert metric(loop, "driftloop_sink_up", sink="influxdb") == 1
    assert not loop.status.failing_sinks
    assert len(h.influx.windows()) == 2
    await stop(loop, tasks)


async def test_promotion_switches_the_reference_and_the_labels(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    v2 = make_reference(seed=11, n=6000, version="2")
    h.source.profiles["2"] = v2.profile
    h.predictions(400)
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: metric(loop, "driftloop_windows_total", model_version="1") == 2)
    assert (
        metric(
            loop,
            "driftloop_drift_reference_info",
            model_version="1",
            profile_id=reference.profile.profile_id,
        )
        == 1
    )
    h.source.champion_version = "2"
    loop.request_reference_check()
    await until(lambda: loop.reference_version == "2")
    h.predictions(50, version="1")  # in flight from a replica that has not reloaded yet
    h.predictions(400, version="2", rows=v2.values)
    await until(lambda: metric(loop, "driftloop_windows_total", model_version="2") == 2)
    assert metric(loop, "driftloop_drift_events_ignored_total", reason="other_model_version") == 50
    # the old version's drift series are gone, so alerts on the old baseline resolve
    assert (
        loop.metrics.registry.get_sample_value(
            "driftloop_drift_value",
            {"feature": "median_income_in_block", "statistic": "ks", "model_version": "1"},
        )
        is None
    )
    assert (
        metric(
            loop,
            "driftloop_drift_reference_info",
            model_version="2",
            profile_id=v2.profile.profile_id,
        )
        == 1
    )
    await stop(loop, tasks)


async def test_restart_without_mlflow_uses_the_cached_reference(
    tmp_path: Path, reference: ReferenceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, reference)
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: loop.reference_version == "1")
    await stop(loop, tasks)

    def broken() -> VersionRef:
        raise ConnectionError("mlflow down")

    monkeypatch.setattr(h.source, "champion", broken)
    again = h.make_loop()
    tasks = await start(again)
    await until(lambda: again.reference_version == "1")
    await stop(again, tasks)


async def test_thresholds_reach_the_gauges(tmp_path: Path, reference: ReferenceData) -> None:
    from driftloop_contracts.thresholds import ThresholdSet

    h = Harness(tmp_path, reference)
    loop = h.make_loop()
    loop.set_thresholds(ThresholdSet({"psi:prediction": 0.7}))
    assert metric(loop, "driftloop_drift_threshold", feature="prediction", statistic="psi") == 0.7
    assert metric(loop, "driftloop_drift_threshold", feature="", statistic="rmse_ratio") > 0


async def test_a_labelled_log_outage_at_shutdown_commits_no_feedback(
    tmp_path: Path, reference: ReferenceData
) -> None:
    """Rows that could not be written at shutdown stay uncommitted, so the next run writes
    them: none is lost, none is written twice."""
    h = Harness(tmp_path, reference, labelled_flush_seconds=3600.0, labelled_flush_rows=10_000)
    ids = h.predictions(20)
    h.feedback(ids, actual=lambda i: 1.0)
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: sum(b.ready()[0] for b in loop.state.buffers.values()) == 20)
    (tmp_path / "not-a-directory").write_text("")
    loop.sinks.labelled = LabelledLogWriter(tmp_path / "not-a-directory" / "labelled")
    await stop(loop, tasks)  # the final flush fails: nothing of the feedback is committed
    assert {committed(h, FEEDBACK_TOPIC, p) for p in (0, 1)} <= {None, 0}
    again = h.make_loop()
    tasks = await start(again)
    await until(lambda: sum(b.ready()[0] for b in again.state.buffers.values()) == 20)
    await stop(again, tasks)  # the final flush writes them
    log = h.labelled()
    assert sorted(log["request_id"]) == sorted(ids) and log["request_id"].is_unique
    assert committed(h, FEEDBACK_TOPIC, 0) == 10 and committed(h, FEEDBACK_TOPIC, 1) == 10


def partials(h: Harness) -> dict[str, list[tuple[int, int]]]:
    """The ``drift_partial`` points per partition: (first, last) offsets, sorted."""
    out: dict[str, list[tuple[int, int]]] = {}
    for (series, _), fields in h.influx.points.items():
        if series.startswith("drift_partial,"):
            tags = dict(kv.split("=") for kv in series.split(",")[1:])
            f = dict(kv.split("=") for kv in fields.split(","))
            out.setdefault(tags["partition"], []).append(
                (int(f["first_offset"].rstrip("i")), int(f["last_offset"].rstrip("i")))
            )
    return {p: sorted(v) for p, v in out.items()}


async def test_merged_windows_are_written_once_and_committed_across_a_crash(
    tmp_path: Path, reference: ReferenceData
) -> None:
    # 1,000 predictions 1 ms apart (the i-th at T0 + i+1 ms) over 2 partitions; 0.1 s slots
    # hold 100 of them (the first 99), so merged windows of >= 200 close every 2-3 slots (a
    # partition's own would need 400 events): slots 0-2, 3-4, 5-6, 7-8; slots 9-10 hold 101
    # events, too few, so they stay open: from prediction 899 (partition 1, offset 449) and
    # 900 (partition 0, offset 450) on, nothing is committed.
    h = Harness(
        tmp_path,
        reference,
        merge_window_seconds=0.1,
        min_window_events=200,
        sequential_ert_events=0,
    )
    h.predictions(1000)
    first = h.make_loop()
    tasks = await start(first)
    await until(lambda: len(h.influx.windows()) >= 2)
    for c in h.consumers:
        c.fail_commits = True  # points written, offsets not committed ...
    await until(lambda: len(h.influx.windows()) == 4)
    await stop(first, tasks, kill=True)  # ... and then the process dies
    before = set(h.influx.windows())
    second = h.make_loop()
    tasks = await start(second)
    await until(
        lambda: (
            committed(h, PREDICTIONS_TOPIC, 0) == 450 and committed(h, PREDICTIONS_TOPIC, 1) == 449
        )
    )
    windows = h.influx.windows()
    assert before == windows and len(windows) == 4  # the replay overwrote the same points
    assert all(",partition=-1" in series for series, _ in windows)
    # every event of every partition in exactly one partial, consecutive from offset 0
    for p, ranges in partials(h).items():
        assert ranges[0][0] == 0 and ranges[-1][1] == {"0": 449, "1": 448}[p], (p, ranges)
        assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges)), (p, ranges)
    assert sorted(partials(h)) == ["0", "1"]
    assert metric(first, "driftloop_windows_total", model_version="1") == 4
    await stop(second, tasks)
