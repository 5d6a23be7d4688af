"""The post-promotion watch against the real stack: Tansu, Redis and MLflow, and two real drift
consumer processes in one consumer group (``python -m driftloop_drift_consumer``).

Isolated like ``test_drift_consumer``: own topics, consumer group, registered model, Redis
database and directories. The replicas are not involved: the test publishes the prediction
events a replica would publish during a watch (``shadow_model_version`` /
``shadow_prediction``, see the contracts) and their feedback, with errors it chooses, so the
expected figures are computed here directly.

1. rollback: champion v2 is worse than the shadow v1 -> ``champion`` back on v1 once (one
   rollback ``ModelPromoted`` on the topic, the counter at 1 over both instances), ``shadow``
   removed, the decision's figures on both versions;
2. kept: champion v3 is better than the shadow v1 -> nothing happens until the watch-end tag
   passes, then ``kept`` with its figures, ``shadow`` removed, ``champion`` unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
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
    ROLLBACK_REASON_PREFIX,
    SHADOW_ALIAS,
    TARGET_NAME,
    TARGET_SCALE_USD,
    TEST_BASE_PORT,
    TOPICS,
    WATCH_DECISION_TAG_PREFIX,
    WATCH_UNTIL_TAG,
    FeedbackEvent,
    ModelPromoted,
    PredictionEvent,
)

pytestmark = pytest.mark.integration

#: Two consumer instances, outside the port plan of the stack (base + 0..93).
PORTS = [int(os.environ.get("DRIFTLOOP_TEST_BASE_PORT", TEST_BASE_PORT)) + 230 + i for i in (0, 1)]
DATA_PARTITIONS = next(t.partitions for t in TOPICS if t.name == "predictions")
DEADLINE_S = 120.0
#: Labelled requests per case, and the consumers' minimum (default 200): a rollback is then
#: decided on exactly these rows, so its figures can be compared with a direct computation.
ROWS = 300
TAG = WATCH_DECISION_TAG_PREFIX


def poll(what: str, check: Callable[[], Any], timeout_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


@dataclass
class World:
    sfx: str
    stack: Any
    tmp: Path
    model_name: str
    topics: dict[str, str]
    redis_url: str
    rows: pd.DataFrame
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sent: int = 0

    # MLflow --------------------------------------------------------------------------------

    @property
    def mlflow(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.stack.mlflow_url, self.stack.mlflow_url)

    def register(self) -> str:
        """A version with a real profile artifact and holdout RMSE (what the consumer reads);
        its model is never loaded here, so the profile is of the data itself."""
        from driftloop_training.profile import compute_profile
        from driftloop_training.train import features_of

        client = self.mlflow
        exp = client.get_experiment_by_name("driftloop-it") or client.get_experiment(
            client.create_experiment("driftloop-it")
        )
        run = client.create_run(exp.experiment_id, run_name=f"rollback-it-{self.sfx}")
        profile = compute_profile(
            features_of(self.rows), self.rows[TARGET_NAME].to_numpy() * TARGET_SCALE_USD
        )
        path = self.tmp / PROFILE_ARTIFACT_PATH
        path.write_text(profile.model_dump_json())
        client.log_artifact(run.info.run_id, str(path))
        client.log_metric(run.info.run_id, HOLDOUT_RMSE_METRIC, 50_000.0)
        client.set_terminated(run.info.run_id)
        if not client.search_registered_models(f"name = '{self.model_name}'"):
            client.create_registered_model(self.model_name)
        mv = client.create_model_version(self.model_name, run.info.artifact_uri, run.info.run_id)
        return str(mv.version)

    def start_watch(self, champion: str, shadow: str, until: datetime) -> None:
        """What a promotion with a watch leaves in the registry."""
        client = self.mlflow
        client.set_model_version_tag(self.model_name, champion, WATCH_UNTIL_TAG, until.isoformat())
        client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, champion)
        client.set_registered_model_alias(self.model_name, SHADOW_ALIAS, shadow)

    def alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.mlflow.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.mlflow.get_model_version(self.model_name, version).tags)

    # consumers -----------------------------------------------------------------------------

    def env(self, i: int) -> dict[str, str]:
        p = "DRIFTLOOP_DRIFT_CONSUMER_"
        return {
            **os.environ,
            p + "HOST": "127.0.0.1",
            p + "PORT": str(PORTS[i]),
            p + "INSTANCE_ID": f"rb-{self.sfx}-{i}",
            p + "KAFKA_BOOTSTRAP": self.stack.kafka_bootstrap,
            p + "CONSUMER_GROUP": f"rollback-it-{self.sfx}",
            p + "PREDICTIONS_TOPIC": self.topics["predictions"],
            p + "FEEDBACK_TOPIC": self.topics["feedback"],
            p + "MODEL_EVENTS_TOPIC": self.topics["model-events"],
            p + "MODEL_NAME": self.model_name,
            p + "REDIS_URL": self.redis_url,
            p + "INFLUX_ENABLED": "false",
            p + "MLFLOW_TRACKING_URI": self.stack.mlflow_url,
            p + "LABELLED_LOG_DIR": str(self.tmp / f"labelled-{i}"),
            p + "REPORTS_DIR": str(self.tmp / f"reports-{i}"),
            p + "REPORTS_INTERVAL_SECONDS": "0",
            p + "STATE_DIR": str(self.tmp / f"state-{i}"),
            p + "LABELLED_FLUSH_SECONDS": "1",
            p + "WATCH_CHECK_INTERVAL_SECONDS": "0.5",
            p + "WATCH_MIN_ROWS": str(ROWS),
            p + "WATCH_RMSE_MARGIN": "0.05",
            p + "MODEL_EVENTS_DEAD_LETTERS": "true" if i == 0 else "false",
            p + "LOG_FORMAT": "console",
        }

    def start(self) -> None:
        for i in range(len(PORTS)):
            log = open(self.tmp / f"consumer-{i}.log", "ab")  # noqa: SIM115 (the process owns it)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "driftloop_drift_consumer"],
                    env=self.env(i),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in PORTS:
            poll(f"consumer :{port} ready", functools.partial(_ready, port))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def samples(self, name: str, **labels: str) -> list[float]:
        """The sample with exactly these labels, from each instance."""
        from prometheus_client.parser import text_string_to_metric_families

        values = []
        for port in PORTS:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == name and dict(s.labels) == labels:
                        values.append(s.value)
        return values

    def counter(self, name: str, **labels: str) -> float:
        """A counter summed over both instances."""
        return sum(self.samples(name, **labels))

    # events --------------------------------------------------------------------------------

    def publish_watch(
        self, champion: str, shadow: str, sd_champion: float, sd_shadow: float, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``ROWS`` predictions with a shadow answer, and their feedback; returns the errors
        (champion, shadow) in USD."""
        rng = np.random.default_rng(seed)
        picked = self.rows.iloc[rng.integers(0, len(self.rows), ROWS)]
        actual = picked[TARGET_NAME].to_numpy() * TARGET_SCALE_USD
        e_champion = rng.normal(0, sd_champion, ROWS)
        e_shadow = rng.normal(0, sd_shadow, ROWS)
        now = datetime.now(UTC)
        predictions, feedback = [], []
        for i, row in enumerate(picked[list(FEATURE_NAMES)].to_numpy()):
            self.sent += 1
            request_id = f"rb-{self.sfx}-{self.sent}"
            predictions.append(
                PredictionEvent(
                    request_id=request_id,
                    timestamp=now + timedelta(microseconds=i),
                    model_name=self.model_name,
                    model_version=champion,
                    features=dict(zip(FEATURE_NAMES, map(float, row), strict=True)),
                    prediction=float(actual[i] + e_champion[i]),
                    latency_ms=1.0,
                    replica_id="it",
                    shadow_model_version=shadow,
                    shadow_prediction=float(actual[i] + e_shadow[i]),
                )
            )
            feedback.append(
                FeedbackEvent(request_id=request_id, timestamp=now, actual=float(actual[i]))
            )
        asyncio.run(_send(self.stack.kafka_bootstrap, self.topics["predictions"], predictions))
        asyncio.run(_send(self.stack.kafka_bootstrap, self.topics["feedback"], feedback))
        return e_champion, e_shadow

    def model_events(self) -> list[ModelPromoted]:
        return asyncio.run(_read_all(self.stack.kafka_bootstrap, self.topics["model-events"]))


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _send(bootstrap: str, topic: str, events: list[Any]) -> None:
    """Prediction and feedback ``i`` go to the same partition (the join is co-partitioned)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, enable_idempotence=False
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, e.to_bytes(), key=e.request_id.encode(), partition=i % DATA_PARTITIONS
            )
            for i, e in enumerate(events)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[ModelPromoted]:
    """Every event on ``topic`` up to its end offset (no group, from the beginning)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        events: list[ModelPromoted] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                events += [ModelPromoted.model_validate_json(r.value) for r in records]
        return events
    finally:
        await consumer.stop()


