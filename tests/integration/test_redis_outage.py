"""Redis stopped for real (``supervisorctl stop redis``) while the loop is busy, then started.

One outage, three users of Redis, each checked by its own test (the module fixture
:func:`outage` stops Redis, drives traffic through every path, records what it saw while Redis
was down, and starts Redis again):

* **Replicas** (predictions): every request through nginx succeeds; the prediction cache is in
  the process (model_api ``cache.py``), so no look-up fails (``driftloop_cache_requests_total
  {result="error"}`` stays put) and it answers during the outage as before (hits counted).
* **Label producers** (``POST /feedback``): a replica cannot record "first label wins" without
  Redis, so it answers 503 ``label_store_unavailable`` with ``Retry-After`` and publishes nothing;
  the producer re-sends once Redis is back and every label is then accepted exactly once.
* **Drift consumer** (feedback join): it stops consuming, retries the join store (counted in
  ``driftloop_sink_failures_total{sink="redis"}`` / ``driftloop_retries_total``) and reports
  ``not_ready`` with the reason; once Redis is back every prediction is counted once and every
  feedback event becomes exactly one row of the labelled-data log.
* **Bridge** (dedupe and durable queue): webhooks get 503 with the documented error body, counted;
  a *real* Alertmanager keeps re-sending, and once Redis is back exactly one DAG run exists per
  incident. The bridge is a process of our own (like tests/integration/test_bridge.py: its own
  key prefix and token, rules whose conf makes the DAG skip at ``collect``, so no retraining runs).

The stack is shared, so the counts compare deltas of each component's own counters and the
test's own request ids. It needs a quiet stack (no other traffic while it runs), as every test
in this suite that counts events does. Durations and counts are printed for the docs' table.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest
import redis
import yaml

from driftloop_cli.observe import ObservationError, metric_total, scrape_metrics
from driftloop_contracts import (
    API_KEY_HEADER,
    DAG_ID,
    EXAMPLE_FEATURES,
    FEEDBACK_TOPIC,
    HOST,
    PREDICTIONS_TOPIC,
    FeedbackApiKeySettings,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BRIDGE_FIXTURE = (
    REPO / "services" / "bridge" / "tests" / "fixtures" / ("alertmanager_0_25_firing_captured.json")
)
DEFAULT_RULES = REPO / "services" / "bridge" / "rules.yaml"
#: Far above any labelled data: the DAG's ``collect`` skips the run (see airflow/dags).
SKIP_TRAINING = {"min_labelled_rows": 1_000_000_000}
#: Predictions (each with its feedback) sent through nginx while Redis is down.
OUTAGE_REQUESTS = 300
#: Direct webhook posts while Redis is down (Alertmanager's own deliveries come on top).
OUTAGE_WEBHOOKS = 5
DEADLINE_S = 180.0
PRODUCER = {API_KEY_HEADER: FeedbackApiKeySettings().producer_key}
STORE_UNAVAILABLE_BODY = {
    "error": "store_unavailable",
    "message": "state store (Redis) unavailable; retry later",
    "detail": [],
}


def poll(what: str, check: Callable[[], T | None], timeout_s: float = DEADLINE_S) -> T:
    """``check()`` until it returns something truthy; fail naming ``what`` at the deadline.
    A component coming back may refuse connections for a while: that is "not yet"."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.TransportError, ObservationError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what} (last: {last!r})"
            )
        time.sleep(0.25)


