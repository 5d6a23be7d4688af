"""Windows merged across consumers: 3 drift consumers in one group decide exactly as 1, against
the real broker (Tansu), Redis, InfluxDB and MLflow, with every consumer a real ``python -m
driftloop_drift_consumer`` process (the rig of test_consumer_exactness).

One load of predictions (6 partitions, ~200/s, event time = wall time, the features shifted
half-way so some windows declare drift) is read at the same time by two consumer groups with
``SHARED_WINDOWS`` on: group "one" has a single consumer; group "three" has three, one of which
is SIGKILLed mid-run and another added. Once both groups have committed every partition and
merged every slot, their merged windows (InfluxDB ``partition=-1``, and the windows hash in
Redis) are compared: the same windows (slots and events), the same statistics (to 1e-9), the
same decisions; and in each group every event is in exactly one window (per partition the
windows' shares chain from offset 0 to the end, the rest is the open window's, in Redis).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import FEATURE_NAMES, PredictionEvent

from .test_consumer_exactness import (  # the rig: a registered champion, consumer processes
    Champion,
    Consumer,
    champion_model,
    consumer_env,
    free_port,
    poll,
)

__all__ = ["champion_model"]  # a fixture this module uses

pytestmark = pytest.mark.integration

PARTITIONS = 6
SLOT_S = 1
MIN_EVENTS = 100
IDLE_GRACE_S = 4
CHUNK = 60  # predictions per chunk: 10 per partition
PACE_S = 0.3  # ~200 predictions/s
CHUNKS = 110  # ~33 s of load
SHIFT_FROM = CHUNKS // 2  # the features drift from here on
DEADLINE_S = 300.0


@dataclass
class Load:
    sent: int = 0
    #: Per partition: one past the last offset the broker acknowledged.
    ends: dict[int, int] = field(default_factory=dict)
    last_us: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class Group:
    name: str
    group: str
    influx_db: str
    consumers: list[Consumer] = field(default_factory=list)


@dataclass
class World:
    sfx: str
    stack: Any
    champion: Champion
    tmp: Path
    topics: dict[str, str]
    redis_url: str
    groups: dict[str, Group] = field(default_factory=dict)

    def consumer(self, group: Group, name: str) -> Consumer:
        port = free_port()
        env = consumer_env(
            self.stack,
            self.champion,
            self.topics,
            port=port,
            instance_id=f"xmerge-{self.sfx}-{group.name}-{name}",
            group=group.group,
            redis_url=self.redis_url,
            influx_db=group.influx_db,
            labelled_dir=self.tmp / f"labelled-{group.name}",
            scratch=self.tmp,
            suffix=f"{group.name}-{name}",
            WINDOW_EVENTS=str(MIN_EVENTS),
            MIN_WINDOW_EVENTS=str(MIN_EVENTS),
            MERGE_WINDOW_SECONDS=str(SLOT_S),
            MERGE_IDLE_GRACE_SECONDS=str(IDLE_GRACE_S),
            SHARED_WINDOWS="true",
            SHARED_LEASE_SECONDS="5",
            SEQUENTIAL_ERT_EVENTS="0",  # not under test; saves each process a calibration
            WATCH_ENABLED="false",
            REPORTS_INTERVAL_SECONDS="0",
            LOG_FORMAT="console",
        )
        c = Consumer(name, port, env, self.tmp / f"consumer-{group.name}-{name}.log")
        group.consumers.append(c)
        return c

    # --- load ------------------------------------------------------------------------------

    def stream(self) -> Load:
        load = Load()

        def run() -> None:
            try:
                asyncio.run(self._produce(load))
            except BaseException as exc:  # reported by the test
                load.error = exc
            finally:
                load.done.set()

        threading.Thread(target=run, name=f"xmerge-load-{self.sfx}", daemon=True).start()
        return load

    async def _produce(self, load: Load) -> None:
        from aiokafka import AIOKafkaProducer

        from driftloop_training.train import predict_usd

        rng = np.random.default_rng(17)
        pool = self.champion.rows
        producer = AIOKafkaProducer(
            bootstrap_servers=self.stack.kafka_bootstrap, acks="all", linger_ms=5
        )
        await producer.start()
        try:
            for chunk in range(CHUNKS):
                rows = pool.iloc[rng.integers(0, len(pool), CHUNK)].copy()
                if chunk >= SHIFT_FROM:  # drift: richer blocks, bigger houses
                    rows["median_income_in_block"] *= 1.8
                    rows["average_rooms"] *= 1.5
                preds = predict_usd(self.champion.model, rows)
                features = rows[list(FEATURE_NAMES)].to_numpy()
                futures = []
                for j in range(CHUNK):
                    i = chunk * CHUNK + j
                    rid = f"xmerge-{self.sfx}-{i}"
                    now = datetime.now(UTC)
                    event = PredictionEvent(
                        request_id=rid,
                        timestamp=now,
                        model_name=self.champion.model_name,
                        model_version=self.champion.version,
                        features=dict(zip(FEATURE_NAMES, map(float, features[j]), strict=True)),
                        prediction=float(preds[j]),
                        latency_ms=1.0,
                        replica_id="xmerge",
                    )
                    load.last_us = max(load.last_us, int(now.timestamp() * 1e6))
                    futures.append(
                        await producer.send(
                            self.topics["predictions"],
                            event.to_bytes(),
                            key=rid.encode(),
                            partition=i % PARTITIONS,
                        )
                    )
                for m in await asyncio.gather(*futures):
                    load.ends[m.partition] = max(load.ends.get(m.partition, 0), m.offset + 1)
                load.sent += CHUNK
                await asyncio.sleep(PACE_S)  # pacing the load, not synchronisation
        finally:
            await producer.stop()

    # --- results ---------------------------------------------------------------------------

    def committed(self, group: Group) -> dict[int, int | None]:
        return asyncio.run(self._committed(group))

    async def _committed(self, group: Group) -> dict[int, int | None]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        c = AIOKafkaConsumer(
            bootstrap_servers=self.stack.kafka_bootstrap,
            group_id=group.group,
            enable_auto_commit=False,
        )
        await c.start()
        try:
            return {
                p: await c.committed(TopicPartition(self.topics["predictions"], p))
                for p in range(PARTITIONS)
            }
        finally:
            await c.stop()

    def shared(self, group: Group) -> dict[str, Any]:
        """The group's cursor, closed windows and open window's partials (Redis)."""
        return asyncio.run(self._shared(group))

    async def _shared(self, group: Group) -> dict[str, Any]:
        import redis.asyncio as aioredis

        from driftloop_drift_consumer.shared_store import SharedStore

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            store = SharedStore(client, group=group.group, ttl_seconds=3600, instance_id="test")
            version = self.champion.version
            cursor, _ = await store.cursor(version)
            pending = (
                await store.partials(version, cursor.open_from, 2**62)
                if cursor.open_from is not None
                else {}
            )
            return {
                "cursor": cursor,
                "windows": await store.windows(version),
                "pending": [q for qs in pending.values() for q in qs],
            }
        finally:
            await client.aclose()

    def influx(self, group: Group, query: str) -> pd.DataFrame:
        r = httpx.get(
            f"{self.stack.influx_url}/query",
            params={"db": group.influx_db, "q": query, "epoch": "ns"},
            timeout=10,
        )
        r.raise_for_status()
        rows = []
        for result in r.json().get("results", []):
            for series in result.get("series", []):
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    rows.append({**series.get("tags", {}), **row})
        return pd.DataFrame(rows)


async def _create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, 1 if kind == "model-events" else PARTITIONS, 1)
                for kind, name in topics.items()
            ]
        )
    finally:
        await admin.close()


@pytest.fixture
def world(stack: Any, champion_model: Champion, tmp_path: Path) -> Iterator[World]:
    import redis as redis_lib

    sfx = uuid.uuid4().hex[:8]
    w = World(
        sfx=sfx,
        stack=stack,
        champion=champion_model,
        tmp=tmp_path,
        topics={c: f"{c}-xmerge-{sfx}" for c in ("predictions", "feedback", "model-events")},
        redis_url=f"{stack.redis_url.rsplit('/', 1)[0]}/12",
    )
    for name in ("one", "three"):
        w.groups[name] = Group(name, f"drift-xmerge-{sfx}-{name}", f"driftloop_xmerge_{sfx}_{name}")
    asyncio.run(_create_topics(stack.kafka_bootstrap, w.topics))
    try:
        yield w
    finally:
        for g in w.groups.values():
            for c in g.consumers:
                c.stop()
            httpx.post(
                f"{stack.influx_url}/query",
                data={"q": f'DROP DATABASE "{g.influx_db}"'},
                timeout=10,
            )
        client = redis_lib.Redis.from_url(w.redis_url)
        for key in client.scan_iter(match=f"*xmerge-{sfx}*", count=1000):
            client.delete(key)


def merged_windows(world: World, group: Group) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(windows, statistics) of the group's merged windows, from InfluxDB."""
    windows = world.influx(
        group,
        'SELECT "events", "first_offset", "last_offset", "declared", "drift_share", '
        '"drifted_series" FROM "drift_window" WHERE "partition" = \'-1\'',
    )
    stats = world.influx(
        group,
        'SELECT "value" FROM "drift" WHERE "partition" = \'-1\' GROUP BY "feature", "statistic"',
    )
    return windows.sort_values("time").reset_index(drop=True), stats