async def _create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    parts = {t.name: t.partitions for t in TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, parts[c], 1) for c, name in topics.items()])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory) -> Iterator[World]:
    import redis as redis_lib

    from driftloop_training.data import load_base_data, split_base

    sfx = uuid.uuid4().hex[:8]
    train, _ = split_base(load_base_data(), holdout_share=0.2, seed=42)
    w = World(
        sfx=sfx,
        stack=stack,
        tmp=tmp_path_factory.mktemp("rollback-it"),
        model_name=f"california-housing-rb-{sfx}",
        topics={c: f"{c}-rb-{sfx}" for c in ("predictions", "feedback", "model-events")},
        redis_url=f"{stack.redis_url.rsplit('/', 1)[0]}/10",
        rows=train,
    )
    redis_lib.Redis.from_url(w.redis_url).flushdb()
    asyncio.run(_create_topics(stack.kafka_bootstrap, w.topics))
    first = w.register()
    w.mlflow.set_registered_model_alias(w.model_name, CHAMPION_ALIAS, first)
    try:
        w.start()
        yield w
    finally:
        w.stop()
        redis_lib.Redis.from_url(w.redis_url).flushdb()


def rmse(e: np.ndarray) -> float:
    return math.sqrt(float(np.mean(e**2)))


def assert_figures(tags: dict[str, str], outcome: str, c: np.ndarray, s: np.ndarray) -> None:
    assert tags[f"{TAG}.outcome"] == outcome
    assert tags[f"{TAG}.rows"] == str(ROWS)
    assert tags[f"{TAG}.champion_rmse_usd"] == f"{rmse(c):.2f}"
    assert tags[f"{TAG}.shadow_rmse_usd"] == f"{rmse(s):.2f}"
    assert tags[f"{TAG}.champion_mae_usd"] == f"{float(np.mean(np.abs(c))):.2f}"
    assert tags[f"{TAG}.shadow_mae_usd"] == f"{float(np.mean(np.abs(s))):.2f}"


