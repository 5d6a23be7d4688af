"""The drift consumer against the real local stack: Tansu, Redis, InfluxDB and MLflow.

The instance under test is our own ``python -m driftloop_drift_consumer`` subprocess, isolated
from the stack's own consumer and from other tests that share the stack: its own topics
(``predictions-<id>``...), consumer group, registered model (``<MODEL_NAME>-<id>`` with a
quickly trained champion whose profile is a real MLflow artifact), Redis database, InfluxDB
database and directories. Being our own process, it can be SIGKILLed mid-stream.

The tests run in file order and share one consumer (module fixture):
stationary stream -> shifted stream -> feedback/RMSE -> SIGKILL + restart -> promotion ->
thresholds -> reports.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import (
    CHAMPION_ALIAS,
    FEATURE_NAMES,
    HOLDOUT_RMSE_METRIC,
    PROFILE_ARTIFACT_PATH,
    TOPICS,
    FeedbackEvent,
    ModelPromoted,
    PredictionEvent,
)

pytestmark = pytest.mark.integration

PORT = 32520  # this engineer's exploration range (32000-32999)
WINDOW = 200
DATA_PARTITIONS = next(t.partitions for t in TOPICS if t.name == "predictions")
DEADLINE_S = 120.0


def poll(
    what: str, check: Callable[[], Any], timeout_s: float = DEADLINE_S, every_s: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


# --- the world of this test module --------------------------------------------------------


@dataclass
class Model:
    version: str
    model: Any
    rows: pd.DataFrame


@dataclass
class World:
    sfx: str
    stack: Any
    tmp: Path
    model_name: str
    topics: dict[str, str]
    redis_url: str
    influx_db: str
    models: dict[str, Model] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    sent: int = 0
    next_offset: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PORT}"

    @property
    def labelled_dir(self) -> Path:
        return self.tmp / "labelled"

    # consumer process ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        p = "DRIFTLOOP_DRIFT_CONSUMER_"
        return {
            **os.environ,
            p + "HOST": "127.0.0.1",
            p + "PORT": str(PORT),
            p + "INSTANCE_ID": f"it-{self.sfx}",
            p + "KAFKA_BOOTSTRAP": self.stack.kafka_bootstrap,
            p + "CONSUMER_GROUP": f"drift-it-{self.sfx}",
            p + "PREDICTIONS_TOPIC": self.topics["predictions"],
            p + "FEEDBACK_TOPIC": self.topics["feedback"],
            p + "MODEL_EVENTS_TOPIC": self.topics["model-events"],
            p + "MODEL_NAME": self.model_name,
            p + "REDIS_URL": self.redis_url,
            p + "INFLUX_URL": self.stack.influx_url,
            p + "INFLUX_DB": self.influx_db,
            p + "MLFLOW_TRACKING_URI": self.stack.mlflow_url,
            p + "LABELLED_LOG_DIR": str(self.labelled_dir),
            p + "REPORTS_DIR": str(self.tmp / "reports"),
            p + "STATE_DIR": str(self.tmp / "state"),
            p + "WINDOW_EVENTS": str(WINDOW),
            p + "MERGE_WINDOW_SECONDS": "0",  # per-partition windows: what this module counts
            p + "LABELLED_FLUSH_SECONDS": "1",
            p + "THRESHOLDS_POLL_SECONDS": "0.5",
            p + "REPORTS_INTERVAL_SECONDS": "5",
            p + "LOG_FORMAT": "console",
        }

    def start(self) -> None:
        log = open(self.tmp / "consumer.log", "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_drift_consumer"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        poll("consumer ready", lambda: self.ready().get("status") == "ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def ready(self) -> dict[str, Any]:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return []
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def metric(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent)."""
        for sample_name, sample_labels, value in self.samples():
            if sample_name == name and sample_labels == labels:
                return value
        return 0.0

    def series(self, name: str) -> list[dict[str, str]]:
        return [labels for n, labels, _ in self.samples() if n == name]

    # events ---------------------------------------------------------------------------------

    def predictions(self, version: str, rows: pd.DataFrame, model: Any) -> list[PredictionEvent]:
        from driftloop_training.train import predict_usd

        preds = predict_usd(model, rows)
        now = datetime.now(UTC)
        events = []
        for i, (row, pred) in enumerate(
            zip(rows[list(FEATURE_NAMES)].to_numpy(), preds, strict=True)
        ):
            self.sent += 1
            events.append(
                PredictionEvent(
                    request_id=f"it-{self.sfx}-{self.sent}",
                    timestamp=now + timedelta(microseconds=i),
                    model_name=self.model_name,
                    model_version=version,
                    features=dict(zip(FEATURE_NAMES, map(float, row), strict=True)),
                    prediction=float(pred),
                    latency_ms=1.0,
                    replica_id="it",
                )
            )
        return events

    def send(self, topic: str, events: list[Any]) -> None:
        """Round-robin over the partitions (so window counts per partition are exact)."""
        asyncio.run(_send(self.stack.kafka_bootstrap, self.topics[topic], events))