def assert_every_event_once(world: World, group: Group, load: Load) -> int:
    """Per partition, the windows' shares (InfluxDB ``drift_partial``) and the open window's
    partials (Redis) chain from offset 0 to the last acknowledged one; returns the events in
    closed windows."""
    parts = world.influx(
        group,
        'SELECT "events", "first_offset", "last_offset", "slot" FROM "drift_partial" '
        'GROUP BY "partition"',
    )
    shared = world.shared(group)
    spans = [
        (int(r["partition"]), int(r["first_offset"]), int(r["last_offset"]), int(r["events"]))
        for r in parts.to_dict("records")
    ]
    pending = [
        (q.partition, *q.state.segments[q.partition], q.state.count) for q in shared["pending"]
    ]
    for p in range(PARTITIONS):
        mine = sorted((a, b) for q, a, b, _ in spans + pending if q == p)
        assert mine and mine[0][0] == 0, f"{group.name} partition {p}: starts at {mine[:1]}"
        assert mine[-1][1] == load.ends[p] - 1, f"{group.name} partition {p}: ends {mine[-1:]}"
        overlaps = [(x, y) for x, y in itertools.pairwise(mine) if x[1] + 1 != y[0]]
        assert not overlaps, f"{group.name} partition {p}: not consecutive at {overlaps[:3]}"
    in_windows = sum(e for *_, e in spans)
    open_events = sum(e for *_, e in pending)
    assert in_windows + open_events == load.sent, (group.name, in_windows, open_events)
    assert open_events < MIN_EVENTS
    # closed once each: one record per window in Redis, the same spans as in InfluxDB
    spans_redis = [(w["first_slot"], w["last_slot"], w["events"]) for w in shared["windows"]]
    influx_windows = merged_windows(world, group)[0]
    spans_influx = list(
        zip(
            influx_windows["first_offset"].astype(int),
            influx_windows["last_offset"].astype(int),
            influx_windows["events"].astype(int),
            strict=True,
        )
    )
    assert spans_redis == spans_influx, group.name
    return in_windows


