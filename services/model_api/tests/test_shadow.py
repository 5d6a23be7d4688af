"""The shadow during a post-promotion watch: what it predicts, what it never does (answer the
client, fail a request), how it follows the ``shadow`` alias and the watch's end, and what it
counts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEATURE_NAMES,
    FEEDBACK_TOPIC,
    MODEL_NAME,
    PREDICTIONS_TOPIC,
    SHADOW_ALIAS,
    WATCH_UNTIL_TAG,
    PredictionEvent,
    decode_event,
    format_watch_until,
    utcnow,
)
from driftloop_contracts.model_artifact import UntrustedArtifact
from driftloop_model_api.app import create_app
from driftloop_model_api.errors import ModelLoadError
from driftloop_model_api.ledger import MmapLedger, read_ledger
from driftloop_model_api.metrics import Metrics
from driftloop_model_api.model_holder import LoadedModel, ModelHolder
from driftloop_model_api.model_source import VersionRef
from driftloop_model_api.publisher import EventPublisher
from driftloop_model_api.reloader import Reloader
from driftloop_model_api.settings import ModelApiSettings
from driftloop_model_api.shadow import ShadowMetrics, ShadowStage
from driftloop_model_api.shadow_watch import ShadowWatch

from .conftest import (
    AppHarness,
    FakeLabelRedis,
    FakeSource,
    RecordingProducer,
    loaded,
    wait_for,
)
from .test_predict import expected_usd
from .test_reloader import promoted, served, until

ROW = [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]


def event(request_id: str = "r-1", version: str = "2", prediction: float = 1.0) -> PredictionEvent:
    return PredictionEvent(
        request_id=request_id,
        timestamp=utcnow(),
        model_name=MODEL_NAME,
        model_version=version,
        features=dict(EXAMPLE_FEATURES),
        prediction=prediction,
        latency_ms=1.0,
        replica_id="r",
    )


def stage(**kwargs: Any) -> tuple[ShadowStage, list[PredictionEvent], Metrics]:
    metrics = Metrics("r")
    out: list[PredictionEvent] = []
    stage = ShadowStage(
        lambda e, _slot: out.append(e), ShadowMetrics(metrics.registry, "r"), **kwargs
    )
    return stage, out, metrics


class BrokenEstimator:
    """Loads fine, then every call fails (``value`` None) or returns ``value``."""

    def __init__(self, value: float | None) -> None:
        self.value = value

    def predict(self, X: Any) -> list[float]:
        if self.value is None:
            raise RuntimeError("shadow exploded")
        return [self.value for _ in X]


def broken(version: str, value: float | None) -> LoadedModel:
    good = loaded(version)
    return LoadedModel(
        name=good.name,
        version=version,
        run_id=good.run_id,
        loaded_at=good.loaded_at,
        profile_id=None,
        estimator=BrokenEstimator(value),
        columns=good.columns,
    )


# --- the stage: hold, predict in a batch, publish ------------------------------------------


async def test_without_a_shadow_nothing_is_held() -> None:
    shadow, out, _ = stage()
    assert shadow.submit(event(), ROW) is False
    assert shadow.held == 0 and out == []


async def test_held_events_leave_with_the_shadow_prediction_in_one_call() -> None:
    shadow, out, metrics = stage()
    old = loaded("1", scale=1.0)
    shadow.set(old)
    rows = [[*ROW[:1], ROW[0] + i * 0.1, *ROW[2:]] for i in range(5)]
    for i, row in enumerate(rows):
        assert shadow.submit(event(f"r-{i}"), row)
    assert out == []  # nothing published before the shadow has predicted
    await shadow.drain()
    assert [e.request_id for e in out] == [f"r-{i}" for i in range(5)]
    assert [e.shadow_model_version for e in out] == ["1"] * 5
    assert [e.shadow_prediction for e in out] == old.predict_usd(rows)
    assert [e.prediction for e in out] == [1.0] * 5  # the champion's value is untouched
    assert metrics.value("driftloop_shadow_predictions_total") == 5
    assert metrics.value("driftloop_shadow_call_seconds_count") == 1  # one call, five rows
    assert (
        metrics.value("driftloop_shadow_model_info", model_name=MODEL_NAME, model_version="1") == 1
    )
    assert metrics.value("driftloop_shadow_loaded") == 1


async def test_held_events_are_in_the_ledger_from_the_moment_they_are_held(
    tmp_path: Path,
) -> None:
    """A SIGKILL while the shadow holds events must leave their keys in the ledger (the next
    incarnation counts those not on the topic as lost), and publishing them must not record
    them a second time."""
    producer, metrics = RecordingProducer(), Metrics("r")
    producer.fail = True  # nothing is acknowledged: what is pending stays visible
    sizes = {PREDICTIONS_TOPIC: 10, FEEDBACK_TOPIC: 10}
    slots = EventPublisher.ledger_slots(sizes, 4, held=5)
    ledger = MmapLedger(tmp_path, "r", (PREDICTIONS_TOPIC, FEEDBACK_TOPIC), slots)
    publisher = EventPublisher(
        lambda: producer, metrics, buffer_sizes=sizes, batch_size=4, ledger=ledger
    )
    shadow = ShadowStage(
        lambda e, slot: publisher.publish(PREDICTIONS_TOPIC, e.request_id.encode(), b"v", slot),
        ShadowMetrics(metrics.registry, "r"),
        reserve=lambda e: publisher.reserve(PREDICTIONS_TOPIC, e.request_id.encode()),
        max_pending=5,
    )
    shadow.set(loaded("1"))
    for i in range(3):
        assert shadow.submit(event(f"r-{i}"), ROW)
    # held, not yet in the publisher: as a SIGKILL now would leave the file
    assert publisher.buffered == 0
    assert read_ledger(ledger.path).pending[PREDICTIONS_TOPIC] == [b"r-0", b"r-1", b"r-2"]
    await shadow.drain()
    assert publisher.buffered == 3
    assert sorted(read_ledger(ledger.path).pending[PREDICTIONS_TOPIC]) == [b"r-0", b"r-1", b"r-2"]
    publisher.publish(PREDICTIONS_TOPIC, b"p-3", b"v")  # a request without the shadow: one slot
    assert len(read_ledger(ledger.path).pending[PREDICTIONS_TOPIC]) == 4
    await publisher.stop()  # never acknowledged: dropped at the drain's end, counted, settled
    assert read_ledger(ledger.path).pending[PREDICTIONS_TOPIC] == []
    ledger.close()


async def test_a_shadow_of_the_serving_version_is_skipped() -> None:
    shadow, _, _ = stage()
    shadow.set(loaded("2"))
    assert shadow.submit(event(version="2"), ROW) is False


@pytest.mark.parametrize(
    ("value", "reason"), [(None, "predict_error"), (float("nan"), "non_finite")]
)
async def test_a_failing_shadow_publishes_the_events_without_it(
    value: float | None, reason: str
) -> None:
    shadow, out, metrics = stage()
    shadow.set(broken("1", value))
    for i in range(3):
        assert shadow.submit(event(f"r-{i}"), ROW)
    await shadow.drain()
    assert [e.request_id for e in out] == ["r-0", "r-1", "r-2"]
    assert all(e.shadow_model_version is None and e.shadow_prediction is None for e in out)
    assert metrics.value("driftloop_shadow_failures_total", reason=reason) == 3
    assert metrics.value("driftloop_shadow_predictions_total") == 0


async def test_past_the_pending_bound_events_leave_at_once_and_are_counted() -> None:
    shadow, out, metrics = stage(max_pending=2)
    shadow.set(loaded("1"))
    assert shadow.submit(event("a"), ROW) and shadow.submit(event("b"), ROW)
    assert shadow.submit(event("c"), ROW) is False  # the caller publishes it without a shadow
    assert metrics.value("driftloop_shadow_failures_total", reason="overloaded") == 1
    await shadow.drain()
    assert [e.request_id for e in out] == ["a", "b"]


async def test_batches_are_bounded_and_keep_their_shadow_across_a_change() -> None:
    shadow, out, metrics = stage(max_batch=2)
    first, second = loaded("1", 1.0), loaded("3", 3.0)
    shadow.set(first)
    for i in range(3):
        shadow.submit(event(f"a-{i}"), ROW)
    shadow.set(second)
    shadow.submit(event("b-0"), ROW)
    await shadow.drain()
    versions = {e.request_id: e.shadow_model_version for e in out}
    assert versions == {"a-0": "1", "a-1": "1", "a-2": "1", "b-0": "3"}
    assert metrics.value("driftloop_shadow_call_seconds_count") == 3  # [a0 a1] [a2 | b0]
    shadow.set(None)
    assert metrics.value("driftloop_shadow_loaded") == 0
    assert (
        metrics.value("driftloop_shadow_model_info", model_name=MODEL_NAME, model_version="3") == 0
    )


# --- the watch: follow the alias and the tag -----------------------------------------------


def make(source: FakeSource) -> tuple[Reloader, ModelHolder, ShadowStage, Metrics]:
    holder, metrics = ModelHolder(), Metrics("r")
    shadow_metrics = ShadowMetrics(metrics.registry, "r")
    shadow = ShadowStage(lambda e, _slot: None, shadow_metrics)
    reloader = Reloader(
        holder,
        source,
        metrics,
        alias="champion",
        consumer_factory=None,
        check_interval_s=3600,
        retry_initial_s=0.01,
        retry_max_s=0.05,
        reload_attempts=2,
        shadow=ShadowWatch(shadow, source, shadow_metrics),
    )
    return reloader, holder, shadow, metrics


def shadow_of(shadow: ShadowStage) -> str | None:
    return shadow.model.version if shadow.model is not None else None


async def test_promotion_keeps_the_replaced_champion_as_shadow_and_rollback_reuses_it() -> None:
    source = FakeSource(versions={"1": 1.0, "2": 2.0})
    reloader, holder, shadow, _ = make(source)
    await reloader.start()
    await until(lambda: served(holder) == "1")
    assert shadow.model is None  # no watch, no shadow

    # the DAG's decide step: shadow -> 1, champion -> 2, then ModelPromoted
    source.shadow_version, source.alias_version = "1", "2"
    reloader.handle_event(promoted("2"))
    await until(lambda: served(holder) == "2" and shadow_of(shadow) == "1")
    assert source.loads == ["1", "2"]  # the shadow is the old champion object: no download

    # a rollback: champion -> 1, alias shadow removed, announced as ModelPromoted
    source.alias_version, source.shadow_version = "1", None
    reloader.handle_event(promoted("1"))
    await until(lambda: served(holder) == "1" and shadow.model is None)
    assert source.loads == ["1", "2"]  # the champion came back from the shadow: no download
    await reloader.stop()


async def test_a_replica_started_during_the_watch_loads_the_shadow_verified() -> None:
    source = FakeSource(alias_version="2", shadow_version="1")
    reloader, holder, shadow, metrics = make(source)
    await reloader.start()
    await until(lambda: served(holder) == "2" and shadow_of(shadow) == "1")
    assert source.loads == ["2", "1"]  # through the source's (verified) load, like the champion
    assert metrics.value("driftloop_shadow_loaded") == 1
    # the alias disappears (watch kept); the periodic check notices
    source.shadow_version = None
    reloader.request_alias_check()
    await until(lambda: shadow.model is None)
    assert metrics.value("driftloop_shadow_loaded") == 0
    await reloader.stop()


async def test_the_watch_ends_at_the_champion_tag_even_if_the_alias_lingers() -> None:
    ended = format_watch_until(utcnow() - timedelta(seconds=1))
    running = format_watch_until(utcnow() + timedelta(hours=1))
    source = FakeSource(
        alias_version="2", shadow_version="1", champion_tags={WATCH_UNTIL_TAG: running}
    )
    reloader, holder, shadow, _ = make(source)
    await reloader.start()
    await until(lambda: shadow_of(shadow) == "1")
    source.champion_tags[WATCH_UNTIL_TAG] = ended
    reloader.request_alias_check()
    await until(lambda: shadow.model is None)
    assert served(holder) == "2"
    await reloader.stop()


async def test_a_shadow_that_fails_to_load_is_counted_and_serving_goes_on() -> None:
    source = FakeSource(
        alias_version="2",
        shadow_version="1",
        rejected={"1": UntrustedArtifact(["os.system"], "version 1")},
    )
    reloader, holder, shadow, metrics = make(source)
    await reloader.start()
    await until(
        lambda: metrics.value("driftloop_shadow_failures_total", reason="untrusted_type") == 1
    )
    assert served(holder) == "2" and shadow.model is None
    source.rejected.clear()
    source.broken.add("1")
    reloader.request_alias_check()
    await until(lambda: metrics.value("driftloop_shadow_failures_total", reason="load_error") == 1)
    assert shadow.model is None
    source.broken.clear()
    reloader.request_alias_check()  # the next check tries again
    await until(lambda: shadow_of(shadow) == "1")
    await reloader.stop()


class ShadowUnreachable(FakeSource):
    """The champion resolves; the shadow alias look-up fails once ``flaky`` is set."""

    flaky = False
    shadow_lookups = 0

    def resolve_alias(self, alias: str) -> VersionRef:
        if alias == SHADOW_ALIAS:
            self.shadow_lookups += 1
            if self.flaky:
                raise ModelLoadError("registry timed out")
        return super().resolve_alias(alias)


async def test_an_unreachable_registry_keeps_the_shadow() -> None:
    source = ShadowUnreachable(alias_version="2", shadow_version="1")
    reloader, holder, shadow, _ = make(source)
    await reloader.start()
    await until(lambda: shadow_of(shadow) == "1")
    source.flaky, lookups = True, source.shadow_lookups
    reloader.request_alias_check()
    await until(lambda: source.shadow_lookups == lookups + 1)
    assert shadow_of(shadow) == "1" and served(holder) == "2"
    await reloader.stop()


# --- through the app: the answer is the champion's, the event carries both -----------------


@pytest.fixture
def watched(settings: ModelApiSettings) -> Iterator[AppHarness]:
    """A replica serving version 2 with version 1 as its shadow."""
    source = FakeSource(alias_version="2", shadow_version="1")
    producer = RecordingProducer()
    metrics = Metrics(settings.replica_id)
    app = create_app(
        settings,
        source=source,
        producer_factory=lambda: producer,
        consumer_factory=None,
        metrics=metrics,
        label_redis=FakeLabelRedis(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_for(lambda: client.get("/model").json().get("shadow_model_version") == "1")
        yield AppHarness(client, source, producer, metrics, FakeLabelRedis())


def test_the_client_gets_the_champion_and_the_event_carries_the_shadow(
    watched: AppHarness,
) -> None:
    answer = watched.post("/predict", json=EXAMPLE_FEATURES).json()
    assert answer["model_version"] == "2"
    assert answer["median_house_value"] == pytest.approx(expected_usd(EXAMPLE_FEATURES, 2.0))
    assert "shadow" not in str(answer)
    rows = [EXAMPLE_FEATURES, {**EXAMPLE_FEATURES, "median_income_in_block": 2.0}]
    batch = watched.post("/predict/batch", json={"rows": rows}).json()
    assert "shadow" not in str(batch)
    wait_for(lambda: len(watched.producer.topics(PREDICTIONS_TOPIC)) == 3, what="three events")
    events = [
        decode_event(PREDICTIONS_TOPIC, v) for v in watched.producer.topics(PREDICTIONS_TOPIC)
    ]
    assert all(e.model_version == "2" and e.shadow_model_version == "1" for e in events)
    by_id = {e.request_id: e for e in events}
    single = by_id[answer["request_id"]]
    assert single.prediction == answer["median_house_value"]
    assert single.shadow_prediction == pytest.approx(expected_usd(EXAMPLE_FEATURES, 1.0))
    for row, p in zip(rows, batch["predictions"], strict=True):
        assert by_id[p["request_id"]].shadow_prediction == pytest.approx(expected_usd(row, 1.0))
    assert watched.metrics.value("driftloop_shadow_predictions_total") == 3


def test_model_info_shows_no_shadow_outside_a_watch(harness: AppHarness) -> None:
    assert harness.client.get("/model").json()["shadow_model_version"] is None
    harness.post("/predict", json=EXAMPLE_FEATURES)
    wait_for(lambda: len(harness.producer.topics(PREDICTIONS_TOPIC)) == 1, what="one event")
    only = decode_event(PREDICTIONS_TOPIC, harness.producer.topics(PREDICTIONS_TOPIC)[0])
    assert only.shadow_model_version is None and only.shadow_prediction is None


def test_shadow_disabled_never_loads_it(settings: ModelApiSettings) -> None:
    source = FakeSource(alias_version="2", shadow_version="1")
    app = create_app(
        settings.model_copy(update={"shadow_enabled": False}),
        source=source,
        producer_factory=RecordingProducer,
        consumer_factory=None,
        label_redis=FakeLabelRedis(),
    )
    with TestClient(app) as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200)
        assert client.get("/model").json()["shadow_model_version"] is None
    assert source.loads == ["2"]


async def test_a_linger_gathers_rows_submitted_meanwhile_into_one_call() -> None:
    shadow, out, metrics = stage(linger_s=0.05)
    shadow.set(loaded("1"))
    shadow.submit(event("a"), ROW)
    for _ in range(3):  # later turns of the loop, within the linger
        await asyncio.sleep(0)
    shadow.submit(event("b"), ROW)
    await shadow.drain()
    assert [e.request_id for e in out] == ["a", "b"]
    assert metrics.value("driftloop_shadow_call_seconds_count") == 1
