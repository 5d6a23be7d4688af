"""Factories for the model API's unit tests: a tiny real scikit-learn model behind a fake
registry, a recording producer instead of Kafka, and an app wired to them. No network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LinearRegression

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEATURE_SPECS,
    LOCAL_FEEDBACK_API_KEY,
    MODEL_NAME,
    SHADOW_ALIAS,
    utcnow,
)
from driftloop_contracts.model_artifact import ModelRejected
from driftloop_model_api.app import create_app
from driftloop_model_api.errors import AliasNotFound, ModelLoadError
from driftloop_model_api.metrics import Metrics
from driftloop_model_api.model_holder import LoadedModel
from driftloop_model_api.model_source import VersionRef
from driftloop_model_api.settings import ModelApiSettings


def tiny_estimator(scale: float = 1.0, source_columns: bool = True) -> LinearRegression:
    """A linear model fitted on a DataFrame (like the real pipeline) of random in-bounds rows."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            (spec.source_column if source_columns else spec.name): rng.uniform(
                spec.ge, min(spec.le, spec.ge + 10), 200
            )
            for spec in FEATURE_SPECS
        }
    )
    y = scale * (X.iloc[:, 0] * 0.4 + 0.5)
    return LinearRegression().fit(X, y)


def loaded(version: str = "1", scale: float = 1.0) -> LoadedModel:
    return LoadedModel.build(
        name=MODEL_NAME,
        version=version,
        run_id=f"run-{version}",
        loaded_at=utcnow(),
        profile_id=f"profile-{version}",
        estimator=tiny_estimator(scale),
    )


@dataclass
class FakeSource:
    """A registry in memory: versions -> scale of the tiny model; ``broken`` versions fail,
    ``rejected`` ones are refused by the artifact checks with the given error. The ``shadow``
    alias names ``shadow_version`` (none: the alias does not exist); the champion carries
    ``champion_tags`` (the watch's end)."""

    alias_version: str = "1"
    shadow_version: str | None = None
    champion_tags: dict[str, str] = field(default_factory=dict)
    versions: dict[str, float] = field(default_factory=lambda: {"1": 1.0, "2": 2.0})
    broken: set[str] = field(default_factory=set)
    rejected: dict[str, ModelRejected] = field(default_factory=dict)
    unavailable: bool = False
    loads: list[str] = field(default_factory=list)
    model_name: str = MODEL_NAME

    def resolve_alias(self, alias: str) -> VersionRef:
        if self.unavailable:
            raise ModelLoadError("registry unavailable")
        if alias == SHADOW_ALIAS:
            if self.shadow_version is None:
                raise AliasNotFound(f"{MODEL_NAME}@{alias} does not exist")
            return VersionRef(self.shadow_version, f"run-{self.shadow_version}")
        return VersionRef(self.alias_version, f"run-{self.alias_version}", dict(self.champion_tags))

    def load(self, version: str) -> LoadedModel:
        self.loads.append(version)
        if version in self.rejected:
            raise self.rejected[version]
        if self.unavailable or version in self.broken or version not in self.versions:
            raise ModelLoadError(f"cannot load version {version}")
        return loaded(version, self.versions[version])


class RecordingProducer:
    """Acks every send at once unless ``fail`` is set; keeps what it delivered."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail = False
        self.fail_start = False
        self.started = 0
        self.aborted = 0

    async def start(self) -> None:
        if self.fail_start:
            raise ConnectionError("broker down")
        self.started += 1

    async def stop(self) -> None:
        return None

    async def abort(self) -> None:
        self.aborted += 1

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(ConnectionError("broker down"))
        else:
            self.sent.append((topic, key or b"", value or b""))
            future.set_result(None)
        return future

    def topics(self, topic: str) -> list[bytes]:
        return [value for t, _, value in self.sent if t == topic]


class FakeLabelRedis:
    """The label store's Redis in memory: ``SET NX EX`` semantics; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[str, int | None]] = {}
        self.down = False

    async def set(
        self, name: str, value: str, *, ex: int | None = None, nx: bool = False
    ) -> bool | None:
        if self.down:
            raise ConnectionError("redis down")
        if nx and name in self.data:
            return None
        self.data[name] = (value, ex)
        return True

    async def get(self, name: str) -> bytes | None:
        if self.down:
            raise ConnectionError("redis down")
        found = self.data.get(name)
        return None if found is None else found[0].encode()

    async def aclose(self) -> None:
        return None


#: Headers of a label producer holding the (local default) API key.
PRODUCER = {"X-API-Key": LOCAL_FEEDBACK_API_KEY}


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


@dataclass
class AppHarness:
    client: TestClient
    source: FakeSource
    producer: RecordingProducer
    metrics: Metrics
    labels: FakeLabelRedis

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, **kwargs)


@pytest.fixture
def settings() -> ModelApiSettings:
    return ModelApiSettings(
        replica_id="test-replica",
        kafka_enabled=False,
        cache_enabled=False,
        alias_check_interval_seconds=3600,
        load_retry_initial_seconds=0.01,
        batch_max_rows=5,
        max_body_bytes=4096,
    )


@pytest.fixture
def harness(settings: ModelApiSettings) -> Iterator[AppHarness]:
    source = FakeSource()
    producer = RecordingProducer()
    metrics = Metrics(settings.replica_id)
    labels = FakeLabelRedis()
    app = create_app(
        settings,
        source=source,
        producer_factory=lambda: producer,
        consumer_factory=None,
        metrics=metrics,
        label_redis=labels,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200, what="model loaded")
        yield AppHarness(client, source, producer, metrics, labels)


@pytest.fixture
def example() -> dict[str, float]:
    return dict(EXAMPLE_FEATURES)
