"""Windows merged across consumers (shared_windows, shared_store, shared_merge) against a real
``redis-server`` started for the module (the store's guarantees live in its Lua scripts, so a
fake would test the fake)."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftloop_contracts import PREDICTIONS_TOPIC
from driftloop_drift_consumer.drift import DriftDecision, ReferenceThresholds, decide
from driftloop_drift_consumer.errors import SharedProgressConflict
from driftloop_drift_consumer.feedback_join import JoinStore
from driftloop_drift_consumer.loop import DriftLoop
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.reference import ReferenceManager
from driftloop_drift_consumer.settings import DriftConsumerSettings
from driftloop_drift_consumer.shared_merge import SharedMerge
from driftloop_drift_consumer.shared_store import SharedStore
from driftloop_drift_consumer.shared_windows import (
    Cursor,
    Progress,
    SharedWindows,
    decode_partial,
    encode_partial,
)
from driftloop_drift_consumer.sinks.facade import Sinks
from driftloop_drift_consumer.sinks.influx import InfluxSink
from driftloop_drift_consumer.windows import (
    ClosedWindow,
    EventBatch,
    MergedWindows,
    WindowManager,
    WindowPolicy,
)

from .conftest import FakeAsyncRedis, FakeConsumer, ReferenceData, until
from .test_loop import PARTITIONS as LOOP_PARTITIONS
from .test_loop import Harness, committed, metric, partials, start, stop
from .test_merged_windows import SLOT_S, SLOT_US, stream

PARTS = [0, 1, 2, 3]
MIN_EVENTS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server(port: int) -> subprocess.Popen[bytes]:
    """A real ``redis-server`` on ``port``, listening when this returns."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is part of the stack's toolchain (scripts/setup.sh)"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)  # polling a process we started until it listens (no event to await)
    proc.kill()
    raise AssertionError(f"redis-server did not listen on {port}")


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    port = free_port()
    proc = redis_server(port)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def redis(redis_port: int) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=redis_port)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def store(redis: Any, instance: str = "a", group: str = "g") -> SharedStore:
    return SharedStore(redis, group=group, ttl_seconds=3600, instance_id=instance)


@dataclass(eq=False)
class Instance:
    """One consumer: its partitions' SharedWindows and a SharedMerge over the real store."""

    windows: SharedWindows
    merge: SharedMerge
    metrics: ConsumerMetrics


def instance(
    redis: Any,
    reference: ReferenceData,
    name: str,
    idle_grace: float = 2.0,
    late_seconds: float = 3600,
) -> Instance:
    settings = DriftConsumerSettings(sink_retry_initial_seconds=0.01, sink_retry_max_seconds=0.05)
    metrics = ConsumerMetrics()
    sinks = Sinks(
        settings,
        metrics=metrics,
        join_store=None,  # type: ignore[arg-type]
        labelled=None,  # type: ignore[arg-type]
        influx=None,
        reports=None,
        stopping=asyncio.Event(),
        failing={},
    )
    windows = SharedWindows(SLOT_S, reference.compiled, idle_grace_seconds=idle_grace)
    merge = SharedMerge(
        windows,
        store(redis, name),
        sinks=sinks,
        metrics=metrics,
        min_events=MIN_EVENTS,
        lease_seconds=30,
        late_seconds=late_seconds,
    )
    return Instance(windows, merge, metrics)


def judge(stats: Any) -> DriftDecision:
    from driftloop_contracts.thresholds import ThresholdSet

    return decide(stats, ReferenceThresholds(ThresholdSet()))


async def feed(inst: Instance, parts: dict[int, Any], owned: list[int], lo: int, hi: int) -> None:
    """Offsets ``lo..hi-1`` of the owned partitions, then publish (not caught up)."""
    await inst.merge.load(owned)
    for p in owned:
        o, t, v = parts.get(p, ([], [], []))
        if lo < len(o):
            inst.windows.add(p, EventBatch(o[lo:hi], t[lo:hi], v[lo:hi]))
    await inst.merge.publish(0, caught_up=lambda p: False)


def key(w: ClosedWindow) -> tuple[Any, ...]:
    return (w.first_offset, w.last_offset, w.n, w.time_ns, w.parts)


def assert_same_windows(a: list[ClosedWindow], b: list[ClosedWindow]) -> None:
    assert [key(w) for w in a] == [key(w) for w in b]
    for x, y in zip(a, b, strict=True):
        for stat, values in x.statistics.by_statistic().items():
            np.testing.assert_allclose(values, y.statistics.by_statistic()[stat], rtol=0, atol=1e-9)


