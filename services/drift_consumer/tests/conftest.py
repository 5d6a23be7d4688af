"""Factories for the drift consumer's unit tests: synthetic reference data profiled by the
training package's own code, fake Redis clients (async and sync), a fake Kafka consumer that
records commits, and event builders. No network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka.structs import TopicPartition

from driftloop_contracts import (
    FEATURE_NAMES,
    MODEL_NAME,
    FeedbackEvent,
    PredictionEvent,
    ReferenceProfile,
)
from driftloop_drift_consumer.drift import CompiledReference
from driftloop_drift_consumer.reference import VersionRef
from driftloop_training.profile import compute_profile

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def synthetic_frame(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Housing-like columns: skewed, heavy-tailed, and heavily tied (integer ages)."""
    frame = pd.DataFrame(
        {
            "median_income_in_block": rng.lognormal(1.2, 0.45, n),
            "median_house_age_in_block": np.minimum(rng.integers(1, 60, n), 52).astype(float),
            "average_rooms": rng.lognormal(1.6, 0.25, n),
            "average_bedrooms": rng.lognormal(0.05, 0.1, n),
            "population_per_block": rng.integers(3, 6000, n).astype(float),
            "average_house_occupancy": rng.lognormal(1.0, 0.3, n),
            "block_latitude": rng.uniform(32.6, 41.9, n),
            "block_longitude": rng.uniform(-124.3, -114.4, n),
        }
    )
    prediction = 40_000 * frame["median_income_in_block"].to_numpy() + rng.normal(0, 2e4, n)
    return frame, prediction


def matrix(frame: pd.DataFrame, prediction: np.ndarray) -> np.ndarray:
    return np.column_stack([frame[list(FEATURE_NAMES)].to_numpy(), prediction])


@dataclass
class ReferenceData:
    frame: pd.DataFrame
    prediction: np.ndarray
    profile: ReferenceProfile
    compiled: CompiledReference

    @property
    def values(self) -> np.ndarray:
        return matrix(self.frame, self.prediction)


def make_reference(seed: int = 0, n: int = 16_000, version: str = "1") -> ReferenceData:
    rng = np.random.default_rng(seed)
    frame, prediction = synthetic_frame(rng, n)
    profile = compute_profile(frame, prediction, created_at=T0)
    return ReferenceData(
        frame, prediction, profile, CompiledReference.from_profile(profile, version)
    )


@pytest.fixture(scope="session")
def reference() -> ReferenceData:
    return make_reference()


def prediction_event(
    request_id: str,
    values: Iterable[float],
    *,
    version: str = "1",
    ts: datetime | None = None,
    model_name: str = MODEL_NAME,
) -> PredictionEvent:
    row = list(values)
    return PredictionEvent(
        request_id=request_id,
        timestamp=ts or T0,
        model_name=model_name,
        model_version=version,
        features=dict(zip(FEATURE_NAMES, row[:8], strict=True)),
        prediction=row[8],
        latency_ms=1.0,
        replica_id="r0",
    )


def feedback_event(request_id: str, actual: float, ts: datetime | None = None) -> FeedbackEvent:
    return FeedbackEvent(
        request_id=request_id, timestamp=ts or T0 + timedelta(minutes=1), actual=actual
    )


# --- fake MLflow ---


class FakeSource:
    def __init__(self, profiles: dict[str, ReferenceProfile], champion: str = "1") -> None:
        self.profiles = profiles
        self.champion_version = champion

    def champion(self) -> VersionRef:
        return self.version(self.champion_version)

    def version(self, version: str) -> VersionRef:
        return VersionRef(version, f"run-{version}", 50_000.0)

    def profile(self, run_id: str) -> ReferenceProfile:
        return self.profiles[run_id.removeprefix("run-")]


# --- fake Redis ---------------------------------------------------------------------------


class FakeRedisState:
    def __init__(self) -> None:
        self.kv: dict[str, bytes] = {}
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.fail = False

    def check(self) -> None:
        if self.fail:
            raise ConnectionError("fake redis is down")


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


