"""Exactly once across a SIGKILL and across a group rebalance, against the real broker (Tansu),
Redis, InfluxDB and MLflow, with the drift consumer as real ``python -m
driftloop_drift_consumer`` processes.

Each test has its own topics, consumer group, InfluxDB database and labelled-log directory (the
registered champion is shared by the module), and streams the same load while the fault
happens: predictions round-robin over the 4 partitions (~200/s, in chunks of 100), feedback for
4 of every 5 of them on the co-partitioned feedback partition, and a second, later label for 1
request in 50 (which must lose: the first label wins). The load flows until the fault is over,
then ends on a whole number of windows of 100 on every partition.

When the group has committed every partition up to the end the broker acknowledged (nothing
is left to replay, so nothing can still change), the durable results are compared with what
was sent, exactly:

- windows (InfluxDB ``drift_window``): per partition, consecutive offset ranges of 100 from 0 to
  the end, no overlap, no hole; the events of all windows sum to the predictions sent;
- labelled rows (every Parquet file of the log, read raw): one row per ``request_id``, the
  set equal to the requests sent with feedback, each with its first label.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    PredictionEvent,
)

pytestmark = pytest.mark.integration

PARTITIONS = next(t.partitions for t in TOPICS if t.name == "predictions")
WINDOW = 100
#: Predictions sent per test: a whole number of windows on every partition.
CHUNK = 100
#: The load ends on a whole number of windows on every partition: after a multiple of this
#: many chunks (round-robin: a chunk gives each partition CHUNK / PARTITIONS events).
WHOLE_WINDOWS = WINDOW * PARTITIONS // CHUNK
#: Pace of the load (seconds between chunks): ~200 predictions/s. Pacing, not synchronisation:
#: the load flows until the test has made its fault happen and tells it to end.
PACE_S = 0.5
MAX_CHUNKS = 1_000
DEADLINE_S = 240.0


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the champion (shared by the module) ----------------------------------------------------


@dataclass
class Champion:
    model_name: str
    version: str
    model: Any
    rows: pd.DataFrame


@pytest.fixture(scope="module")
def champion_model(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """A quickly trained champion with a real profile artifact (the training package's layout)."""
    import mlflow
    from mlflow import MlflowClient

    from driftloop_training.data import load_base_data, split_base
    from driftloop_training.profile import compute_profile
    from driftloop_training.train import ModelParams, features_of, fit_model, predict_usd

    train, _ = split_base(load_base_data(), holdout_share=0.2, seed=42)
    rows = train.sample(4_000, random_state=42).reset_index(drop=True)  # quick on a busy box
    name = f"california-housing-exact-{uuid.uuid4().hex[:8]}"
    model = fit_model(rows, params=ModelParams(max_iter=20))
    profile = compute_profile(features_of(rows), predict_usd(model, rows))
    client = MlflowClient(stack.mlflow_url, stack.mlflow_url)
    mlflow.set_tracking_uri(stack.mlflow_url)
    exp = client.get_experiment_by_name("driftloop-it") or client.get_experiment(
        client.create_experiment("driftloop-it")
    )
    run = client.create_run(exp.experiment_id, run_name=name)
    path = tmp_path_factory.mktemp("exact-profile") / PROFILE_ARTIFACT_PATH
    path.write_text(profile.model_dump_json())
    client.log_artifact(run.info.run_id, str(path))
    client.log_metric(run.info.run_id, HOLDOUT_RMSE_METRIC, 50_000.0)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    mv = client.create_model_version(name, run.info.artifact_uri, run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(mv.version))
    return Champion(name, str(mv.version), model, rows)


# --- one test's isolated world: topics, group, databases, log, consumer processes ----------


@dataclass
class Consumer:
    """One ``python -m driftloop_drift_consumer`` process of the rig's group."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_drift_consumer"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> dict[str, Any]:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def assigned(self) -> list[str]:
        return list(self.ready().get("assigned") or [])

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and dict(s.labels) == labels:
                    return float(s.value)
        return 0.0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def consumer_env(
    stack: Any,
    champion: Champion,
    topics: dict[str, str],
    *,
    port: int,
    instance_id: str,
    group: str,
    redis_url: str,
    influx_db: str,
    labelled_dir: Path,
    scratch: Path,
    suffix: str,
    **settings: str,
) -> dict[str, str]:
    """The environment of one drift consumer process of a rig, against the stack's real
    broker, Redis, InfluxDB and MLflow; ``settings`` are more ``DRIFTLOOP_DRIFT_CONSUMER_*``
    names (without the prefix) and their values."""
    p = "DRIFTLOOP_DRIFT_CONSUMER_"
    return {
        **os.environ,
        p + "HOST": "127.0.0.1",
        p + "PORT": str(port),
        p + "INSTANCE_ID": instance_id,
        p + "KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        p + "CONSUMER_GROUP": group,
        p + "PREDICTIONS_TOPIC": topics["predictions"],
        p + "FEEDBACK_TOPIC": topics["feedback"],
        p + "MODEL_EVENTS_TOPIC": topics["model-events"],
        p + "MODEL_NAME": champion.model_name,
        p + "REDIS_URL": redis_url,
        p + "INFLUX_URL": stack.influx_url,
        p + "INFLUX_DB": influx_db,
        p + "MLFLOW_TRACKING_URI": stack.mlflow_url,
        p + "LABELLED_LOG_DIR": str(labelled_dir),
        p + "REPORTS_DIR": str(scratch / f"reports-{suffix}"),
        p + "STATE_DIR": str(scratch / f"state-{suffix}"),
        **{p + k: v for k, v in settings.items()},
    }


@dataclass
class Load:
    """What the load generator sent (filled while it runs, in its own thread)."""

    predictions: list[str] = field(default_factory=list)
    first_label: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    #: Per (topic, partition): one past the last offset the broker acknowledged. Tansu's
    #: ListOffsets can lag behind what it stored, so the acks are the authority.
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Set by the test once its fault is over: the load ends at the next whole window.
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def acked(self, metadata: list[Any]) -> None:
        for m in metadata:
            key = (m.topic, m.partition)
            self.ends[key] = max(self.ends.get(key, 0), m.offset + 1)


@dataclass
class Rig:
    sfx: str
    stack: Any
    champion: Champion
    tmp: Path
    topics: dict[str, str]
    group: str
    redis_url: str
    influx_db: str
    consumers: list[Consumer] = field(default_factory=list)

    @property
    def labelled_dir(self) -> Path:
        return self.tmp / "labelled"

    def consumer(self, name: str) -> Consumer:
        port = free_port()
        env = consumer_env(
            self.stack,
            self.champion,
            self.topics,
            port=port,
            instance_id=f"exact-{self.sfx}-{name}",
            group=self.group,
            redis_url=self.redis_url,
            influx_db=self.influx_db,
            labelled_dir=self.labelled_dir,
            scratch=self.tmp,
            suffix=name,
            WINDOW_EVENTS=str(WINDOW),
            MIN_WINDOW_EVENTS=str(WINDOW),
            MERGE_WINDOW_SECONDS="0",  # per-partition windows: what this module counts
            LABELLED_FLUSH_SECONDS="1",
            REPORTS_INTERVAL_SECONDS="0",
            LOG_FORMAT="console",
        )
        c = Consumer(name, port, env, self.tmp / f"consumer-{name}.log")
        self.consumers.append(c)
        return c

    # load ------------------------------------------------------------------------------------

    def stream(self) -> Load:
        """Start the load in a thread; returns its (growing) record of what was sent."""
        load = Load()

        def run() -> None:
            try:
                asyncio.run(self._produce(load))
            except BaseException as exc:  # reported by finish()
                load.error = exc
            finally:
                load.done.set()

        threading.Thread(target=run, name=f"load-{self.sfx}", daemon=True).start()
        return load

    async def _produce(self, load: Load) -> None:
        from aiokafka import AIOKafkaProducer

        from driftloop_training.train import predict_usd

        rng = np.random.default_rng(7)
        pool = self.champion.rows
        producer = AIOKafkaProducer(
            bootstrap_servers=self.stack.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            enable_idempotence=False,
        )
        await producer.start()
        try:
            relabel: list[tuple[int, str]] = []
            for chunk in range(MAX_CHUNKS):
                if load.stop.is_set() and chunk % WHOLE_WINDOWS == 0:
                    break
                start = chunk * CHUNK
                rows = pool.iloc[rng.integers(0, len(pool), CHUNK)]
                preds = predict_usd(self.champion.model, rows)
                features = rows[list(FEATURE_NAMES)].to_numpy()
                futures = []
                feedback: list[tuple[int, FeedbackEvent]] = []
                for i in range(start, start + CHUNK):
                    rid = f"exact-{self.sfx}-{i}"
                    event = PredictionEvent(
                        request_id=rid,
                        timestamp=datetime.now(UTC),
                        model_name=self.champion.model_name,
                        model_version=self.champion.version,
                        features=dict(
                            zip(FEATURE_NAMES, map(float, features[i - start]), strict=True)
                        ),
                        prediction=float(preds[i - start]),
                        latency_ms=1.0,
                        replica_id="exact",
                    )
                    futures.append(await self._send(producer, "predictions", i, rid, event))
                    load.predictions.append(rid)
                    if i % 5:
                        actual = float(preds[i - start]) + float(rng.normal(0, 30_000))
                        feedback.append((i, _feedback(rid, actual)))
                        load.first_label[rid] = actual
                        if i % 50 == 1:
                            relabel.append((i, rid))
                load.acked(await asyncio.gather(*futures))  # predictions first, like replicas
                futures = [
                    await self._send(producer, "feedback", i, ev.request_id, ev)
                    for i, ev in feedback
                ]
                # a second label for requests labelled two chunks ago: later, and it must lose
                while relabel and relabel[0][0] < start - CHUNK:
                    i, rid = relabel.pop(0)
                    futures.append(
                        await self._send(producer, "feedback", i, rid, _feedback(rid, -1.0))
                    )
                    load.duplicates += 1
                load.acked(await asyncio.gather(*futures))
                await asyncio.sleep(PACE_S)
            for i, rid in relabel:
                sent = await self._send(producer, "feedback", i, rid, _feedback(rid, -1.0))
                load.acked([await sent])
                load.duplicates += 1
        finally:
            await producer.stop()

    async def _send(self, producer: Any, topic: str, i: int, rid: str, event: Any) -> Any:
        """Request ``i`` goes to partition ``i % PARTITIONS`` of both topics (co-partitioned,
        and a whole number of windows per partition)."""
        return await producer.send(
            self.topics[topic], event.to_bytes(), key=rid.encode(), partition=i % PARTITIONS
        )

    # results ---------------------------------------------------------------------------------

    def behind(self, ends: dict[tuple[str, int], int]) -> dict[str, tuple[int | None, int]]:
        """Partitions the group has not committed up to ``ends`` yet: {name: (committed, end)}."""
        return asyncio.run(self._behind(ends))

    async def _behind(self, ends: dict[tuple[str, int], int]) -> dict[str, tuple[int | None, int]]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        c = AIOKafkaConsumer(
            bootstrap_servers=self.stack.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
        )
        await c.start()
        try:
            behind = {}
            for (topic, partition), end in sorted(ends.items()):
                committed = await c.committed(TopicPartition(topic, partition))
                if committed != end:
                    behind[f"{topic}-{partition}"] = (committed, end)
        finally:
            await c.stop()
        return behind

    def windows(self) -> pd.DataFrame:
        r = httpx.get(
            f"{self.stack.influx_url}/query",
            params={
                "db": self.influx_db,
                "q": 'SELECT "events", "first_offset", "last_offset" FROM "drift_window" '
                'GROUP BY "partition", "model_version"',
            },
            timeout=10,
        )
        r.raise_for_status()
        out = []
        for result in r.json().get("results", []):
            for series in result.get("series", []):
                for values in series["values"]:
                    out.append(
                        {**series["tags"], **dict(zip(series["columns"], values, strict=True))}
                    )
        return pd.DataFrame(
            out, columns=["partition", "model_version", "events", "first_offset", "last_offset"]
        )

    def log_rows(self) -> pd.DataFrame:
        """Every row of every part file, read raw (a duplicate shows up here)."""
        files = sorted(self.labelled_dir.rglob("part-*.parquet"))
        if not files:
            return pd.DataFrame(columns=["request_id", "actual"])
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _feedback(rid: str, actual: float) -> FeedbackEvent:
    return FeedbackEvent(request_id=rid, timestamp=datetime.now(UTC), actual=actual)


async def _create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    parts = {t.name: t.partitions for t in TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, parts[c], 1) for c, name in topics.items()])
    finally:
        await admin.close()


@pytest.fixture
def rig(stack: Any, champion_model: Champion, tmp_path: Path) -> Iterator[Rig]:
    import redis as redis_lib

    sfx = uuid.uuid4().hex[:8]
    r = Rig(
        sfx=sfx,
        stack=stack,
        champion=champion_model,
        tmp=tmp_path,
        topics={c: f"{c}-exact-{sfx}" for c in ("predictions", "feedback", "model-events")},
        group=f"drift-exact-{sfx}",
        redis_url=f"{stack.redis_url.rsplit('/', 1)[0]}/11",
        influx_db=f"driftloop_exact_{sfx}",
    )
    asyncio.run(_create_topics(stack.kafka_bootstrap, r.topics))
    try:
        yield r
    finally:
        for c in r.consumers:
            c.stop()
        httpx.post(
            f"{stack.influx_url}/query", data={"q": f'DROP DATABASE "{r.influx_db}"'}, timeout=10
        )
        client = redis_lib.Redis.from_url(r.redis_url)
        for key in client.scan_iter(match=f"*exact-{sfx}-*", count=1000):
            client.delete(key)


def finish(rig: Rig, load: Load) -> tuple[pd.DataFrame, pd.DataFrame]:
    """End the load, wait for the group to commit everything; return (windows, rows)."""
    load.stop.set()
    poll("the load to be sent", load.done.is_set)
    assert load.error is None, f"the load generator failed: {load.error!r}"
    assert len(load.predictions) % (WINDOW * PARTITIONS) == 0
    assert len(load.ends) == 2 * PARTITIONS
    last: dict[str, Any] = {}

    def all_committed() -> bool:
        last["behind"] = rig.behind(load.ends)
        return not last["behind"]

    try:
        poll("every partition committed to its end", all_committed, every_s=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (committed, end) behind: {last['behind']}") from None
    return rig.windows(), rig.log_rows()


def assert_exactly_once(rig: Rig, load: Load, windows: pd.DataFrame, rows: pd.DataFrame) -> None:
    # windows: each partition's offsets 0..end in consecutive windows of 100, once each
    sent = len(load.predictions)
    per_partition = sent // PARTITIONS
    assert set(windows["model_version"]) == {rig.champion.version}
    for partition, mine in windows.groupby("partition"):
        ranges = sorted(
            zip(mine["first_offset"].astype(int), mine["last_offset"].astype(int), strict=True)
        )
        expected = [(a, a + WINDOW - 1) for a in range(0, per_partition, WINDOW)]
        assert ranges == expected, (
            f"partition {partition}: windows {ranges[:3]}... != {expected[:3]}..."
        )
    assert len(windows) == sent // WINDOW
    assert int(windows["events"].sum()) == sent
    # labelled rows: one per request sent with feedback, with its first label
    assert rows["request_id"].is_unique, (
        f"{rows['request_id'].duplicated().sum()} labelled rows written twice"
    )
    assert set(rows["request_id"]) == set(load.first_label)
    got = rows.set_index("request_id")["actual"]
    wrong = [rid for rid, actual in load.first_label.items() if got[rid] != actual]
    assert not wrong, f"{len(wrong)} requests kept a later label, e.g. {wrong[:3]}"


# --- the tests ------------------------------------------------------------------------------


def test_sigkill_mid_batch_and_restart_counts_every_event_once(rig: Rig) -> None:
    consumer = rig.consumer("a")
    consumer.start()
    poll("consumer ready", lambda: consumer.ready().get("status") == "ready")
    load = rig.stream()
    # kill while the stream flows and part files are being written (a flush every second)
    poll(
        "labelled rows written mid-stream",
        lambda: (
            consumer.metric("driftloop_labelled_rows_total") > 0 and len(load.predictions) >= 2_000
        ),
        every_s=0.05,
    )
    written_before_kill = consumer.metric("driftloop_labelled_rows_total")
    consumer.kill()
    consumer.start()
    poll("consumer ready again", lambda: consumer.ready().get("status") == "ready")
    windows, rows = finish(rig, load)
    assert_exactly_once(rig, load, windows, rows)
    print(
        f"\nsigkill: killed after {written_before_kill:.0f} labelled rows; "
        f"{len(load.predictions)} predictions -> {len(windows)} windows, {int(windows['events'].sum())} "
        f"events; {len(load.first_label)} labelled + {load.duplicates} second labels -> "
        f"{len(rows)} rows, {rows['request_id'].duplicated().sum()} duplicates"
    )


@pytest.mark.parametrize("leave", ["sigterm", "sigkill"])
def test_a_second_consumer_joins_and_leaves_under_load(rig: Rig, leave: str) -> None:
    a, b = rig.consumer("a"), rig.consumer("b")
    a.start()
    poll("first consumer ready", lambda: a.ready().get("status") == "ready")
    load = rig.stream()
    poll(
        "first rows labelled",
        lambda: a.metric("driftloop_labelled_rows_total") > 0 and len(load.predictions) >= 1_000,
        every_s=0.1,
    )
    b.start()
    # the group has rebalanced once both hold partitions (and the load still flows)
    poll("both consumers hold partitions", lambda: a.assigned() and b.assigned(), every_s=0.2)
    poll(
        "rows labelled by the second consumer",
        lambda: b.metric("driftloop_labelled_rows_total") > 0,
        every_s=0.1,
    )
    if leave == "sigterm":
        # uvicorn re-raises SIGTERM once its graceful shutdown is done: -15 is a clean exit
        assert b.terminate() in (0, -signal.SIGTERM)
        assert "drift_consumer_stopped" in b.log_path.read_text(), "no graceful shutdown"
    else:
        b.kill()
    poll("first consumer holds every partition again", lambda: len(a.assigned()) == 2 * PARTITIONS)
    windows, rows = finish(rig, load)
    assert_exactly_once(rig, load, windows, rows)
    print(
        f"\njoin+{leave}: {len(load.predictions)} predictions -> {len(windows)} windows, "
        f"{int(windows['events'].sum())} events; {len(load.first_label)} labelled + "
        f"{load.duplicates} second labels -> {len(rows)} rows, "
        f"{rows['request_id'].duplicated().sum()} duplicates"
    )
