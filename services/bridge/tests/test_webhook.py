"""The webhook endpoints end to end inside the process: real Redis, fake Airflow, fake clock."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from driftloop_bridge.auth import sign
from driftloop_contracts import DAG_ID


def _count(harness: Any, source: str, decision: str) -> float:
    """The app's own counter (each app has its own registry)."""
    value = harness.bridge.metrics.registry.get_sample_value(
        "driftloop_bridge_decisions_total", {"source": source, "decision": decision}
    )
    return value or 0.0


def _problems(resp: httpx.Response) -> list[str]:
    """The error body's field problems as ``field: message`` lines."""
    body = resp.json()
    assert set(body) == {"error", "message", "detail"}, body
    return [f"{d['field']}: {d['message']}" for d in body["detail"]]


async def test_grafana_firing_triggers_once_with_conf(harness, payload, fake_trigger) -> None:
    resp = await harness.post("grafana", payload("grafana_firing.json"))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["source"] == "grafana" and body["alerts"] == 1
    (decision,) = body["decisions"]
    assert decision["decision"] == "triggered"
    assert decision["outcome"] == "created"
    assert decision["rule"] == "retrain-on-drift"
    (dag_id, run_id, conf) = fake_trigger.calls[0]
    assert dag_id == DAG_ID
    assert decision["dag_run_id"] == run_id
    assert conf["labels"]["feature"] == "prediction"
    assert conf["values"]["A"] == 0.3125


async def test_same_payload_100_times_concurrently_is_one_trigger(
    harness, payload, fake_trigger
) -> None:
    raw = payload("alertmanager_firing.json")
    first = await harness.post("alertmanager", raw)
    kinds = [d["decision"] for d in first.json()["decisions"]]
    # two features drifting in one group: one incident triggers, the other is storm-controlled
    assert kinds == ["triggered", "cooldown"]
    responses = await asyncio.gather(*(harness.post("alertmanager", raw) for _ in range(99)))
    assert {r.status_code for r in responses} == {202}
    repeated = [d["decision"] for r in responses for d in r.json()["decisions"]]
    assert repeated.count("duplicate") == 99
    assert repeated.count("cooldown") == 99
    assert len(fake_trigger.calls) == 1


async def test_resolved_is_recorded_not_triggered(harness, payload, fake_trigger) -> None:
    resp = await harness.post("alertmanager", payload("alertmanager_resolved.json"))
    assert resp.status_code == 202
    (decision,) = resp.json()["decisions"]
    assert decision["decision"] == "resolved"
    assert fake_trigger.calls == []
    recent = (await harness.http.get("/decisions", params={"limit": 5})).json()
    assert recent["decisions"][0]["decision"] == "resolved"


async def test_unrouted_alert_is_ignored_with_reason(harness, payload, fake_trigger) -> None:
    resp = await harness.post("grafana", payload("grafana_nodata.json"))
    assert resp.status_code == 202
    (decision,) = resp.json()["decisions"]
    assert decision["decision"] == "ignored"
    assert "alertname=DatasourceNoData" in decision["reason"]
    assert fake_trigger.calls == []


async def test_airflow_down_answers_queued_and_worker_finishes(
    harness, payload, fake_trigger, clock
) -> None:
    fake_trigger.mode = "down"
    resp = await harness.post("grafana", payload("grafana_firing.json"))
    (decision,) = resp.json()["decisions"]
    assert decision["decision"] == "queued" and decision["outcome"] == "pending"
    queue = harness.bridge.queue
    assert await queue.counts() == (1, 0)
    fake_trigger.mode = "ok"
    clock.advance(5)
    assert await queue.process_due() == 1
    assert await queue.counts() == (0, 0)
    latest = (await harness.http.get("/decisions", params={"limit": 1})).json()["decisions"][0]
    assert latest["decision"] == "triggered" and latest["via"] == "retry"
    assert latest["dag_run_id"] == decision["dag_run_id"]


async def test_rejected_trigger_is_dead_letter_and_listed(harness, payload, fake_trigger) -> None:
    fake_trigger.mode = "reject"
    resp = await harness.post("grafana", payload("grafana_firing.json"))
    (decision,) = resp.json()["decisions"]
    assert decision["decision"] == "dead_letter"
    dead = (await harness.http.get("/dead-letters")).json()
    assert dead["count"] == 1
    assert "bad conf" in dead["triggers"][0]["last_error"]


async def test_cooldown_then_after_window(harness, payload, clock, fake_trigger) -> None:
    first = payload.json("grafana_firing.json")
    assert (await harness.post("grafana", first)).json()["decisions"][0]["decision"] == "triggered"
    second = payload.json("grafana_firing.json")
    second["alerts"][0]["fingerprint"] = "0000000000000002"
    clock.advance(599)
    resp = (await harness.post("grafana", second)).json()["decisions"][0]
    assert resp["decision"] == "cooldown"
    clock.advance(2)
    resp = (await harness.post("grafana", second)).json()["decisions"][0]
    assert resp["decision"] == "triggered"
    assert len(fake_trigger.runs) == 2