def is_ready(consumer: Consumer) -> bool:
    return consumer.ready().get("status") == "ready"


def all_committed(world: World, group: Group, load: Load) -> bool:
    return world.committed(group) == load.ends


def merged_through(world: World, group: Group, last_slot: int) -> bool:
    """Every slot up to ``last_slot`` is merged (the cursor is past it)."""
    return (world.shared(group)["cursor"].next_slot or 0) > last_slot


def test_three_consumers_with_a_kill_and_a_join_decide_exactly_as_one(world: World) -> None:
    one, three = world.groups["one"], world.groups["three"]
    single = world.consumer(one, "solo")
    a, b, c = (world.consumer(three, n) for n in "abc")
    for consumer in (single, a, b, c):
        consumer.start()
    for consumer in (single, a, b, c):
        poll(f"{consumer.name} ready", partial(is_ready, consumer))
    poll(
        "every consumer of group three holds partitions",
        lambda: all(x.assigned() for x in (a, b, c)),
    )
    load = world.stream()
    poll(
        "group three merged windows mid-run",
        lambda: (
            sum(x.metric("driftloop_shared_windows_total", outcome="closed") for x in (a, b, c))
            >= 3
        ),
        timeout_s=DEADLINE_S,
    )
    b.kill()  # SIGKILL: nothing flushed, nothing committed
    d = world.consumer(three, "d")
    d.start()
    poll("the added consumer holds partitions", lambda: bool(d.assigned()), timeout_s=DEADLINE_S)
    killed_at = load.sent
    poll("the load to be sent", load.done.is_set, timeout_s=DEADLINE_S)
    assert load.error is None, f"the load generator failed: {load.error!r}"
    assert killed_at < load.sent, "the kill happened after the load"
    assert len(load.ends) == PARTITIONS

    last_slot = load.last_us // (SLOT_S * 1_000_000)
    for group in (one, three):
        poll(
            f"group {group.name} committed every partition to its end",
            partial(all_committed, world, group, load),
            timeout_s=DEADLINE_S,
            every_s=1,
        )
        poll(
            f"group {group.name} merged every slot",
            partial(merged_through, world, group, last_slot),
            timeout_s=DEADLINE_S,
            every_s=1,
        )

    # each window counted once by whoever closed it (group one's consumer never restarted)
    assert single.metric("driftloop_shared_windows_total", outcome="closed") == len(
        merged_windows(world, one)[0]
    )
    live = [single, a, c, d]
    late = {x.name: x.metric("driftloop_shared_late_events_total") for x in live}
    assert not any(late.values()), f"events later than the idle grace: {late}"
    conflicts = {
        x.name: x.metric("driftloop_shared_partials_total", outcome="conflict") for x in live
    }
    assert not any(conflicts.values()), conflicts

    w1, s1 = merged_windows(world, one)
    w3, s3 = merged_windows(world, three)
    # the same windows: span (slots), events, timestamp
    cols = ["time", "first_offset", "last_offset", "events"]
    assert len(w1) >= 15
    assert w1[cols].to_dict("records") == w3[cols].to_dict("records")
    # the same statistics, to 1e-9
    key = ["time", "feature", "statistic"]
    s1 = s1.sort_values(key).reset_index(drop=True)
    s3 = s3.sort_values(key).reset_index(drop=True)
    assert s1[key].to_dict("records") == s3[key].to_dict("records")
    diff = np.abs(s1["value"].to_numpy() - s3["value"].to_numpy())
    assert int((diff > 1e-9).sum()) == 0, f"max statistic difference {diff.max()}"
    # the same decisions
    dec = ["time", "declared", "drift_share", "drifted_series"]
    assert w1[dec].to_dict("records") == w3[dec].to_dict("records")
    declared = int(w1["declared"].sum())
    assert 0 < declared < len(w1), "the load drifts half-way: both verdicts must occur"
    first_drift = w1.loc[w1["declared"], "first_offset"].min()
    assert first_drift == w3.loc[w3["declared"], "first_offset"].min()
    # every event in exactly one window (or the open one), in both groups
    events1 = assert_every_event_once(world, one, load)
    events3 = assert_every_event_once(world, three, load)
    assert events1 == events3
    print(
        f"\nshared windows 1 vs 3 consumers (b SIGKILLed after {killed_at} predictions, d "
        f"added): {load.sent} predictions over {PARTITIONS} partitions -> {len(w1)} vs "
        f"{len(w3)} windows compared, {len(s1)} vs {len(s3)} statistics compared (max "
        f"difference {diff.max():.3g}), {len(w1)} decisions compared ({declared} declared; "
        f"first drift at slot {first_drift}), {events1} events in windows + "
        f"{load.sent - events1} in the open window"
    )