async def every_event_once(
    windows: list[ClosedWindow], parts: dict[int, Any], shared: SharedStore, version: str
) -> None:
    """Per partition, the closed windows' shares and the open window's partials chain from
    offset 0 to the last one, no overlap, no hole."""
    cursor, _ = await shared.cursor(version)
    pending = await shared.partials(version, cursor.open_from, 2**62) if cursor.open_from else {}
    spans = [(s.partition, s.first_offset, s.last_offset) for w in windows for s in w.parts]
    spans += [(q.partition, *q.state.segments[q.partition]) for qs in pending.values() for q in qs]
    for p, (offsets, _, _) in parts.items():
        mine = sorted((a, b) for q, a, b in spans if q == p)
        assert mine[0][0] == 0 and mine[-1][1] == int(offsets[-1]), (p, mine[:2], mine[-2:])
        assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(mine)), p
    open_events = sum(q.state.count for qs in pending.values() for q in qs)
    assert open_events < MIN_EVENTS
    assert sum(w.n for w in windows) + open_events == sum(len(o) for o, _, _ in parts.values())


async def test_three_instances_with_moves_write_the_windows_of_one(
    redis: Any, reference: ReferenceData
) -> None:
    parts = stream(reference, 4, 8_000, seed=11, late=False)
    # the reference: one consumer merging its own 4 partitions (issue 13's MergedWindows)
    mw = MergedWindows(SLOT_S, MIN_EVENTS, reference.compiled)
    for lo in range(0, 2_000, 50):
        for p in PARTS:
            o, t, v = parts[p]
            mw.add(p, EventBatch(o[lo : lo + 50], t[lo : lo + 50], v[lo : lo + 50]))
    expected = mw.ready(PARTS, 0, caught_up=lambda p: False)

    a, b, c = (instance(redis, reference, n) for n in "abc")
    got: list[ClosedWindow] = []
    owners = {a: [0, 1], b: [2], c: [3]}
    for lo in range(0, 2_000, 50):
        if lo == 700:  # c dies without publishing its open partial; b takes partition 3
            c.windows.drop([3])
            owners = {a: [0, 1], b: [2, 3]}
        if lo == 1_300:  # a new instance d takes partition 0 from a (a revoked it)
            a.windows.drop([0])
            d = instance(redis, reference, "d")
            owners = {a: [1], b: [2, 3], d: [0]}
        for inst, owned in owners.items():
            # a new owner replays from far back (the commit may lag what was shared): the
            # events already shared are skipped
            start = {p: lo if inst.windows.known(p) else 0 for p in owned}
            await inst.merge.load(owned)
            for p in owned:
                o, t, v = parts[p]
                batch = (x[start[p] : lo + 50] for x in (o, t, v))
                inst.windows.add(p, EventBatch(*batch))
            await inst.merge.publish(0, caught_up=lambda p: False)
        for inst in owners:
            got += [w for w, _ in await inst.merge.aggregate(set(PARTS), 0, judge)]
    assert len(expected) >= 10
    assert_same_windows(got, expected)
    # the stream ends: every partition goes idle and the rest closes (all but an open tail)
    for inst in owners:
        await inst.merge.publish(100 * SLOT_US, caught_up=lambda p: True)
    got += [w for w, _ in await a.merge.aggregate(set(PARTS), 100 * SLOT_US, judge)]
    await every_event_once(got, parts, store(redis), reference.compiled.model_version)
    # exactly one aggregator closed each window (the lease), nobody lost a race
    closed = sum(i.metrics.shared_windows.labels("closed")._value.get() for i in (a, b, c, d))
    assert closed == len(got)
    assert len(await store(redis).windows(reference.compiled.model_version)) == len(got)


async def test_a_slot_closes_only_when_every_partition_of_the_topic_passed_it(
    redis: Any, reference: ReferenceData
) -> None:
    parts = stream(reference, 4, 4_000, late=False)
    a = instance(redis, reference, "a")
    await feed(a, parts, [0, 1, 2], 0, 1_000)  # partition 3 has an owner that is behind
    assert await a.merge.aggregate(set(PARTS), 0, judge) == []
    b = instance(redis, reference, "b")
    await feed(b, parts, [3], 0, 1_000)
    closed = await a.merge.aggregate(set(PARTS), 0, judge)
    assert closed and {s.partition for w, _ in closed for s in w.parts} == set(PARTS)
    # the commit passes exactly the published partials; the open slot is held
    for p in PARTS:
        owner = a if p < 3 else b
        held = owner.windows.commit_offset(p, 1_000)
        shared = (await store(redis).progress(reference.compiled.model_version))[p]
        assert held == shared.offset + 1 < 1_000


