"""sinks/facade.py: a failing sink is retried until it recovers, visible while it fails, and
abandoned (``RetryStopped``) on shutdown; every failure is counted as a retry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiokafka.structs import TopicPartition

from driftloop_drift_consumer.decoding import Invalid
from driftloop_drift_consumer.feedback_join import JoinStore, StoredPrediction
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.settings import DriftConsumerSettings
from driftloop_drift_consumer.sinks.facade import Sinks
from driftloop_drift_consumer.sinks.influx import InfluxSink
from driftloop_drift_consumer.sinks.labelled_log import LabelledLogWriter
from driftloop_service import RetryStopped

from .conftest import FakeAsyncRedis, FakeRedisState, prediction_event, until

ROW = [3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0, 210_000.0]


def sinks(
    tmp_path: Path, redis: FakeRedisState, influx: InfluxSink | None = None
) -> tuple[Sinks, dict[str, str], asyncio.Event]:
    settings = DriftConsumerSettings(
        sink_retry_initial_seconds=0.01,
        sink_retry_max_seconds=0.02,
        labelled_log_dir=tmp_path / "labelled",
        state_dir=tmp_path / "state",
    )
    failing: dict[str, str] = {}
    stopping = asyncio.Event()
    facade = Sinks(
        settings,
        metrics=ConsumerMetrics(),
        join_store=JoinStore(FakeAsyncRedis(redis), 600),
        labelled=LabelledLogWriter(settings.labelled_log_dir),
        influx=influx,
        reports=None,
        stopping=stopping,
        failing=failing,
    )
    return facade, failing, stopping


def metric(s: Sinks, name: str, **labels: str) -> float:
    return s.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_failing_sink_is_retried_until_it_recovers(tmp_path: Path) -> None:
    redis = FakeRedisState()
    redis.fail = True
    s, failing, _ = sinks(tmp_path, redis)
    stored = [StoredPrediction.from_event(prediction_event("a", ROW))]
    write = asyncio.create_task(s.store_predictions(stored))
    await until(lambda: metric(s, "driftloop_sink_failures_total", sink="redis") >= 2)
    assert "redis" in failing and not write.done()
    assert metric(s, "driftloop_sink_up", sink="redis") == 0
    redis.fail = False
    await asyncio.wait_for(write, 5)
    assert failing == {} and metric(s, "driftloop_sink_up", sink="redis") == 1
    assert metric(s, "driftloop_retries_total", operation="sink_redis") == metric(
        s, "driftloop_sink_failures_total", sink="redis"
    )
    assert set(await s.find_predictions(["a", "b"])) == {"a"}


async def test_shutdown_abandons_the_retry(tmp_path: Path) -> None:
    redis = FakeRedisState()
    redis.fail = True
    s, _, stopping = sinks(tmp_path, redis)
    write = asyncio.create_task(s.find_predictions(["a"]))
    await until(lambda: metric(s, "driftloop_sink_failures_total", sink="redis") >= 1)
    stopping.set()
    with pytest.raises(RetryStopped):
        await asyncio.wait_for(write, 5)


async def test_points_are_written_only_when_influx_is_enabled(tmp_path: Path) -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/write":
            bodies.append(request.content)
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    influx = InfluxSink("http://influx", "driftloop", client=client, attempts=1)
    s, _, _ = sinks(tmp_path, FakeRedisState(), influx)
    await s.write_points([])
    await s.write_points(["m v=1 1"])
    await s.write_points_once(["m v=2 2"])
    assert bodies == [b"m v=1 1", b"m v=2 2"]
    disabled, _, _ = sinks(tmp_path, FakeRedisState(), None)
    await disabled.write_points(["m v=1 1"])  # no InfluxDB configured: nothing to do


def test_a_skipped_record_is_counted_by_reason(tmp_path: Path) -> None:
    s, _, _ = sinks(tmp_path, FakeRedisState())
    s.skip(TopicPartition("feedback", 1), Invalid(4, "malformed", "x" * 1000))
    assert metric(s, "driftloop_events_invalid_total", topic="feedback", reason="malformed") == 1