class FakePipeline:
    def __init__(self, redis: FakeAsyncRedis) -> None:
        self._redis = redis
        self._ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def set(self, key: str, value: Any, ex: int | None = None, nx: bool = False) -> FakePipeline:
        self._ops.append(("set", (key, value), {"ex": ex, "nx": nx}))
        return self

    def get(self, key: str) -> FakePipeline:
        self._ops.append(("get", (key,), {}))
        return self

    async def execute(self) -> list[Any]:
        self._redis.state.check()
        return [await getattr(self._redis, op)(*a, **kw) for op, a, kw in self._ops]


class FakeAsyncRedis:
    """The subset of ``redis.asyncio.Redis`` the consumer uses."""

    def __init__(self, state: FakeRedisState | None = None) -> None:
        self.state = state or FakeRedisState()
        self.ttl: dict[str, int] = {}

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    async def set(
        self, key: str, value: Any, ex: int | None = None, nx: bool = False
    ) -> bool | None:
        self.state.check()
        if nx and key in self.state.kv:
            return None
        self.state.kv[key] = _b(value)
        if ex is not None:
            self.ttl[key] = ex
        return True

    async def get(self, key: str) -> bytes | None:
        self.state.check()
        return self.state.kv.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.state.check()
        return [self.state.kv.get(k) for k in keys]

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        self.state.check()
        return {k.encode(): v for k, v in self.state.hashes.get(key, {}).items()}

    async def aclose(self) -> None:
        return None


# --- fake Kafka ---------------------------------------------------------------------------


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None


@dataclass
class FakeLog:
    """Partitions of the data topics, shared by successive fake consumers (like a broker)."""

    records: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    #: Offsets acknowledged but not stored yet: a fetch skips them and reads on, as Tansu's
    #: memory storage does when two producers append to one partition at once.
    unstored: set[tuple[TopicPartition, int]] = field(default_factory=set)

    def append(self, topic: str, partition: int, value: bytes | None) -> Record:
        tp = TopicPartition(topic, partition)
        records = self.records.setdefault(tp, [])
        record = Record(topic, partition, len(records), value)
        records.append(record)
        return record


class FakeConsumer:
    """A consumer that owns every partition of the log and hands out ``batch`` records per
    partition per ``getmany``, starting at the committed offsets."""

    def __init__(
        self,
        log: FakeLog,
        partitions: list[TopicPartition],
        batch: int = 50,
        batch_by_topic: dict[str, int] | None = None,
    ) -> None:
        self.log = log
        self.partitions = partitions
        self.batch = batch
        self.batch_by_topic = batch_by_topic or {}
        self.listener: Any = None
        self.position: dict[TopicPartition, int] = {}
        self.fail_commits = False
        self.stopped = False
        self.seeks: list[tuple[TopicPartition, int]] = []

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.listener = listener

    async def start(self) -> None:
        self.position = {tp: self.log.committed.get(tp, 0) for tp in self.partitions}
        if self.listener is not None:
            await self.listener.on_partitions_assigned(set(self.partitions))

    async def stop(self) -> None:
        self.stopped = True

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.log.committed.get(tp)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.log.records.get(tp, []))

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        out = {}
        for tp in self.partitions:
            records = self.log.records.get(tp, [])
            start = self.position[tp]
            chunk = records[start : start + self.batch_by_topic.get(tp.topic, self.batch)]
            if chunk:
                self.position[tp] = start + len(chunk)
                chunk = [r for r in chunk if (tp, r.offset) not in self.log.unstored]
            if chunk:
                out[tp] = chunk
        if not out:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commits:
            raise RuntimeError("commit failed")
        self.log.commits.append(dict(offsets))
        self.log.committed.update(offsets)


async def until(predicate: Callable[[], bool], within_s: float = 60.0) -> None:
    """Poll ``predicate``; the deadline only guards against a hang (a loaded machine is slow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