def status_of(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


# --- our own bridge and Alertmanager --------------------------------------------------------


class Process:
    """A child process with its log in the test's tmp dir; stopped with SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.log_path.name} exited: {self.log_path.read_text()[-2000:]}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Bridge:
    url: str
    token: str
    prefix: str
    process: Process

    def post(self, payload: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.url}/webhooks/alertmanager",
            content=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def decisions(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/decisions", params={"limit": 500}, timeout=10).json()[
            "decisions"
        ]

    def metric(self, name: str, **labels: str) -> float:
        return metric_total(scrape_metrics([self.url]), name, **labels)


def start_bridge(stack: Any, tmp: Path, port: int) -> Bridge:
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    for rule in doc["rules"]:
        rule["conf"] = {**rule["conf"], **SKIP_TRAINING}
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc))
    token = secrets.token_urlsafe(24)
    prefix = f"driftloop:bridge-redis-it:{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_BRIDGE_")},
        "DRIFTLOOP_BRIDGE_HOST": HOST,
        "DRIFTLOOP_BRIDGE_PORT": str(port),
        "DRIFTLOOP_BRIDGE_REDIS_URL": stack.redis_url,
        "DRIFTLOOP_BRIDGE_REDIS_PREFIX": prefix,
        "DRIFTLOOP_BRIDGE_AIRFLOW_URL": stack.airflow_url,
        "DRIFTLOOP_BRIDGE_AIRFLOW_USERNAME": stack.airflow_username,
        "DRIFTLOOP_BRIDGE_AIRFLOW_PASSWORD": stack.airflow_password,
        "DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN": token,
        "DRIFTLOOP_BRIDGE_RULES_FILE": str(rules),
        "DRIFTLOOP_BRIDGE_COOLDOWN_SECONDS": "0",
        "DRIFTLOOP_BRIDGE_BRAKE_MAX_TRIGGERS": "0",  # every copy is a test incident
        "DRIFTLOOP_BRIDGE_RETRY_INITIAL_SECONDS": "0.5",
        "DRIFTLOOP_BRIDGE_RETRY_MAX_BACKOFF_SECONDS": "2",
        "DRIFTLOOP_BRIDGE_LOG_FORMAT": "json",
    }
    process = Process([sys.executable, "-m", "driftloop_bridge"], env, tmp / "bridge.log")
    bridge = Bridge(f"http://{HOST}:{port}", token, prefix, process)

    def ready() -> bool:
        process.check_alive()
        return status_of(f"{bridge.url}/health/ready") == 200

    poll("our bridge ready", ready, 60)
    return bridge


def start_alertmanager(bridge: Bridge, tmp: Path, port: int) -> tuple[str, Process]:
    """Debian's prometheus-alertmanager delivering to ``bridge`` (re-sends every second)."""
    binary = "/usr/bin/prometheus-alertmanager"
    config = {
        "route": {
            "receiver": "bridge",
            "group_by": ["alertname", "feature"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "bridge",
                "webhook_configs": [
                    {
                        "url": f"{bridge.url}/webhooks/alertmanager",
                        "send_resolved": False,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": bridge.token}
                        },
                    }
                ],
            }
        ],
    }
    (tmp / "am.yml").write_text(yaml.safe_dump(config))
    process = Process(
        [
            binary,
            f"--config.file={tmp / 'am.yml'}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
        ],
        dict(os.environ),
        tmp / "alertmanager.log",
    )
    url = f"http://{HOST}:{port}"

    def ready() -> bool:
        process.check_alive()
        return status_of(f"{url}/-/ready") == 200

    poll("our alertmanager ready", ready, 60)
    return url, process