async def _send(bootstrap: str, topic: str, events: list[Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, enable_idempotence=False
    )
    await producer.start()
    try:
        n = 1 if topic.startswith("model-events") else DATA_PARTITIONS
        futures = [
            await producer.send(
                topic,
                e.to_bytes(),
                key=e.request_id.encode() if hasattr(e, "request_id") else None,
                partition=i % n,
            )
            for i, e in enumerate(events)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    parts = {t.name: t.partitions for t in TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, parts[c], 1) for c, name in topics.items()])
    finally:
        await admin.close()


def register(world: World, version_rows: pd.DataFrame, *, quick_iter: int = 60) -> Model:
    """Train a small model, log its profile + holdout RMSE as a run, register a version and
    point the champion alias at it (the layout the training package writes)."""
    import mlflow
    from mlflow import MlflowClient

    from driftloop_training.profile import compute_profile
    from driftloop_training.train import ModelParams, features_of, fit_model, predict_usd

    model = fit_model(version_rows, params=ModelParams(max_iter=quick_iter))
    profile = compute_profile(features_of(version_rows), predict_usd(model, version_rows))
    client = MlflowClient(world.stack.mlflow_url, world.stack.mlflow_url)
    mlflow.set_tracking_uri(world.stack.mlflow_url)
    exp = client.get_experiment_by_name("driftloop-it") or client.get_experiment(
        client.create_experiment("driftloop-it")
    )
    run = client.create_run(exp.experiment_id, run_name=f"drift-it-{world.sfx}")
    path = world.tmp / PROFILE_ARTIFACT_PATH
    path.write_text(profile.model_dump_json())
    client.log_artifact(run.info.run_id, str(path))
    client.log_metric(run.info.run_id, HOLDOUT_RMSE_METRIC, 50_000.0)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{world.model_name}'"):
        client.create_registered_model(world.model_name)
    mv = client.create_model_version(world.model_name, run.info.artifact_uri, run.info.run_id)
    client.set_registered_model_alias(world.model_name, CHAMPION_ALIAS, str(mv.version))
    m = Model(str(mv.version), model, version_rows)
    world.models[m.version] = m
    return m


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory) -> Iterator[World]:
    from driftloop_training.data import load_base_data, split_base

    sfx = uuid.uuid4().hex[:8]
    redis_base = stack.redis_url.rsplit("/", 1)[0]
    w = World(
        sfx=sfx,
        stack=stack,
        tmp=tmp_path_factory.mktemp("drift-it"),
        model_name=f"california-housing-it-{sfx}",
        topics={c: f"{c}-it-{sfx}" for c in ("predictions", "feedback", "model-events")},
        redis_url=f"{redis_base}/9",
        influx_db=f"driftloop_it_{sfx}",
    )
    import redis as redis_lib

    redis_lib.Redis.from_url(w.redis_url).flushdb()
    asyncio.run(_create_topics(stack.kafka_bootstrap, w.topics))
    train, _ = split_base(load_base_data(), holdout_share=0.2, seed=42)
    register(w, train)
    w.start()
    try:
        yield w
    finally:
        w.stop()
        httpx.post(
            f"{stack.influx_url}/query", data={"q": f'DROP DATABASE "{w.influx_db}"'}, timeout=10
        )
        redis_lib.Redis.from_url(w.redis_url).flushdb()