async def test_idle_partitions_pass_their_slots_and_a_late_event_counts_in_the_next(
    redis: Any, reference: ReferenceData
) -> None:
    parts = stream(reference, 2, 1_000, late=False)
    a = instance(redis, reference, "a", idle_grace=2.0)
    await feed(a, {0: parts[0]}, [0, 1], 0, 500)  # partition 1 silent
    version = reference.compiled.model_version
    last = int(parts[0][1].max())
    await a.merge.publish(last, caught_up=lambda p: True)  # within the grace: held
    assert (await store(redis).progress(version))[0].slot == last // SLOT_US - 1
    await a.merge.publish(last + 3 * SLOT_US, caught_up=lambda p: True)
    progress = await store(redis).progress(version)
    assert progress[0].slot == progress[1].slot >= last // SLOT_US
    closed = await a.merge.aggregate({0, 1}, last + 3 * SLOT_US, judge)
    assert sum(w.n for w, _ in closed) == 500
    assert a.windows.commit_offset(0, 500) == 500  # everything read is shared
    # an event stamped in a passed slot: counted late, in the next slot, and a replay of
    # the partition (from its commit) by another instance puts it in the same slot
    late = EventBatch(np.array([500]), np.array([last]), parts[0][2][:1])
    b = instance(redis, reference, "b")
    await b.merge.load([0, 1])
    for inst in (a, b):
        inst.windows.add(0, late)
        assert inst.windows.late_events == 1
        await inst.merge.publish(last + 3 * SLOT_US, caught_up=lambda p: False)
    assert a.metrics.shared_late_events._value.get() == 1


async def test_a_zombie_owner_is_refused_and_a_retried_publish_is_a_no_op(
    redis: Any, reference: ReferenceData
) -> None:
    parts = stream(reference, 1, 2_000, late=False)
    a = instance(redis, reference, "a")
    b = instance(redis, reference, "b")
    await feed(a, parts, [0], 0, 400)
    await feed(b, parts, [0], 0, 400)  # b took over and replayed: nothing new to share
    await feed(b, parts, [0], 400, 1_500)
    # a still believes it owns partition 0 (a zombie, behind b): its next partial is refused
    # (one that equals what b shared, progress included, is accepted as already applied)
    a.windows.add(0, EventBatch(*(x[400:1_000] for x in parts[0])))
    with pytest.raises(SharedProgressConflict):
        await a.merge.publish(0, caught_up=lambda p: False)
    assert a.metrics.shared_partials.labels("conflict")._value.get() == 1
    # a publish applied but whose reply was lost is sent again: accepted, nothing changes
    c = instance(redis, reference, "c")
    await c.merge.load([0])
    c.windows.add(0, EventBatch(*(x[1_500:2_000] for x in parts[0])))
    publication = c.windows.advance(0, lambda p: False)
    assert publication is not None
    s = store(redis)
    await s.publish(publication.model_version, publication.partitions)
    await s.publish(publication.model_version, publication.partitions)
    assert (await s.progress(publication.model_version))[0] == publication.partitions[0].progress


async def test_two_aggregators_close_each_window_once(redis: Any, reference: ReferenceData) -> None:
    parts = stream(reference, 2, 2_000, late=False)
    a = instance(redis, reference, "a")
    await feed(a, parts, [0, 1], 0, 1_000)
    version = reference.compiled.model_version
    s1, s2 = store(redis, "x"), store(redis, "y")
    cursor, raw = await s1.cursor(version)
    assert cursor == Cursor()
    through = min(p.slot for p in (await s1.progress(version)).values())
    from driftloop_drift_consumer.shared_windows import aggregate

    partials = await s1.partials(version, None, through)
    result = aggregate(
        reference.compiled, partials, cursor, through, min_events=200, slot_us=SLOT_US
    )
    assert result.windows
    decided = [(w, judge(w.statistics)) for w in result.windows]
    assert await s1.close(version, raw, result.cursor, decided, slot_us=SLOT_US)
    # same start: loses
    assert not await s2.close(version, raw, result.cursor, decided, slot_us=SLOT_US)
    kept = await s1.windows(version)
    assert [w["first_slot"] for w in kept] == [w.first_offset for w in result.windows]
    # the merged partials are gone; the open window's are kept
    left = await s1.partials(version, None, through)
    assert all(slot >= (result.cursor.open_from or through + 1) for slot in left)
    # and only one instance holds the lease
    assert await s1.lease(version, 30) and not await s2.lease(version, 30)