async def test_bad_auth_is_401_and_writes_nothing(harness, payload, redis, fake_trigger) -> None:
    raw = payload("grafana_firing.json")
    before = _count(harness, "grafana", "unauthorized")
    for token in (None, "wrong-token", ""):
        resp = await harness.post("grafana", raw, token=token)
        assert resp.status_code == 401, resp.text
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"] == "unauthorized"
    assert _count(harness, "grafana", "unauthorized") == before + 3
    assert await redis.dbsize() == 0
    assert fake_trigger.calls == []


async def test_hmac_required_when_configured(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    settings = settings_factory(hmac_secret="grafana-hmac")
    raw = payload("grafana_firing.json")
    async with harness_factory(settings, redis, fake_trigger, clock) as h:
        ts = str(int(clock()))
        good = {
            "X-Grafana-Alert-Timestamp": ts,
            "X-Grafana-Alert-Signature": sign("grafana-hmac", raw, ts),
        }
        stale_ts = str(int(clock()) - 3600)
        stale = {
            "X-Grafana-Alert-Timestamp": stale_ts,
            "X-Grafana-Alert-Signature": sign("grafana-hmac", raw, stale_ts),
        }
        bad = {**good, "X-Grafana-Alert-Signature": sign("other", raw, ts)}
        for headers in ({}, bad, stale):
            resp = await h.post("grafana", raw, headers=headers)
            assert resp.status_code == 401, resp.text
        assert await redis.dbsize() == 0
        resp = await h.post("grafana", raw, headers=good)
        assert resp.status_code == 202
        # Alertmanager cannot sign: its endpoint needs only the bearer token
        resp = await h.post("alertmanager", payload("alertmanager_resolved.json"))
        assert resp.status_code == 202


async def test_malformed_bodies_are_422_naming_the_problem(harness, payload, redis) -> None:
    cases = {
        b"{not json": "body: not valid JSON",
        b'"a string"': "body: expected an object, got str",
        json.dumps({"version": "4", "status": "firing"}).encode(): "alerts: Field required",
    }
    for raw, problem in cases.items():
        resp = await harness.post("alertmanager", raw)
        assert resp.status_code == 422, resp.text
        assert problem in _problems(resp)
        assert resp.json()["error"] == "invalid_payload"
    body = payload.json("alertmanager_firing.json")
    body["alerts"][1]["startsAt"] = 12
    body["alerts"][0]["labels"] = ["alertname"]
    resp = await harness.post("alertmanager", body)
    assert resp.status_code == 422
    problems = _problems(resp)
    assert any(p.startswith("alerts.1.startsAt") for p in problems)
    assert any(p.startswith("alerts.0.labels") for p in problems)
    assert await redis.dbsize() == 0


async def test_oversize_body_is_413(harness) -> None:
    resp = await harness.post("alertmanager", b"{" + b" " * 2_000_000 + b"}")
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"
    assert resp.json()["detail"][0]["field"] == "body"


async def test_redis_down_is_503_not_500(
    settings_factory, harness_factory, fake_trigger, clock, payload
) -> None:
    from driftloop_bridge.store import make_redis

    dead = make_redis("unix:///nonexistent/redis.sock")
    async with harness_factory(settings_factory(), dead, fake_trigger, clock) as h:
        resp = await h.post("grafana", payload("grafana_firing.json"))
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "5"
        assert resp.json() == {
            "error": "store_unavailable",
            "message": "state store (Redis) unavailable; retry later",
            "detail": [],
        }
        registry = h.bridge.metrics.registry
        counted = {
            "driftloop_bridge_decisions_total": {"source": "grafana", "decision": "unavailable"},
            "driftloop_bridge_redis_errors_total": {"operation": "webhook"},
        }
        for name, labels in counted.items():
            assert registry.get_sample_value(name, labels) == 1, name
        assert registry.get_sample_value("driftloop_bridge_redis_up") == 0
        ready = await h.http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["problems"][0].startswith("redis unavailable")
        assert (await h.http.get("/health/live")).status_code == 200
    await dead.aclose()


async def test_health_metrics_and_decisions_limit(harness, payload) -> None:
    ready = await harness.http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"
    assert ready.json()["status"] == "ready" and ready.json()["problems"] == []
    await harness.post("grafana", payload("grafana_resolved.json"))
    await harness.post("grafana", payload("grafana_nodata.json"))
    decisions = (await harness.http.get("/decisions", params={"limit": 1})).json()
    assert decisions["count"] == 1
    assert (await harness.http.get("/decisions", params={"limit": 0})).status_code == 422
    metrics = (await harness.http.get("/metrics")).text
    for name in (
        "driftloop_bridge_decisions_total",
        "driftloop_bridge_triggers_total",
        "driftloop_bridge_pending_triggers",
        "driftloop_bridge_dead_letters",
        "driftloop_bridge_airflow_call_seconds",
    ):
        assert name in metrics
