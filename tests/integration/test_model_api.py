"""The model API against the real local stack: Tansu, Redis, MLflow, nginx, two replicas.

What each test proves is in its docstring. Tests that disturb the stack (a new champion, the
broker stopped, a replica killed) put it back before they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftloop_cli import observe
from driftloop_contracts import (
    API_KEY_HEADER,
    EXAMPLE_FEATURES,
    FEATURE_NAMES,
    FEEDBACK_TOPIC,
    MODEL_NAME,
    PREDICTIONS_TOPIC,
    FeedbackApiKeySettings,
    ModelPromoted,
    PredictionEvent,
    decode_event,
)

pytestmark = pytest.mark.integration

#: A label producer's headers (the local default key, or the environment's).
PRODUCER = {API_KEY_HEADER: FeedbackApiKeySettings().producer_key}

RELOAD_DEADLINE_S = 15.0


# --- helpers ----------------------------------------------------------------------------------


def jittered_row(rng: random.Random) -> dict[str, float]:
    """A valid row that is (almost surely) new, so the cache does not answer it."""
    row = dict(EXAMPLE_FEATURES)
    row["median_income_in_block"] = round(rng.uniform(1.0, 12.0), 6)
    row["block_latitude"] = round(rng.uniform(33.0, 41.0), 5)
    row["block_longitude"] = round(rng.uniform(-123.5, -115.0), 5)
    return row


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric_sum(urls: list[str], name: str, **labels: str) -> float:
    total = 0.0
    for url in urls:
        for (sample_name, sample_labels), value in scrape(url).items():
            if sample_name == name and set(labels.items()) <= set(sample_labels):
                total += value
    return total


def wait_until(
    predicate: Any, timeout_s: float, what: str, show: Callable[[], object] | None = None
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took. At the deadline the failure
    names ``what`` and, if given, what ``show()`` sees then (e.g. every replica's state)."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            seen = f" (seen: {show()!r})" if show is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{seen}")
        time.sleep(0.1)


def served_versions(urls: list[str]) -> list[str | None]:
    versions: list[str | None] = []
    for url in urls:
        try:
            versions.append(httpx.get(f"{url}/model", timeout=2).json().get("model_version"))
        except (httpx.HTTPError, ValueError):
            versions.append(None)
    return versions


async def find_events(
    bootstrap: str, request_ids: set[str], timeout_s: float = 30.0
) -> dict[str, PredictionEvent]:
    """Read ``predictions`` from the start (no group: nothing committed) until all ids appear."""
    from aiokafka import AIOKafkaConsumer

    found: dict[str, PredictionEvent] = {}
    consumer = AIOKafkaConsumer(
        PREDICTIONS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not request_ids <= found.keys():
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    key = (record.key or b"").decode()
                    if key in request_ids:
                        found[key] = decode_event(PREDICTIONS_TOPIC, record.value)
    finally:
        await consumer.stop()
    return found


def events_for(
    bootstrap: str, request_ids: set[str], timeout_s: float = 30.0
) -> dict[str, PredictionEvent]:
    return asyncio.run(find_events(bootstrap, request_ids, timeout_s))


def champion_prediction_usd(mlflow_url: str, version: str, row: dict[str, float]) -> float:
    import pandas as pd

    from driftloop_training import registry
    from driftloop_training.train import predict_usd

    model = registry.load_model(mlflow_url, version)
    frame = pd.DataFrame([[row[n] for n in FEATURE_NAMES]], columns=list(FEATURE_NAMES))
    return float(predict_usd(model, frame)[0])


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failed(self) -> int:
        return self.total - self.statuses.get(200, 0)

    def record(self, status: int | None, version: str | None, error: str | None) -> None:
        with self.lock:
            if status is not None:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if version is not None:
                self.versions[version] = self.versions.get(version, 0) + 1
            if error is not None:
                self.errors.append(error)


@contextlib.contextmanager
def background_load(
    url: str, concurrency: int = 4, max_requests: int = 20_000
) -> Iterator[LoadResult]:
    """Closed-loop load through ``url`` (threads) while the ``with`` body acts on the stack;
    bounded in count, and it runs 1 s before and after the body."""
    result = LoadResult()
    stop = threading.Event()
    budget = iter(range(max_requests))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as client:
            while not stop.is_set() and next(budget, None) is not None:
                try:
                    response = client.post(f"{url}/predict", json=jittered_row(rng))
                except httpx.HTTPError as exc:
                    result.record(None, None, f"{type(exc).__name__}: {exc}")
                    continue
                ok = response.status_code == 200
                result.record(
                    response.status_code,
                    response.json()["model_version"] if ok else None,
                    None if ok else f"{response.status_code}: {response.text[:200]}",
                )

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        yield result
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def new_champion(stack: Any, seed: int) -> str:
    """Train a small new version, move the alias to it and announce it (like the DAG does)."""
    from driftloop_training.bootstrap import bootstrap
    from driftloop_training.train import ModelParams

    result = bootstrap(
        stack.training_settings(),
        force=True,
        sample_rows=2_000,
        params=ModelParams(max_iter=30, random_state=seed),
    )
    announce(stack, result.version, result.run_id, "integration test promotion")
    return str(result.version)


def announce(stack: Any, version: str, run_id: str, reason: str) -> None:
    from driftloop_training.publisher import publish_model_promoted

    publish_model_promoted(
        stack.kafka_bootstrap,
        ModelPromoted(model_name=MODEL_NAME, version=version, run_id=run_id, reason=reason),
    )


@pytest.fixture
def restore_champion(stack: Any, champion: str, retraining_held: None) -> Iterator[str]:
    """Yields the champion before the test; afterwards puts the alias back and waits for it.
    Retraining is held meanwhile: the test, not a run its model changes trigger, moves the
    champion."""
    from driftloop_training import registry

    before = registry.get_champion(stack.mlflow_url)
    assert before is not None
    yield before.version
    registry.set_champion(stack.mlflow_url, before.version)
    announce(stack, before.version, before.run_id, "integration test restores the champion")
    wait_until(
        lambda: set(served_versions(stack.model_api_urls)) == {before.version},
        RELOAD_DEADLINE_S * 2,
        f"replicas back on version {before.version}",
    )


def wait_serving(stack: Any) -> None:
    """Every replica serving and nginx routing to them again (a replica that was just restarted
    stays out of nginx's rotation for up to fail_timeout)."""
    wait_until(
        lambda: all(v is not None for v in served_versions(stack.model_api_urls)),
        120,
        "every replica to load the champion",
    )

    def nginx_ok() -> bool:
        try:
            return (
                httpx.post(
                    f"{stack.nginx_url}/predict", json=EXAMPLE_FEATURES, timeout=5
                ).status_code
                == 200
            )
        except httpx.HTTPError:
            return False

    rounds = 2 * len(stack.model_api_urls)
    wait_until(lambda: all(nginx_ok() for _ in range(rounds)), 60, "nginx to route to the replicas")


@pytest.fixture
def ready_stack(stack: Any, champion: str) -> Any:
    """The stack with every replica serving and nginx routing to them (:func:`wait_serving`)."""
    wait_serving(stack)
    return stack


# --- tests ------------------------------------------------------------------------------------


def test_prediction_through_nginx_equals_champion_output_and_emits_event(
    ready_stack: Any,
) -> None:
    """nginx -> replica -> model gives exactly what the registered model gives for that row,
    and the prediction event with the same request_id and schema reaches ``predictions``."""
    stack = ready_stack
    row = jittered_row(random.Random(11))
    response = httpx.post(f"{stack.nginx_url}/predict", json=row, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    request_id = body["request_id"]  # issued by nginx
    assert response.headers["x-request-id"] == request_id and body["model_name"] == MODEL_NAME
    expected = champion_prediction_usd(stack.mlflow_url, body["model_version"], row)
    assert body["median_house_value"] == pytest.approx(expected, rel=1e-9)

    events = events_for(stack.kafka_bootstrap, {request_id})
    assert request_id in events, "prediction event did not arrive"
    event = events[request_id]
    assert event.schema_version == 1
    assert event.model_version == body["model_version"]
    assert event.prediction == pytest.approx(body["median_house_value"])
    assert event.features == pytest.approx(row)
    assert event.replica_id.startswith("replica-")


BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    (
        "missing",
        json.dumps({k: v for k, v in EXAMPLE_FEATURES.items() if k != "average_rooms"}).encode(),
        422,
        "average_rooms",
    ),
    (
        "text",
        json.dumps({**EXAMPLE_FEATURES, "average_rooms": "six"}).encode(),
        422,
        "average_rooms",
    ),
    (
        "string_number",
        json.dumps({**EXAMPLE_FEATURES, "block_latitude": "37.9"}).encode(),
        422,
        "block_latitude",
    ),
    (
        "bool",
        json.dumps({**EXAMPLE_FEATURES, "average_bedrooms": True}).encode(),
        422,
        "average_bedrooms",
    ),
    (
        "null",
        json.dumps({**EXAMPLE_FEATURES, "average_bedrooms": None}).encode(),
        422,
        "average_bedrooms",
    ),
    (
        "nan",
        json.dumps({**EXAMPLE_FEATURES, "population_per_block": 1.5})
        .encode()
        .replace(b"1.5", b"NaN"),
        422,
        "population_per_block",
    ),
    (
        "infinity",
        json.dumps({**EXAMPLE_FEATURES, "population_per_block": 1.5})
        .encode()
        .replace(b"1.5", b"Infinity"),
        422,
        "population_per_block",
    ),
    (
        "minus_infinity",
        json.dumps({**EXAMPLE_FEATURES, "block_longitude": -1.5})
        .encode()
        .replace(b"-1.5", b"-Infinity"),
        422,
        "block_longitude",
    ),
    (
        "negative_rooms",
        json.dumps({**EXAMPLE_FEATURES, "average_rooms": -2}).encode(),
        422,
        "average_rooms",
    ),
    (
        "latitude_north_of_california",
        json.dumps({**EXAMPLE_FEATURES, "block_latitude": 47.6}).encode(),
        422,
        "block_latitude",
    ),
    (
        "longitude_east_of_california",
        json.dumps({**EXAMPLE_FEATURES, "block_longitude": -100.0}).encode(),
        422,
        "block_longitude",
    ),
    (
        "negative_income",
        json.dumps({**EXAMPLE_FEATURES, "median_income_in_block": -1}).encode(),
        422,
        "median_income_in_block",
    ),
    ("extra_field", json.dumps({**EXAMPLE_FEATURES, "pool": 1}).encode(), 422, "pool"),
    ("empty", b"", 422, "body"),
    ("malformed", b'{"average_rooms": 5,,}', 422, "body"),
    ("array", b"[]", 422, "body"),
    ("oversized", b'{"x": "' + b"a" * 2_000_000 + b'"}', 413, "body"),
]


def test_bad_inputs_through_nginx_are_4xx_naming_the_field_and_emit_nothing(
    ready_stack: Any,
) -> None:
    """At least 15 kinds of bad input, sent through nginx: each a 4xx naming the field, and
    none of their request ids ever appears on ``predictions`` (a good request sent after them
    does, which shows the topic was read far enough)."""
    stack = ready_stack
    assert len(BAD_BODIES) >= 15
    ids: set[str] = set()
    with httpx.Client(timeout=10) as client:
        for name, raw, status, field_name in BAD_BODIES:
            response = client.post(
                f"{stack.nginx_url}/predict",
                content=raw,
                headers={"content-type": "application/json"},
            )
            assert response.status_code == status, (name, response.status_code, response.text)
            assert field_name in response.json()["message"], (name, response.text)
            assert set(response.json()) == {"error", "message", "detail"}, response.text
            ids.add(response.headers["x-request-id"])  # nginx names its id on every answer
        ok = client.post(f"{stack.nginx_url}/predict", json=EXAMPLE_FEATURES)
        assert ok.status_code == 200
        sentinel = ok.json()["request_id"]
    assert len(ids) == len(BAD_BODIES)
    events = events_for(stack.kafka_bootstrap, ids | {sentinel}, timeout_s=15)
    assert sentinel in events
    assert not (ids & events.keys()), f"bad requests produced events: {ids & events.keys()}"


def test_reload_under_load_has_no_failed_request(
    ready_stack: Any,
    restore_champion: str,
) -> None:
    """Promote a new version and publish ModelPromoted while requests stream through nginx:
    no request fails, and every replica serves the new version within seconds."""
    stack = ready_stack
    with background_load(stack.nginx_url) as load:
        version = new_champion(stack, 101)
        took = wait_until(
            lambda: set(served_versions(stack.model_api_urls)) == {version},
            RELOAD_DEADLINE_S,
            f"every replica on version {version}",
        )
    assert load.failed == 0, load.errors[:5]
    assert load.total > 50
    assert version in load.versions and restore_champion in load.versions, load.versions
    assert took < RELOAD_DEADLINE_S
    print(
        f"reload: {load.total} requests, 0 failed, new version on every replica {took:.1f}s "
        "after ModelPromoted"
    )


def test_cache_hit_then_recompute_after_promotion(
    ready_stack: Any,
    restore_champion: str,
) -> None:
    """The same features twice on one replica: the second is a hit of its in-process cache (its
    event says so). After a promotion the same features are recomputed by the new version."""
    stack = ready_stack
    url = stack.model_api_urls[0]
    row = jittered_row(random.Random(uuid.uuid4().int))
    first = httpx.post(f"{url}/predict", json=row).json()
    second = httpx.post(f"{url}/predict", json=row).json()
    assert second["median_house_value"] == first["median_house_value"]

    version = new_champion(stack, 202)
    wait_until(
        lambda: served_versions([url]) == [version],
        RELOAD_DEADLINE_S,
        f"replica on version {version}",
    )
    third = httpx.post(f"{url}/predict", json=row).json()
    assert third["model_version"] == version
    expected = champion_prediction_usd(stack.mlflow_url, version, row)
    assert third["median_house_value"] == pytest.approx(expected, rel=1e-9)
    assert third["median_house_value"] != first["median_house_value"]

    ids = [answer["request_id"] for answer in (first, second, third)]  # minted by the replica
    events = events_for(stack.kafka_bootstrap, set(ids))
    assert [events[i].cache_hit for i in ids] == [False, True, False]


def test_broker_outage_keeps_serving_and_delivers_the_buffer(ready_stack: Any) -> None:
    """Kafka stopped: predictions still succeed, none waiting on the broker, while events pile
    up in the buffers. Kafka back (topics recreated): every event of
    the outage is on ``predictions`` (0 missing), and on each replica published + dropped (+ still
    buffered) equals the predictions it served, read from one scrape (other traffic may be
    flowing, so a few requests may sit between publishing their event and being counted)."""
    from driftloop_cli.kafka_broker import ensure_topics

    stack = ready_stack
    urls = stack.model_api_urls
    rng = random.Random(5)

    def timed_requests(n: int) -> tuple[list[float], list[str]]:
        latencies, ids = [], []
        with httpx.Client(timeout=10) as client:
            for _ in range(n):
                started = time.perf_counter()
                response = client.post(f"{stack.nginx_url}/predict", json=jittered_row(rng))
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                ids.append(response.json()["request_id"])
        return latencies, ids

    def p95(values: list[float]) -> float:
        return sorted(values)[int(0.95 * (len(values) - 1))]

    def balance(url: str) -> float:
        """events accepted - predictions served, from one scrape (0 when quiet)."""
        sample = scrape(url)

        def get(name: str, **labels: str) -> float:
            return sum(
                v for (n, ls), v in sample.items() if n == name and set(labels.items()) <= ls
            )

        accepted = (
            get("driftloop_events_published_total", topic=PREDICTIONS_TOPIC)
            + get("driftloop_events_dropped_total", topic=PREDICTIONS_TOPIC)
            + get("driftloop_events_buffered", topic=PREDICTIONS_TOPIC)
        )
        return accepted - get("driftloop_http_requests_total", route="/predict", status="200")

    baseline, _ = timed_requests(150)
    # Earlier tests' batch predictions publish one event per row for one request: the balance
    # this test checks is the change from here on, not the replicas' lifetime totals.
    wait_until(lambda: metric_sum(urls, "driftloop_events_buffered") == 0, 30, "buffers empty")
    balance0 = {url: balance(url) for url in urls}
    dropped0 = metric_sum(urls, "driftloop_events_dropped_total", topic=PREDICTIONS_TOPIC)
    stack.stop("kafka")
    try:
        outage, outage_ids = timed_requests(300)
        print(f"outage: p95 {p95(outage) * 1000:.1f} ms vs {p95(baseline) * 1000:.1f} ms before")
        # A request that waited on the broker would take the publisher's ack timeout (2 s) or
        # the producer's request timeout (5 s); the latency figures themselves are measured by
        # bench/bench_serving.py, not asserted here (they depend on the machine's load).
        assert max(outage) < 1.0, f"a request waited on the stopped broker: {max(outage):.2f}s"
        assert metric_sum(urls, "driftloop_events_buffered") > 0
    finally:
        stack.start("kafka")
        asyncio.run(ensure_topics(stack.kafka_bootstrap))
    events = events_for(stack.kafka_bootstrap, set(outage_ids), timeout_s=90)
    dropped = metric_sum(urls, "driftloop_events_dropped_total", topic=PREDICTIONS_TOPIC) - dropped0
    missing = set(outage_ids) - events.keys()
    assert dropped == 0  # 300 events are far below the buffer size
    assert not missing, (
        f"{len(missing)} of {len(outage_ids)} outage events missing: {sorted(missing)[:10]}"
    )
    for url in urls:
        wait_until(
            lambda url=url: 0 <= balance(url) - balance0[url] <= 16,
            30,
            f"published + dropped + buffered == served on {url}",
        )


def test_mlflow_outage_keeps_serving_and_the_promotion_lands_when_it_returns(
    ready_stack: Any, restore_champion: str
) -> None:
    """MLflow stopped for real (``supervisorctl stop mlflow``) under load: every request is
    answered by the model the replicas hold, a promotion announced meanwhile cannot be read
    and is counted on every replica (``driftloop_model_alias_check_failures_total``, which
    ``RegistryUnreachable`` watches); MLflow back, a promotion reaches every replica, 0 failed
    requests end to end."""
    stack = ready_stack
    urls = stack.model_api_urls
    name = "driftloop_model_alias_check_failures_total"

    def per_replica() -> list[float]:
        return [metric_sum([u], name) for u in urls]

    before = per_replica()
    mlflow_stopped = False
    try:
        with background_load(stack.nginx_url) as load:
            stack.stop("mlflow")
            mlflow_stopped = True
            # A promotion announced while the registry is down: the event is only a hint, the
            # alias decides, and the alias cannot be read.
            announce(stack, "999999", "run-unreadable", "mlflow outage test")
            wait_until(
                lambda: all(a > b for a, b in zip(per_replica(), before, strict=True)),
                RELOAD_DEADLINE_S * 2,
                "every replica to count a failed alias read",
            )
            assert set(served_versions(urls)) == {restore_champion}
            for url in urls:
                assert httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, url
            during = load.total
            stack.start("mlflow")
            mlflow_stopped = False
            stack.wait_healthy("mlflow")
            version = new_champion(stack, 303)
            wait_until(
                lambda: set(served_versions(urls)) == {version},
                RELOAD_DEADLINE_S * 2,
                f"every replica on version {version} once MLflow is back",
            )
    finally:
        if mlflow_stopped:
            stack.start("mlflow")
            stack.wait_healthy("mlflow")
    assert load.failed == 0, load.errors[:5]
    assert during > 20, "too little traffic during the outage to prove anything"
    assert version in load.versions and restore_champion in load.versions, load.versions
    print(
        f"mlflow outage: {load.total} requests ({during} before MLflow returned), 0 failed; "
        f"failed alias reads per replica "
        f"{[a - b for a, b in zip(per_replica(), before, strict=True)]}"
    )


@dataclass
class AnsweredTraffic:
    """Predictions through nginx, each answered one followed by its feedback; the request ids
    the stack issued are kept so their events can be looked up on the topics."""

    prefix: str
    answered: dict[str, set[str]] = field(
        default_factory=lambda: {PREDICTIONS_TOPIC: set(), FEEDBACK_TOPIC: set()}
    )
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, topic: str = PREDICTIONS_TOPIC) -> int:
        with self.lock:
            return len(self.answered[topic])

    def worker(self, url: str, seed: int, stop: threading.Event) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                correlation = f"{self.prefix}-{seed}-{i}"
                try:
                    r = client.post(
                        "/predict",
                        json=jittered_row(rng),
                        headers={"X-Correlation-ID": correlation},
                    )
                    if r.status_code != 200:
                        self._failed(f"predict {r.status_code}: {r.text[:200]}")
                        continue
                    answer = r.json()
                    request_id = answer["request_id"]  # issued by the stack, not by us
                    self._answered(PREDICTIONS_TOPIC, request_id)
                    label = {
                        "request_id": request_id,
                        "actual": 2e5,
                        "feedback_token": answer["feedback_token"],
                    }
                    f = client.post("/feedback", json=label, headers=PRODUCER)
                    if f.status_code != 202:
                        self._failed(f"feedback {f.status_code}: {f.text[:200]}")
                        continue
                    self._answered(FEEDBACK_TOPIC, request_id)
                except httpx.HTTPError as exc:
                    self._failed(f"{type(exc).__name__}: {exc}")

    def _answered(self, topic: str, request_id: str) -> None:
        with self.lock:
            self.answered[topic].add(request_id)

    def _failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