def test_a_partial_round_trips_bit_for_bit(reference: ReferenceData) -> None:
    parts = stream(reference, 1, 300)
    sw = SharedWindows(SLOT_S, reference.compiled)
    sw.load(0, None)
    sw.add(0, EventBatch(*parts[0]))
    publication = sw.advance(10**12, lambda p: True)
    assert publication is not None
    for part in publication.partitions[0].partials:
        back = decode_partial(encode_partial(part))
        assert back.slot == part.slot and back.state.segments == part.state.segments
        assert np.array_equal(back.state.bin_counts, part.state.bin_counts)
        assert back.state.values().tobytes() == part.state.values().tobytes()
        assert (back.state.count, back.state.start_us, back.state.end_us) == (
            part.state.count,
            part.state.start_us,
            part.state.end_us,
        )
    assert Progress.decode(Progress(5, 7).encode()) == Progress(5, 7)
    assert Cursor.decode(Cursor(3, None).encode()) == Cursor(3, None)


def test_shared_windows_need_a_slot_length() -> None:
    with pytest.raises(ValueError, match="MERGE_WINDOW_SECONDS"):
        DriftConsumerSettings(shared_windows=True, merge_window_seconds=0)
    assert DriftConsumerSettings(shared_windows=True, merge_window_seconds=1).shared_windows
    assert DriftConsumerSettings(shared_windows=True).shared_windows  # the default slot
    assert not DriftConsumerSettings().shared_windows  # off by default
    assert DriftConsumerSettings().merge_window_seconds > 0  # merged over owned partitions


async def test_redis_down_pauses_publishing_counts_it_and_loses_nothing(
    reference: ReferenceData,
) -> None:
    import redis.asyncio as aioredis

    port = free_port()  # nothing listens yet: Redis is down
    client = aioredis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.5)
    parts = stream(reference, 1, 1_000, late=False)
    a = instance(client, reference, "a")
    task = asyncio.create_task(feed(a, parts, [0], 0, 1_000))
    failures = a.metrics.sink_failures.labels("redis_shared")
    await until(lambda: failures._value.get() >= 1, 30)
    assert not task.done()
    assert a.metrics.sink_up.labels("redis_shared")._value.get() == 0
    assert a.windows.commit_offset(0, 1_000) == 0  # nothing shared: nothing committable
    proc = redis_server(port)
    try:
        await asyncio.wait_for(task, 30)
        assert a.metrics.sink_up.labels("redis_shared")._value.get() == 1
        shared = (await store(client).progress(reference.compiled.model_version))[0]
        assert a.windows.commit_offset(0, 1_000) == shared.offset + 1 > 0
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(10)


async def test_a_slot_merged_long_after_its_end_is_counted_late(
    redis: Any, reference: ReferenceData
) -> None:
    parts = stream(reference, 2, 2_000, late=False)
    a = instance(redis, reference, "a", late_seconds=60)
    await feed(a, parts, [0, 1], 0, 1_000)
    last = int(parts[0][1].max())
    closed = await a.merge.aggregate({0, 1}, last + 10 * SLOT_US, judge)
    assert closed and a.metrics.shared_late_slots._value.get() == 0
    await feed(a, parts, [0, 1], 1_000, 1_001)
    await a.merge.publish(last + 120 * SLOT_US, caught_up=lambda p: True)
    closed = await a.merge.aggregate({0, 1}, last + 120 * SLOT_US, judge)
    assert closed and a.metrics.shared_late_slots._value.get() >= 1
    assert a.metrics.shared_merge_lag._value.get() > 0


async def test_closed_windows_older_than_the_ttl_are_trimmed(
    redis: Any, reference: ReferenceData
) -> None:
    from driftloop_drift_consumer.shared_windows import aggregate

    parts = stream(reference, 1, 3_000, late=False)
    a = instance(redis, reference, "a")
    await feed(a, parts, [0], 0, 3_000)
    s, version = store(redis), reference.compiled.model_version  # TTL 3600 s
    cursor, raw = await s.cursor(version)
    through = (await s.progress(version))[0].slot
    partials = await s.partials(version, None, through)
    result = aggregate(
        reference.compiled, partials, cursor, through, min_events=200, slot_us=SLOT_US
    )
    assert len(result.windows) >= 4 and result.cursor.next_slot is not None
    decided = [(w, judge(w.statistics)) for w in result.windows]
    # were a slot 3600 s long, the TTL would keep the windows of the newest slot only
    assert await s.close(version, raw, result.cursor, decided, slot_us=3_600 * SLOT_US)
    kept = [w["first_slot"] for w in await s.windows(version)]
    newest = [
        w.first_offset for w in result.windows if w.first_offset >= result.cursor.next_slot - 1
    ]
    assert kept == newest and len(kept) < len(result.windows)