def influx(world: World, q: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{world.stack.influx_url}/query", params={"db": world.influx_db, "q": q}, timeout=10
    )
    r.raise_for_status()
    out = []
    for result in r.json().get("results", []):
        for series in result.get("series", []):
            for values in series["values"]:
                out.append(
                    {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
                )
    return out


def sample(model: Model, n: int, seed: int, income_factor: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = model.rows.iloc[rng.integers(0, len(model.rows), n)].copy()
    rows["median_income_in_block"] *= income_factor
    return rows


# --- the tests, in order ------------------------------------------------------------------


def test_stationary_stream_stays_under_the_thresholds(world: World) -> None:
    m = world.models["1"]
    world.send("predictions", world.predictions("1", sample(m, 2000, seed=1), m.model))
    # 500 per partition: two windows each, 100 events left open
    poll("8 windows", lambda: world.metric("driftloop_windows_total", model_version="1") == 8)
    declared = world.metric("driftloop_windows_drift_total", model_version="1")
    assert declared <= 1, f"{declared} of 8 stationary windows declared drift"
    points = influx(world, 'SELECT count("events") FROM "drift_window"')
    assert points and points[0]["count"] == 8


def test_shifted_stream_is_detected_and_charted(world: World) -> None:
    m = world.models["1"]
    before = world.metric("driftloop_windows_drift_total", model_version="1")
    # income x1.5 (about +1 sd); 300 per partition: one mixed window, one fully shifted
    world.send(
        "predictions", world.predictions("1", sample(m, 1200, seed=2, income_factor=1.5), m.model)
    )
    poll("16 windows", lambda: world.metric("driftloop_windows_total", model_version="1") == 16)
    assert world.metric("driftloop_windows_drift_total", model_version="1") >= before + 4
    ks = world.metric(
        "driftloop_drift_value", feature="median_income_in_block", statistic="ks", model_version="1"
    )
    limit = world.metric(
        "driftloop_drift_threshold", feature="median_income_in_block", statistic="ks"
    )
    assert ks > limit > 0
    # the InfluxQL a Grafana panel runs (per feature, max per interval)
    rows = influx(
        world,
        'SELECT max("value") FROM "drift" WHERE "statistic" = \'ks\' '
        'AND time > now() - 1h GROUP BY time(1m), "feature"',
    )
    income = [r for r in rows if r["feature"] == "median_income_in_block" and r["max"]]
    assert income and max(r["max"] for r in income) > limit
    declared = influx(world, 'SELECT count("declared") FROM "drift_window" WHERE "declared" = true')
    assert declared and declared[0]["count"] >= 4


def test_feedback_rmse_equals_the_direct_computation(world: World) -> None:
    from driftloop_training.data import read_labelled_log

    m = world.models["1"]
    rng = np.random.default_rng(3)
    events = world.predictions("1", sample(m, 400, seed=3), m.model)
    actual = {e.request_id: e.prediction + float(rng.normal(0, 40_000)) for e in events}
    world.send("predictions", events)
    world.send(
        "feedback",
        [
            FeedbackEvent(
                request_id=e.request_id, timestamp=datetime.now(UTC), actual=actual[e.request_id]
            )
            for e in events
        ],
    )
    poll("400 labelled rows", lambda: world.metric("driftloop_labelled_rows_total") >= 400)
    errors = np.array([e.prediction - actual[e.request_id] for e in events])
    rmse = math.sqrt(float(np.mean(errors**2)))
    assert world.metric("driftloop_online_rmse_usd", model_version="1") == pytest.approx(
        rmse, rel=1e-9
    )
    assert world.metric("driftloop_online_rmse_ratio", model_version="1") == pytest.approx(
        rmse / 50_000.0, rel=1e-9
    )
    now = datetime.now(UTC)
    log = read_labelled_log(
        world.labelled_dir, start=now - timedelta(hours=2), end=now + timedelta(hours=1)
    ).frame
    assert sorted(log["request_id"]) == sorted(actual)
    assert np.allclose(
        log.set_index("request_id").loc[list(actual), "actual"], list(actual.values())
    )


def _window_ranges(world: World) -> list[tuple[str, str, int, int]]:
    rows = influx(
        world,
        'SELECT "first_offset", "last_offset" FROM "drift_window" '
        'GROUP BY "partition", "model_version"',
    )
    return [
        (r["model_version"], r["partition"], int(r["first_offset"]), int(r["last_offset"]))
        for r in rows
    ]


def test_sigkill_mid_stream_then_restart_is_exactly_once(world: World) -> None:
    from driftloop_training.data import read_labelled_log

    m = world.models["1"]
    events = world.predictions("1", sample(m, 8000, seed=4), m.model)
    start_rows = world.metric("driftloop_labelled_rows_total")
    world.send("predictions", events)
    world.send(
        "feedback",
        [
            FeedbackEvent(request_id=e.request_id, timestamp=datetime.now(UTC), actual=e.prediction)
            for e in events
        ],
    )
    # SIGKILL as soon as the first part file of this burst is written: mid-stream for sure
    poll(
        "first rows of the burst",
        lambda: world.metric("driftloop_labelled_rows_total") > start_rows,
        every_s=0.05,
    )
    world.kill()
    world.start()
    now = datetime.now(UTC)

    def logged() -> pd.DataFrame:
        return read_labelled_log(
            world.labelled_dir, start=now - timedelta(hours=2), end=now + timedelta(hours=1)
        ).frame

    poll("every feedback labelled", lambda: len(logged()) >= 400 + len(events))
    time.sleep(3)  # anything still in flight would show up as a duplicate now
    files = sorted(world.labelled_dir.rglob("part-*.parquet"))
    raw = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert raw["request_id"].is_unique, "a labelled row was written twice"
    assert set(e.request_id for e in events) <= set(raw["request_id"])
    assert len(raw) == 400 + len(events)
    # windows: 2,000 + 1,200 + 400 + 8,000 = 11,600 predictions = 2,900 per partition
    poll("all windows", lambda: len(_window_ranges(world)) == 4 * (2900 // WINDOW))
    ranges = _window_ranges(world)
    for partition in {r[1] for r in ranges}:
        mine = sorted((a, b) for v, p, a, b in ranges if p == partition)
        assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(mine)), "overlapping windows"
        assert [b - a + 1 for a, b in mine] == [WINDOW] * len(mine)


def test_promotion_switches_the_reference(world: World) -> None:
    m1 = world.models["1"]
    shifted = sample(m1, 16_000, seed=5, income_factor=1.5)
    m2 = register(world, shifted)
    world.send(
        "model-events",
        [
            ModelPromoted(
                model_name=world.model_name,
                version=m2.version,
                run_id="it",
                reason="integration test",
            )
        ],
    )
    poll("switched to v2", lambda: world.ready().get("model_version") == m2.version, 60)
    assert [s["model_version"] for s in world.series("driftloop_drift_reference_info")] == [
        m2.version
    ]
    # traffic like v2's training data, labelled v2: windows under v2, drift falls
    open_before = world.metric("driftloop_windows_total", model_version=m2.version)
    world.send(
        "predictions", world.predictions(m2.version, sample(m2, 4 * WINDOW * 2, seed=6), m2.model)
    )
    poll(
        "v2 windows",
        lambda: (
            world.metric("driftloop_windows_total", model_version=m2.version) >= open_before + 8
        ),
    )
    assert world.metric("driftloop_windows_drift_total", model_version=m2.version) <= 1
    versions = {s["model_version"] for s in world.series("driftloop_drift_value")}
    assert versions == {m2.version}, "the old version's drift gauges linger"


def test_threshold_change_is_visible_in_metrics_within_a_scrape(world: World) -> None:
    from driftloop_contracts.threshold_store import reset_thresholds, set_threshold

    try:
        set_threshold(world.redis_url, "psi", 0.77, feature="average_rooms")
        poll(
            "threshold gauge",
            lambda: (
                world.metric("driftloop_drift_threshold", feature="average_rooms", statistic="psi")
                == 0.77
            ),
            15,  # Prometheus scrapes every 15 s: the change must show within one scrape
        )
        assert (
            world.metric("driftloop_drift_threshold", feature="block_latitude", statistic="psi")
            != 0.77
        )
    finally:
        reset_thresholds(world.redis_url)
    poll(
        "threshold back to default",
        lambda: (
            world.metric("driftloop_drift_threshold", feature="average_rooms", statistic="psi")
            != 0.77
        ),
        15,
    )


def test_evidently_report_is_listed_with_a_stable_latest_link(world: World) -> None:
    listing = poll(
        "a report",
        lambda: httpx.get(f"{world.url}/reports", timeout=5).json().get("reports"),
        180,
        every_s=1,
    )
    assert listing[0]["url"].startswith("/reports/drift-v")
    # the link moves right after the file lands: poll, do not race it
    latest = poll(
        "the latest link",
        lambda: (
            r
            if (r := httpx.get(f"{world.url}/reports/latest", timeout=10)).status_code == 200
            else None
        ),
        30,
    )
    assert "<html" in latest.text[:2000].lower()
    assert httpx.get(f"{world.url}/reports/..%2Fconsumer.log", timeout=5).status_code == 404
    body = json.dumps(listing)
    assert "drift-v" in body