def test_a_worse_champion_is_rolled_back_once(world: World) -> None:
    v1 = world.alias(CHAMPION_ALIAS)
    assert v1 is not None
    v2 = world.register()
    world.start_watch(v2, v1, until=datetime.now(UTC) + timedelta(hours=1))

    # v2's errors twice v1's: far beyond the 5 % margin, on 300 rows (>= 200)
    c, s = world.publish_watch(v2, v1, sd_champion=60_000, sd_shadow=30_000, seed=1)

    poll("champion back on v1", lambda: world.alias(CHAMPION_ALIAS) == v1)
    poll("shadow alias removed", lambda: world.alias(SHADOW_ALIAS) is None)
    poll(
        "the rollback counted",
        lambda: world.counter("driftloop_watch_decisions_total", outcome="rolled_back") == 1,
    )
    for version in (v1, v2):
        tags = world.tags(version)
        assert_figures(tags, "rolled_back", c, s)
        assert (tags[f"{TAG}.champion"], tags[f"{TAG}.shadow"]) == (v2, v1)
    rollbacks = [e for e in world.model_events() if e.reason.startswith(ROLLBACK_REASON_PREFIX)]
    assert [(e.version, e.model_name) for e in rollbacks] == [(v1, world.model_name)]
    assert f"{rmse(c):,.0f}" in rollbacks[0].reason
    # once: both instances keep watching; nothing moves or counts again
    assert world.counter("driftloop_watch_decisions_total", outcome="rolled_back") == 1
    assert world.counter("driftloop_watch_decisions_total", outcome="kept") == 0


def test_a_better_champion_is_kept_when_the_watch_ends(world: World) -> None:
    v1 = world.alias(CHAMPION_ALIAS)
    assert v1 is not None
    v3 = world.register()
    until = datetime.now(UTC) + timedelta(seconds=40)
    world.start_watch(v3, v1, until=until)
    events_before = len(world.model_events())

    c, s = world.publish_watch(v3, v1, sd_champion=20_000, sd_shadow=30_000, seed=2)
    # every row counted while the watch still runs, and nothing decided yet
    poll(
        f"{ROWS} rows compared",
        lambda: max(world.samples("driftloop_watch_rows"), default=0) == ROWS,
        timeout_s=30,
    )
    assert f"{TAG}.outcome" not in world.tags(v3)

    tags = poll(
        "kept recorded on v3", lambda: world.tags(v3).get(f"{TAG}.outcome") and world.tags(v3)
    )
    assert datetime.fromisoformat(tags[f"{TAG}.decided_at"]) >= until
    assert_figures(tags, "kept", c, s)
    assert world.tags(v1)[f"{TAG}.champion"] == v3  # the shadow carries the same record
    assert world.alias(CHAMPION_ALIAS) == v3
    poll("shadow alias removed", lambda: world.alias(SHADOW_ALIAS) is None)
    poll(
        "kept counted",
        lambda: world.counter("driftloop_watch_decisions_total", outcome="kept") == 1,
    )
    assert world.counter("driftloop_watch_decisions_total", outcome="rolled_back") == 1
    assert len(world.model_events()) == events_before  # a kept champion is not re-announced