# --- the loop (test_loop's harness: fake broker and InfluxDB, real Redis for the store) ------


class GroupConsumer(FakeConsumer):
    """The fake consumer with the topic metadata the aggregator reads."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.partitions if tp.topic == topic}


class SharedHarness(Harness):
    def __init__(self, tmp_path: Path, reference: ReferenceData, redis: Any, **kw: Any) -> None:
        super().__init__(tmp_path, reference, **kw)
        self.shared_redis = redis

    def consumer(self) -> FakeConsumer:
        c = GroupConsumer(self.log, LOOP_PARTITIONS, batch=37, batch_by_topic=self.batch_by_topic)
        self.consumers.append(c)
        return c

    def make_loop(self) -> DriftLoop:
        s = self.settings
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.influx.handler))
        return DriftLoop(
            s,
            metrics=ConsumerMetrics(),
            windows=WindowManager(WindowPolicy(s.window_events, 0.0, s.min_window_events)),
            references=ReferenceManager(self.source, s.state_dir),
            join_store=JoinStore(FakeAsyncRedis(self.redis), s.join_ttl_seconds),
            labelled=self.writer(),
            influx=InfluxSink(
                "http://influx", "driftloop", client=client, retry_initial_s=0.001, attempts=1
            ),
            reports=None,
            consumer_factory=self.consumer,
            model_events_factory=None,
            shared_store=SharedStore(
                self.shared_redis, group="loop", ttl_seconds=3600, instance_id=f"i{self._n}"
            ),
        )


async def test_the_loop_merges_for_the_group_and_a_crash_closes_nothing_twice(
    tmp_path: Path, reference: ReferenceData, redis: Any
) -> None:
    # test_loop's merged-window scenario with SHARED_WINDOWS: 1,000 predictions 1 ms apart
    # over 2 partitions, 0.1 s slots of 100; windows of >= 200: slots 0-2, 3-4, 5-6, 7-8,
    # and slots 9-10 (101 events) stay open once the partitions are caught up
    h = SharedHarness(
        tmp_path,
        reference,
        redis,
        merge_window_seconds=0.1,
        min_window_events=200,
        sequential_ert_events=0,
        shared_windows=True,
    )
    h.predictions(1000)
    first = h.make_loop()
    tasks = await start(first)
    await until(lambda: len(h.influx.windows()) >= 2)
    for c in h.consumers:
        c.fail_commits = True  # shared and written, offsets not committed ...
    await until(lambda: len(h.influx.windows()) == 4)
    # ... and then the process ends without a commit. (Not a task cancellation as in
    # test_loop: redis-py 8.1's execute_command was seen to swallow a cancellation that
    # lands while it waits, so the cancelled loop ran on; a SIGKILL has no such path.)
    await stop(first, tasks)
    before = set(h.influx.windows())
    second = h.make_loop()
    tasks = await start(second)
    # the replay skips what was shared; everything is shared, so everything is committed
    await until(
        lambda: (
            committed(h, PREDICTIONS_TOPIC, 0) == 500 and committed(h, PREDICTIONS_TOPIC, 1) == 500
        )
    )
    assert set(h.influx.windows()) == before and len(before) == 4
    assert all(",partition=-1" in series for series, _ in before)
    closed = "driftloop_shared_windows_total"
    assert metric(first, closed, outcome="closed") == 4
    assert metric(second, closed, outcome="closed") == 0  # nothing closed twice
    assert metric(first, "driftloop_windows_total", model_version="1") == 4
    # every event in exactly one window's partial, or the open window's (Redis)
    shared = store(redis, group="loop")
    cursor, _ = await shared.cursor("1")
    assert cursor.open_from is not None
    pending = await shared.partials("1", cursor.open_from, 2**62)
    spans = {p: list(r) for p, r in partials(h).items()}
    for qs in pending.values():
        for q in qs:
            spans.setdefault(str(q.partition), []).append(q.state.segments[q.partition])
    for p, ranges in spans.items():
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == 499, (p, ranges)
        assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges)), (p, ranges)
    assert sum(q.state.count for qs in pending.values() for q in qs) == 101
    await stop(second, tasks)