def dag_runs_for(stack: Any, fingerprint: str) -> list[str]:
    """Run ids of every DAG run whose conf carries this alert fingerprint (newest 200 runs)."""
    token = (
        httpx.post(
            f"{stack.airflow_url}/auth/token",
            json={"username": stack.airflow_username, "password": stack.airflow_password},
            timeout=30,
        )
        .raise_for_status()
        .json()["access_token"]
    )
    r = httpx.get(
        f"{stack.airflow_url}/api/v2/dags/{DAG_ID}/dagRuns",
        params={"limit": 200, "order_by": "-run_after"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    r.raise_for_status()
    return [
        run["dag_run_id"]
        for run in r.json()["dag_runs"]
        if (run.get("conf") or {}).get("fingerprint") == fingerprint
    ]


# --- the outage -----------------------------------------------------------------------------


@dataclass
class Outage:
    """What the fixture did and saw; the tests poll for recovery and assert on it."""

    stack: Any
    sfx: str
    bridge: Bridge
    #: Counters of each component before anything was sent.
    before: dict[str, float]
    #: /predict answered 200 by this module (outage and recovery checks alike).
    predictions_ok: int = 0
    feedback_ok: int = 0
    failed: list[str] = field(default_factory=list)
    outage_ids: list[str] = field(default_factory=list)
    #: Labels of the outage's predictions: request id -> actual (sent until accepted).
    labels: dict[str, float] = field(default_factory=dict)
    #: /feedback answers with 503 while Redis was down (the producer re-sends them).
    labels_deferred: int = 0
    outage_s: float = 0.0
    during: dict[str, Any] = field(default_factory=dict)
    direct_webhooks: list[httpx.Response] = field(default_factory=list)
    direct_payload: dict[str, Any] = field(default_factory=dict)
    am_url: str = ""
    am_feature: str = ""

    def predict(
        self, client: httpx.Client, url: str, row: dict[str, float], correlation: str
    ) -> dict[str, Any] | None:
        """The answer (with the request id the stack issued and its feedback token), or
        ``None`` with the failure recorded."""
        try:
            r = client.post(f"{url}/predict", json=row, headers={"X-Correlation-ID": correlation})
        except httpx.HTTPError as exc:
            self.failed.append(f"predict {correlation}: {type(exc).__name__}: {exc}")
            return None
        if r.status_code != 200:
            self.failed.append(f"predict {correlation}: {r.status_code} {r.text[:200]}")
            return None
        self.predictions_ok += 1
        answer: dict[str, Any] = r.json()
        return answer

    def feedback(self, client: httpx.Client, answer: dict[str, Any], actual: float) -> int:
        """Posts the label through nginx; the status code (0 on a transport error)."""
        body = {
            "request_id": answer["request_id"],
            "actual": actual,
            "feedback_token": answer["feedback_token"],
        }
        try:
            r = client.post(f"{self.stack.nginx_url}/feedback", json=body, headers=PRODUCER)
        except httpx.HTTPError:
            return 0
        if r.status_code == 202:
            self.feedback_ok += 1
        elif r.status_code == 503:
            assert r.json()["error"] == "label_store_unavailable", r.text
            assert r.headers.get("Retry-After"), r.headers
        else:
            self.failed.append(f"feedback {answer['request_id']}: {r.status_code} {r.text[:200]}")
        return r.status_code


def settled_counters(stack: Any) -> dict[str, float] | None:
    """The counters once nothing is buffered and the consumer's totals stood still for 2 s."""
    first = counters(stack)
    if first["buffered"]:
        return None
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        again = counters(stack)
        if (again["consumed"], again["feedback_consumed"]) != (
            first["consumed"],
            first["feedback_consumed"],
        ):
            return None
    return first


def counters(stack: Any) -> dict[str, float]:
    """The counters the tests compare, summed over replicas."""
    replicas = scrape_metrics(stack.model_api_urls)
    consumer = scrape_metrics([stack.drift_consumer_url])
    return {
        "served": metric_total(
            replicas, "driftloop_http_requests_total", route="/predict", status="200"
        ),
        "published": metric_total(
            replicas, "driftloop_events_published_total", topic=PREDICTIONS_TOPIC
        ),
        "feedback_published": metric_total(
            replicas, "driftloop_events_published_total", topic=FEEDBACK_TOPIC
        ),
        "buffered": metric_total(replicas, "driftloop_events_buffered"),
        "cache_error": metric_total(replicas, "driftloop_cache_requests_total", result="error"),
        "cache_hit": metric_total(replicas, "driftloop_cache_requests_total", result="hit"),
        "consumed": metric_total(
            consumer, "driftloop_events_consumed_total", topic=PREDICTIONS_TOPIC
        ),
        "feedback_consumed": metric_total(
            consumer, "driftloop_events_consumed_total", topic=FEEDBACK_TOPIC
        ),
        "unmatched": metric_total(
            consumer, "driftloop_events_invalid_total", reason="unmatched_feedback"
        ),
        "sink_failures": metric_total(consumer, "driftloop_sink_failures_total", sink="redis"),
        "sink_retries": metric_total(consumer, "driftloop_retries_total", operation="sink_redis"),
        "labelled_rows": metric_total(consumer, "driftloop_labelled_rows_total"),
    }


def consumer_ready(stack: Any) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{stack.drift_consumer_url}/health/ready", timeout=5)
    return r.status_code, r.json()


def not_ready_for_redis(stack: Any) -> tuple[int, dict[str, Any]] | None:
    code, body = consumer_ready(stack)
    if code == 503 and any(p.startswith("sink redis failing") for p in body["problems"]):
        return code, body
    return None


def row(i: int, salt: int) -> dict[str, float]:
    """A valid row no other request of this run repeats (so the cache never answers it)."""
    out = dict(EXAMPLE_FEATURES)
    out["median_income_in_block"] = round(1.0 + (i % 1000) * 0.01, 4)
    out["block_latitude"] = round(33.0 + (salt % 7000) * 0.001, 4)
    out["average_rooms"] = round(3.0 + (i % 5000) * 0.001, 4)
    return out


def cache_hit_on(outage: Outage, client: httpx.Client, url: str, warm: dict[str, float]) -> bool:
    """One request for ``warm`` on replica ``url``: did its hit counter move?"""
    hits = metric_total(scrape_metrics([url]), "driftloop_cache_requests_total", result="hit")
    if not outage.predict(client, url, warm, f"redis-warm-{outage.sfx}-{uuid.uuid4().hex[:6]}"):
        raise AssertionError(f"a request failed: {outage.failed[-1]}")
    return (
        metric_total(scrape_metrics([url]), "driftloop_cache_requests_total", result="hit") > hits
    )


@pytest.fixture(scope="module")
def outage(
    stack: Any, champion: str, retrain_runs: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    tmp = tmp_path_factory.mktemp("redis-outage")
    sfx = uuid.uuid4().hex[:8]
    salt = int(sfx, 16)
    ports = iter(range(stack.ports.base + 200, stack.ports.base + 300))
    bridge = start_bridge(stack, tmp, next(ports))
    am_url, alertmanager = start_alertmanager(bridge, tmp, next(ports))
    redis_stopped = False
    try:
        # Preconditions: every replica serves the champion and the consumer is ready.
        poll(
            "every replica serving a model",
            lambda: all(
                httpx.get(f"{u}/model", timeout=5).json().get("model_version")
                for u in stack.model_api_urls
            ),
        )
        poll("the drift consumer ready", lambda: consumer_ready(stack)[0] == 200)
        # A run the stack's bridge triggered for an earlier test's alert would stand both of
        # this test's incidents down (run_active) instead of letting the first one trigger.
        retrain_runs.end_active("the Redis-outage test's incidents need the DAG idle")
        warm = row(4_999, salt)
        result = Outage(stack=stack, sfx=sfx, bridge=bridge, before=counters(stack))
        with httpx.Client(timeout=30) as client:
            for url in stack.model_api_urls:  # the cache works before the outage
                poll(f"a cache hit on {url}", partial(cache_hit_on, result, client, url, warm))
            # The previous module's last events may still be on their way to the consumer: the
            # counts start once it has taken everything published (its total stands still).
            result.before = poll("the consumer caught up", partial(settled_counters, stack), 120)
            result.predictions_ok = 0
            result.during["warm"] = warm

            stack.stop("redis")
            redis_stopped = True
            stopped_at = time.monotonic()
            assert not redis_answers(stack.redis_url)

            # Bridge: a real Alertmanager starts delivering an alert (and keeps re-sending it).
            result.am_url, result.am_feature = am_url, f"redis-it-{sfx}"
            labels = {"alertname": "DriftFeatureHigh", "feature": result.am_feature}
            r = httpx.post(f"{am_url}/api/v2/alerts", json=[{"labels": labels}], timeout=10)
            assert r.status_code == 200, r.text

            # Replicas and consumer: predictions through nginx; their labels are refused with
            # 503 (no "first label wins" without Redis) and kept to be re-sent.
            answers: list[tuple[dict[str, Any], float]] = []
            for i in range(OUTAGE_REQUESTS):
                answer = result.predict(client, stack.nginx_url, row(i, salt), f"out-{sfx}-{i}")
                if answer is not None:
                    result.outage_ids.append(answer["request_id"])
                    result.labels[answer["request_id"]] = 100_000.0 + i
                    answers.append((answer, 100_000.0 + i))
                    if result.feedback(client, answer, 100_000.0 + i) == 503:
                        result.labels_deferred += 1

            # Alertmanager's own deliveries are refused (it counts them failed) and counted by
            # the bridge; polled before any direct post, so the count is Alertmanager's alone.
            result.during["am_failed"] = poll(
                "Alertmanager's deliveries refused",
                lambda: metric_total(
                    scrape_metrics([am_url]),
                    "alertmanager_notification_requests_failed_total",
                    integration="webhook",
                ),
            )
            result.during["am_503"] = bridge.metric(
                "driftloop_bridge_decisions_total", source="alertmanager", decision="unavailable"
            )

            # Bridge: direct webhooks, as a sender retrying would post them.
            payload = copy.deepcopy(json.loads(BRIDGE_FIXTURE.read_text()))
            for alert in payload["alerts"]:
                alert["fingerprint"] = uuid.uuid4().hex[:16]
                alert["startsAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            result.direct_payload = payload
            result.direct_webhooks = [bridge.post(payload) for _ in range(OUTAGE_WEBHOOKS)]

            # What each component shows while Redis is down (each polled with a deadline).
            result.during["consumer_ready"] = poll(
                "the drift consumer not ready because of Redis",
                lambda: not_ready_for_redis(stack),
            )
            result.during["bridge_ready"] = status_of(f"{bridge.url}/health/ready")
            result.during["counters"] = counters(stack)
            result.during["bridge_redis_up"] = bridge.metric("driftloop_bridge_redis_up")
            result.during["bridge_worker_errors"] = poll(
                "the bridge's worker counting Redis errors",
                lambda: bridge.metric("driftloop_bridge_redis_errors_total", operation="worker"),
            )
            assert not redis_answers(stack.redis_url)  # all of the above was during the outage

            stack.start("redis")
            redis_stopped = False
            result.outage_s = time.monotonic() - stopped_at
            poll("Redis answering again", lambda: redis_answers(stack.redis_url), 60)

            # The label producer re-sends what was refused, as Retry-After tells it to.
            pending = list(answers)
            accepted_before = result.feedback_ok

            def resend() -> bool:
                pending[:] = [(a, v) for a, v in pending if result.feedback(client, a, v) != 202]
                return not pending

            poll("every deferred label accepted", resend, 120)
            result.during["labels_resent"] = result.feedback_ok - accepted_before
        yield result
    finally:
        if redis_stopped:
            stack.start("redis")
        alertmanager.stop()
        bridge.process.stop()
        # Its incidents' runs would wait minutes for rows of a regime that never comes.
        retrain_runs.end_active("the Redis-outage test is over")
        with redis.Redis.from_url(stack.redis_url) as client:
            keys = list(client.scan_iter(match=f"{bridge.prefix}:*", count=1000))
            if keys:
                client.delete(*keys)


# --- the tests ------------------------------------------------------------------------------


def test_replicas_kept_serving_and_their_cache_never_needed_redis(outage: Outage) -> None:
    """0 failed requests; no cache look-up failed (the cache is in process); a repeated row is
    still a hit on every replica."""
    stack = outage.stack
    assert outage.failed == [], outage.failed[:5]
    assert len(outage.outage_ids) == OUTAGE_REQUESTS
    # Labels need Redis ("first label wins"): every one sent during the outage was refused
    # with 503 and nothing published, then accepted once when re-sent.
    assert outage.labels_deferred == OUTAGE_REQUESTS
    assert outage.during["labels_resent"] == OUTAGE_REQUESTS
    during = outage.during["counters"]
    errors = during["cache_error"] - outage.before["cache_error"]
    assert errors == 0  # Redis is not on the prediction path
    assert during["cache_hit"] == outage.before["cache_hit"]  # no row of the outage repeats
    with httpx.Client(timeout=30) as client:
        for url in stack.model_api_urls:
            poll(
                f"a cache hit on {url}",
                partial(cache_hit_on, outage, client, url, outage.during["warm"]),
                60,
            )
    assert outage.failed == [], outage.failed[:5]
    print(
        f"redis outage {outage.outage_s:.1f}s: {OUTAGE_REQUESTS} predictions + feedback through "
        f"nginx, 0 failed; {errors:.0f} cache look-ups failed"
    )


def test_consumer_joins_every_label_once_after_redis_returns(outage: Outage) -> None:
    """The consumer retried (counted) and was not ready with the reason; afterwards each
    prediction was counted once and each feedback event is exactly one labelled row."""
    stack = outage.stack
    code, body = outage.during["consumer_ready"]
    assert code == 503 and body["status"] == "not_ready", body
    during = outage.during["counters"]
    assert during["sink_failures"] > outage.before["sink_failures"]
    assert during["sink_retries"] > outage.before["sink_retries"]

    poll("the drift consumer ready again", lambda: consumer_ready(stack)[0] == 200)
    ids = set(outage.outage_ids)

    def labelled() -> pd.DataFrame:
        files = sorted((stack.state_dir / "labelled").rglob("part-*.parquet"))
        frames = [pd.read_parquet(f, columns=["request_id", "actual"]) for f in files]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return rows[rows["request_id"].isin(ids)] if len(rows) else rows

    poll(f"{len(ids)} labelled rows of the outage", lambda: len(labelled()) >= len(ids))
    rows = labelled()
    assert sorted(rows["request_id"]) == sorted(ids)  # every label, each exactly once
    expected = outage.labels
    assert dict(zip(rows["request_id"], rows["actual"], strict=True)) == expected

    # Every prediction of this module (outage and cache checks) reached Kafka and was
    # consumed exactly once; the replicas served exactly those (no other traffic counted).
    served = outage.predictions_ok
    poll("the replicas' buffers empty", lambda: counters(stack)["buffered"] == 0, 60)
    now = poll(
        "the consumer to count every prediction",
        lambda: (
            c if (c := counters(stack))["consumed"] - outage.before["consumed"] >= served else None
        ),
    )
    delta = {k: now[k] - outage.before[k] for k in now}
    assert delta["served"] == served
    assert delta["published"] == served
    assert delta["consumed"] == served
    assert delta["feedback_published"] == outage.feedback_ok == OUTAGE_REQUESTS
    assert delta["feedback_consumed"] == OUTAGE_REQUESTS
    assert delta["unmatched"] == 0
    assert labelled()["request_id"].is_unique
    print(
        f"drift consumer: not ready during the outage ({body['problems'][0][:80]}...), "
        f"{delta['sink_failures']:.0f} join-store failures retried; afterwards "
        f"{delta['consumed']:.0f}/{served} predictions consumed once, {len(rows)}/"
        f"{OUTAGE_REQUESTS} labels joined once, 0 unmatched"
    )


def test_bridge_answered_503_then_one_dag_run_per_incident(outage: Outage) -> None:
    """503 + the documented body during the outage (counted, Alertmanager's too); when Redis
    is back the re-sent alerts are accepted and exactly one DAG run exists per incident."""
    stack, bridge = outage.stack, outage.bridge
    for r in outage.direct_webhooks:
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert r.json() == STORE_UNAVAILABLE_BODY
    assert outage.during["bridge_ready"] == 503
    assert outage.during["bridge_redis_up"] == 0
    assert outage.during["am_failed"] >= 1
    assert outage.during["am_503"] >= outage.during["am_failed"]
    assert outage.during["bridge_worker_errors"] >= 1
    refused = bridge.metric("driftloop_bridge_decisions_total", decision="unavailable")
    assert refused >= OUTAGE_WEBHOOKS + 1

    # The sender re-sends after the outage. Two incidents are open at once (this one and
    # Alertmanager's) and the bridge runs one DAG run at a time: whichever is decided first
    # triggers, the other is stood down (run_active, naming that run) while it runs. Triggered:
    # the re-sends are duplicates; stood down: each re-send is decided anew.
    answers = [bridge.post(outage.direct_payload) for _ in range(3)]
    assert [r.status_code for r in answers] == [202] * 3
    decided = [r.json()["decisions"][0]["decision"] for r in answers]
    assert decided in (
        ["triggered", "duplicate", "duplicate"],
        ["queued", "duplicate", "duplicate"],
        ["run_active"] * 3,
    ), decided
    direct_fp = outage.direct_payload["alerts"][0]["fingerprint"]

    (am_alert,) = httpx.get(
        f"{outage.am_url}/api/v2/alerts",
        params={"filter": f'feature="{outage.am_feature}"'},
        timeout=10,
    ).json()
    am_fp = am_alert["fingerprint"]

    def decisions_of(fp: str) -> list[dict[str, Any]]:
        return [
            d
            for d in bridge.decisions()
            if d["fingerprint"] == fp and d["decision"] in ("triggered", "queued", "run_active")
        ]

    def settled(fp: str) -> tuple[bool, list[str], list[dict[str, Any]]] | None:
        """(triggered, its runs, its decisions) once they agree: exactly one run of its own if
        it triggered, none if it was only stood down."""
        runs = dag_runs_for(stack, fp)
        ds = decisions_of(fp)
        triggered = any(d["decision"] in ("triggered", "queued") for d in ds)
        if ds and len(runs) == (1 if triggered else 0):
            return triggered, runs, ds
        assert len(runs) <= 1, f"incident {fp}: {len(runs)} DAG runs {runs}"
        return None

    poll("Alertmanager's re-sent alert decided", lambda: decisions_of(am_fp))
    outcomes = {
        fp: poll(f"incident {fp}'s decisions and DAG runs to agree", partial(settled, fp))
        for fp in (direct_fp, am_fp)
    }
    assert bridge.metric("driftloop_bridge_redis_up") == 1
    assert any(triggered for triggered, _, _ in outcomes.values()), outcomes
    for triggered, _, ds in outcomes.values():
        if not triggered:  # stood down, naming the run that was active: never one of its own
            named = [str(d["active_dag_run_id"]) for d in ds if d.get("active_dag_run_id")]
            assert all(run_id.startswith("alert__") for run_id in named), named
    print(
        f"bridge: {refused:.0f} webhooks answered 503 during the outage "
        f"({OUTAGE_WEBHOOKS} direct, the rest Alertmanager's re-sends); afterwards exactly 1 "
        "DAG run per incident that triggered, the other stood down while it ran"
    )