@contextlib.contextmanager
def answered_traffic(url: str, concurrency: int) -> Iterator[AnsweredTraffic]:
    traffic = AnsweredTraffic(f"kill-{uuid.uuid4().hex[:10]}")
    stop = threading.Event()
    threads = [
        threading.Thread(target=traffic.worker, args=(url, seed, stop), daemon=True)
        for seed in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        yield traffic
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


async def keys_on_topic(bootstrap: str, topic: str, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` are keys on ``topic``: read from the start up to the end offsets
    taken now (a group-less reader written for the test, not the replica's own search)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: set[str] = set()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        idle_since = time.monotonic()
        while todo and time.monotonic() - idle_since < 10:
            batches = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                idle_since = time.monotonic()
                found.update(k for r in records if (k := (r.key or b"").decode()) in wanted)
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        assert not todo, f"could not read {topic} to its end: {sorted(map(str, todo))}"
    finally:
        await consumer.stop()
    return found


def drift_consumed(stack: Any) -> dict[str, float]:
    """``driftloop_events_consumed_total`` of the drift consumer, per data topic."""
    return {
        t: metric_sum([stack.drift_consumer_url], "driftloop_events_consumed_total", topic=t)
        for t in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC)
    }


def replica_counter(url: str, name: str, topic: str) -> float | None:
    """One replica's series for ``topic`` (None while it does not answer)."""
    try:
        return metric_sum([url], name, topic=topic)
    except httpx.HTTPError:
        return None


@pytest.fixture
def no_watch(ready_stack: Any) -> Any:
    """No post-promotion watch running: earlier tests (the e2e's promotions) leave alias
    ``shadow`` for 30 minutes. Held shadow events are in the ledger (counted if a SIGKILL loses
    them: services/model_api/tests/test_shadow.py); this test measures the path without a
    watch, whatever earlier tests left, so that its event counts are of predictions alone."""
    from driftloop_training import registry

    registry.end_watch(ready_stack.mlflow_url)
    wait_until(
        lambda: all(
            shadow is None for _, shadow in observe.replica_watch_states(ready_stack.model_api_urls)
        ),
        90,
        "every replica without a shadow",
    )
    return ready_stack


def kill_replica_under_load(
    stack: Any, replica: int, how: str
) -> dict[str, tuple[int, int, float]]:
    """Kill replica ``replica`` with signal ``how`` while predictions and their feedback stream
    through nginx, and check what the test below states; returns (answered, consumed, counted
    lost) per topic. Used by the 4-replica stack's test too (test_four_replicas.py)."""
    from driftloop_cli import stack as stack_ops
    from driftloop_model_api.settings import ModelApiSettings

    victim, victim_url = f"model-api-{replica}", stack.model_api_urls[replica]
    topics = (PREDICTIONS_TOPIC, FEEDBACK_TOPIC)
    lost_name = "driftloop_events_lost_total"
    lost_before = {t: replica_counter(victim_url, lost_name, t) for t in topics}
    pid = next(s.pid for s in stack_ops.status(stack.settings) if s.name == victim)
    assert pid and None not in lost_before.values()
    consumed_before = drift_consumed(stack)

    with answered_traffic(stack.nginx_url, concurrency=6) as traffic:
        wait_until(lambda: traffic.count() >= 300, 60, "traffic on every replica")
        at_kill = traffic.count()
        os.kill(pid, getattr(signal, how))
        wait_until(lambda: traffic.count() >= at_kill + 300, 60, "traffic after the kill")
    assert traffic.failures == [], traffic.failures[:5]

    def restarted() -> bool:
        st = next(s for s in stack_ops.status(stack.settings) if s.name == victim)
        return bool(st.healthy and st.pid and st.pid != pid)

    wait_until(restarted, 300, f"{victim} restarted by the supervisor")
    wait_until(
        lambda: all(
            replica_counter(victim_url, "driftloop_events_unreconciled", t) == 0 for t in topics
        ),
        60,
        "the restarted replica to search the topics for what its predecessor left",
    )
    lost = {
        t: (replica_counter(victim_url, lost_name, t) or 0) - (lost_before[t] or 0) for t in topics
    }

    answered = traffic.answered
    consumed = {
        t: asyncio.run(keys_on_topic(stack.kafka_bootstrap, t, answered[t])) for t in topics
    }
    # The drift consumer read them: its count of records read grew by at least as many (more
    # only for duplicates: an event re-sent after a lost ack, or published by both replicas).
    wait_until(
        lambda: all(
            drift_consumed(stack)[t] - consumed_before[t] >= len(consumed[t]) for t in topics
        ),
        90,
        "the drift consumer to read every event found on the topics",
    )
    missing = {t: answered[t] - consumed[t] for t in topics}
    defaults = {name: f.default for name, f in ModelApiSettings.model_fields.items()}
    buffers = {  # at most what the killed replica held: its buffers and the shadow's events
        PREDICTIONS_TOPIC: defaults["publish_buffer_size"] + defaults["shadow_max_pending"],
        FEEDBACK_TOPIC: defaults["publish_feedback_buffer_size"],
    }
    figures = {t: (len(answered[t]), len(consumed[t]), lost[t]) for t in topics}
    print(f"{how}: (answered, consumed, counted lost) per topic {figures}")
    for t in topics:
        assert len(answered[t]) - len(consumed[t]) - lost[t] == 0, (
            t,
            figures,
            sorted(missing[t])[:10],
        )
        assert lost[t] <= buffers[t]
        if how == "SIGTERM":
            assert lost[t] == 0 and not missing[t], (t, figures)
    wait_until(
        lambda: all(v is not None for v in served_versions(stack.model_api_urls)),
        120,
        "the restarted replica to load the champion",
    )
    return figures


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_replica_killed_under_load_fails_no_request_and_counts_every_lost_event(
    no_watch: Any, how: str
) -> None:
    """Kill one replica while predictions and their feedback stream through nginx.

    Requests: nginx retries what the dead replica did not answer on the other one (connect
    errors, resets, 502/503), so none fails, prediction or feedback.

    Events: every request id answered 200/202 is looked up on its topic (consumed = found
    there), and the real drift consumer must have read at least that many records of each.
    What is answered but not there must be exactly what the restarted replica counted in
    ``driftloop_events_lost_total{reason="process_killed"}`` (from the ledger its killed
    predecessor left), and at most the topic's buffer: answered - consumed - lost == 0.
    SIGTERM drains the buffers, so there it is 0 of everything."""
    kill_replica_under_load(no_watch, 1, how)


# --- shadow during the post-promotion watch (docs/retraining.md, "Shadow during the watch") ----


def sample_through_nginx(
    stack: Any, seed: int, n: int = 40
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """``n`` fresh rows through nginx: answers and rows by request id (every one answered)."""
    rng = random.Random(seed)
    answers: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, float]] = {}
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            row = jittered_row(rng)
            response = client.post(f"{stack.nginx_url}/predict", json=row)
            assert response.status_code == 200, response.text
            body = response.json()
            answers[body["request_id"]] = body
            rows[body["request_id"]] = row
    return answers, rows


def model_usd(stack: Any, version: str, rows: list[dict[str, float]]) -> list[float]:
    """What registered ``version`` predicts for ``rows``, loaded outside the replicas."""
    import pandas as pd

    from driftloop_training import registry
    from driftloop_training.train import predict_usd

    model = registry.load_model(stack.mlflow_url, version)
    frame = pd.DataFrame([[r[n] for n in FEATURE_NAMES] for r in rows], columns=FEATURE_NAMES)
    return [float(v) for v in predict_usd(model, frame)]


def test_shadow_predicts_every_request_during_the_watch_and_rollback_fails_nothing(
    ready_stack: Any, restore_champion: str
) -> None:
    """The watch as the DAG starts it (tag, alias ``shadow`` on the old champion, ``champion``
    on the new, ModelPromoted): every replica keeps the old version as its shadow, answers with
    the new one only, and every event through nginx carries the old version and exactly what
    the old model predicts for those features. Removing the alias (watch kept, no event) stops
    it at the replicas' next alias check; a rollback (champion back, alias removed, announced)
    switches every replica with 0 failed requests, and events stop carrying a shadow."""
    from driftloop_training import registry
    from driftloop_training.bootstrap import bootstrap
    from driftloop_training.train import ModelParams

    stack, old = ready_stack, restore_champion
    urls, uri = stack.model_api_urls, stack.mlflow_url
    training = stack.training_settings()
    new = bootstrap(
        training, force=True, sample_rows=2_000, params=ModelParams(max_iter=30, random_state=7)
    )
    registry.set_champion(uri, old)  # bootstrap moved it; the DAG's decide step moves it below
    old_run = registry.get_version(uri, old).run_id
    try:
        # 1. The watch starts: the replaced champion becomes every replica's shadow.
        with background_load(stack.nginx_url) as load:
            registry.promote(uri, new.version, previous=old, watch_s=600)
            announce(stack, new.version, new.run_id, "integration test: promotion with a watch")
            took = wait_until(
                lambda: set(observe.replica_watch_states(urls)) == {(new.version, old)},
                RELOAD_DEADLINE_S,
                f"every replica on {new.version} with shadow {old}",
                show=lambda: observe.replica_watch_states(urls),
            )
        assert load.failed == 0, load.errors[:5]
        answers, rows = sample_through_nginx(stack, seed=21)
        events = events_for(stack.kafka_bootstrap, set(answers))
        assert events.keys() == answers.keys()
        ids = sorted(answers)
        expected = model_usd(stack, old, [rows[i] for i in ids])
        for request_id, shadow_usd in zip(ids, expected, strict=True):
            event, answer = events[request_id], answers[request_id]
            assert answer["model_version"] == event.model_version == new.version
            assert "shadow_model_version" not in answer
            assert event.prediction == answer["median_house_value"]
            assert event.shadow_model_version == old
            assert event.shadow_prediction == pytest.approx(shadow_usd, rel=1e-9)
        assert metric_sum(urls, "driftloop_shadow_loaded") == len(urls)
        assert metric_sum(urls, "driftloop_shadow_predictions_total") >= len(answers)
        print(f"watch: shadow on every replica {took:.1f}s after ModelPromoted, {load.total} req")

        # 2. The watch is kept: the alias goes, no event; the periodic alias check drops it.
        # A check the registry does not answer keeps the shadow until the next one, so allow
        # three check periods (two left no slack: it timed out once in CI under load).
        from driftloop_model_api.settings import ModelApiSettings

        period = ModelApiSettings.model_fields["alias_check_interval_seconds"].default
        registry.end_watch(uri)
        took = wait_until(
            lambda: set(observe.replica_watch_states(urls)) == {(new.version, None)},
            3 * period,
            "every replica to drop the shadow",
            show=lambda: (observe.replica_watch_states(urls), registry.get_champion(uri)),
        )
        answers, _ = sample_through_nginx(stack, seed=22, n=10)
        events = events_for(stack.kafka_bootstrap, set(answers))
        assert all(e.shadow_model_version is None for e in events.values())
        assert all(e.shadow_prediction is None for e in events.values())
        print(f"watch kept: shadow dropped by every replica {took:.1f}s after the alias went")

        # 3. A watch again (the shadow loaded from the registry this time), then a rollback.
        registry.promote(uri, new.version, previous=old, watch_s=600)
        announce(stack, new.version, new.run_id, "integration test: watch again")
        wait_until(
            lambda: set(observe.replica_watch_states(urls)) == {(new.version, old)},
            RELOAD_DEADLINE_S,
            f"every replica to load shadow {old}",
            show=lambda: observe.replica_watch_states(urls),
        )
        with background_load(stack.nginx_url) as load:
            registry.set_champion(uri, old)
            registry.end_watch(uri)
            announce(stack, old, old_run, "rollback: integration test")
            took = wait_until(
                lambda: set(observe.replica_watch_states(urls)) == {(old, None)},
                RELOAD_DEADLINE_S,
                f"every replica back on {old} without a shadow",
                show=lambda: observe.replica_watch_states(urls),
            )
        assert load.failed == 0, load.errors[:5]
        assert old in load.versions and new.version in load.versions, load.versions
        answers, _ = sample_through_nginx(stack, seed=23, n=10)
        events = events_for(stack.kafka_bootstrap, set(answers))
        assert {e.model_version for e in events.values()} == {old}
        assert all(e.shadow_model_version is None for e in events.values())
        print(
            f"rollback: every replica on {old} {took:.1f}s after the event, {load.total} req, 0 failed"
        )
    finally:
        registry.end_watch(uri)
