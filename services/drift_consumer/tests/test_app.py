"""app.py and reports.py: the HTTP endpoints with fakes behind them, and a real Evidently
report rendered through the scheduler (in a thread here; a spawned process in the service)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.structs import TopicPartition
from fastapi.testclient import TestClient

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC, ReferenceProfile
from driftloop_drift_consumer.app import create_app
from driftloop_drift_consumer.reference import LoadedReference
from driftloop_drift_consumer.reports import ReportScheduler, ReportStore
from driftloop_drift_consumer.settings import DriftConsumerSettings
from driftloop_drift_consumer.windows import EventBatch, WindowManager, WindowPolicy

from .conftest import FakeAsyncRedis, FakeConsumer, FakeLog, FakeSource, ReferenceData

PARTITIONS = [TopicPartition(t, p) for t in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC) for p in (0, 1)]


def app_serving(tmp_path: Path, profile: ReferenceProfile) -> Any:
    """The consumer app on fakes, its reference ``profile`` as version 1's."""
    settings = DriftConsumerSettings(
        influx_enabled=False,
        reports_interval_seconds=0,
        labelled_log_dir=tmp_path / "l",
        reports_dir=tmp_path / "r",
        state_dir=tmp_path / "s",
    )
    return create_app(
        settings,
        reference_source=FakeSource({"1": profile}),
        consumer_factory=lambda: FakeConsumer(FakeLog(), PARTITIONS),
        model_events_factory=None,
        redis=FakeAsyncRedis(),
    )


def test_endpoints(tmp_path: Path, reference: ReferenceData) -> None:
    app = app_serving(tmp_path, reference.profile)
    with TestClient(app) as client:
        assert client.get("/health/live").json() == {"status": "alive"}
        deadline = time.monotonic() + 20
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").json()
            time.sleep(0.05)
        body = client.get("/health/ready").json()
        assert body["model_version"] == "1" and "predictions-0" in body["assigned"]
        metrics = client.get("/metrics").text
        assert 'driftloop_drift_threshold{feature="",statistic="drift_share"} 0.5' in metrics
        assert 'driftloop_drift_reference_info{model_version="1"' in metrics
        rows = client.get("/thresholds").json()["thresholds"]
        assert {r["source"] for r in rows} == {"default"}
        assert client.get("/reports").json() == {"latest": None, "reports": []}
        assert client.get("/reports/latest").status_code == 404
        assert client.get("/reports/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_report_scheduler_renders_and_links_latest(
    tmp_path: Path, reference: ReferenceData
) -> None:
    import asyncio

    wm = WindowManager(WindowPolicy(), reference.compiled)
    rng = np.random.default_rng(0)
    values = reference.values[rng.integers(0, len(reference.values), 200)]
    (window,) = wm.add(0, EventBatch(np.arange(200), np.full(200, 10**15), values))
    loaded = LoadedReference.build("1", "run-1", reference.profile, None)
    outcomes: list[str] = []
    store = ReportStore(tmp_path / "reports", keep=1)
    scheduler = ReportScheduler(
        store, 0.01, executor_factory=lambda: ThreadPoolExecutor(1), on_outcome=outcomes.append
    )

    async def run() -> None:
        scheduler.offer(window, loaded)
        first = await scheduler.render_pending()
        assert first is not None
        scheduler.offer(window, loaded)
        await asyncio.sleep(1.1)  # a new name (one-second stamp)
        second = await scheduler.render_pending()
        assert second != first
        assert await scheduler.render_pending() is None  # nothing new to render

    asyncio.run(run())
    scheduler.close()
    listing = store.list()
    assert len(listing) == 1  # keep=1 pruned the first
    latest = store.path("latest")
    assert latest is not None and latest.resolve().name == listing[0].name
    assert "<html" in latest.read_text()[:2000].lower()


class _CountingExecutor(ThreadPoolExecutor):
    """A report worker that records whether it was shut down."""

    def __init__(self) -> None:
        super().__init__(1)
        self.ended = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.ended = True
        super().shutdown(wait, cancel_futures=cancel_futures)


def test_report_worker_ends_after_an_idle_interval_and_the_next_window_brings_it_back(
    tmp_path: Path, reference: ReferenceData
) -> None:
    import asyncio
    import time
    from collections.abc import Callable

    wm = WindowManager(WindowPolicy(), reference.compiled)
    rng = np.random.default_rng(1)
    values = reference.values[rng.integers(0, len(reference.values), 200)]
    (window,) = wm.add(0, EventBatch(np.arange(200), np.full(200, 10**15), values))
    loaded = LoadedReference.build("1", "run-1", reference.profile, None)
    workers: list[_CountingExecutor] = []

    def factory() -> _CountingExecutor:
        workers.append(_CountingExecutor())
        return workers[-1]

    scheduler = ReportScheduler(ReportStore(tmp_path / "reports"), 0.05, executor_factory=factory)

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, "condition not reached within 60 s"
            await asyncio.sleep(0.01)

    async def run() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stopping))
        scheduler.offer(window, loaded)
        await until(lambda: len(workers) == 1 and workers[0].ended)
        assert len(workers) == 1  # idle intervals do not spawn one
        scheduler.offer(window, loaded)
        await until(lambda: len(workers) == 2)
        stopping.set()
        await task

    asyncio.run(run())
    scheduler.close()
    assert workers[1].ended


def test_a_small_reference_widens_the_exported_and_applied_thresholds(tmp_path: Path) -> None:
    """A champion whose reference is a regime's 300 rows: the gauges the alert rules compare
    with, and /thresholds' ``applied``, are the configured values widened for that sample;
    the configured ``value`` is unchanged and dataset-level thresholds never widen."""
    from driftloop_contracts import reference_widening

    from .conftest import make_reference

    small = make_reference(n=300)
    app = app_serving(tmp_path, small.profile)
    ks = 0.15 * reference_widening("ks", 300)
    assert ks > 0.18
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").json()
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        gauge = f'driftloop_drift_threshold{{feature="block_latitude",statistic="ks"}} {ks}'
        while gauge not in (metrics := client.get("/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert 'driftloop_drift_threshold{feature="",statistic="drift_share"} 0.5' in metrics
        rows = {
            (r["statistic"], r["feature"]): r
            for r in client.get("/thresholds").json()["thresholds"]
        }
        assert rows[("ks", "block_latitude")]["value"] == 0.15
        assert rows[("ks", "block_latitude")]["applied"] == pytest.approx(ks)
        assert rows[("drift_share", "")]["applied"] == rows[("drift_share", "")]["value"] == 0.5
