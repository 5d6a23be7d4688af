"""Deterministic run ids, duplicates and per-DAG cooldown, on real Redis with a fake clock."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from driftloop_bridge.dedupe import Deduper, dag_run_id_for
from driftloop_bridge.payloads import Alert
from driftloop_bridge.retry_queue import PendingTrigger
from driftloop_bridge.store import RedisKeys

AIRFLOW_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")
START = datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=UTC)


def _alert(fingerprint: str = "8c1f1b3c0f7b2a11", starts_at: datetime = START, **labels) -> Alert:
    return Alert(
        source="alertmanager",
        status="firing",
        labels={"alertname": "DriftFeatureHigh", **labels},
        annotations={},
        starts_at=starts_at,
        ends_at=None,
        fingerprint=fingerprint,
        group_key='{}:{alertname="DriftFeatureHigh"}',
    )


def _item(run_id: str, dag_id: str = "retrain", now: float = 0.0) -> PendingTrigger:
    return PendingTrigger(
        dag_id=dag_id,
        dag_run_id=run_id,
        conf={"k": "v"},
        source="alertmanager",
        alertname="DriftFeatureHigh",
        fingerprint="f",
        rule="r",
        first_seen=now,
    )


def test_run_id_is_deterministic_and_valid_for_airflow() -> None:
    a = dag_run_id_for("retrain-on-drift", _alert())
    assert a == dag_run_id_for("retrain-on-drift", _alert())
    assert AIRFLOW_RUN_ID.match(a), a
    assert a.startswith("alert__DriftFeatureHigh__20261123T123015__")
    assert len(a) < 250


def test_run_id_changes_with_rule_fingerprint_and_start() -> None:
    base = dag_run_id_for("r", _alert())
    assert dag_run_id_for("other", _alert()) != base
    assert dag_run_id_for("r", _alert(fingerprint="ffff")) != base
    assert dag_run_id_for("r", _alert(starts_at=START + timedelta(microseconds=1))) != base
    # the same instant written in another zone is the same incident
    same_instant = START.astimezone(timezone(timedelta(hours=2)))
    assert dag_run_id_for("r", _alert(starts_at=same_instant)) == base


def test_run_id_without_fingerprint_uses_group_key_and_labels() -> None:
    a = dag_run_id_for("r", _alert(fingerprint="", feature="a"))
    b = dag_run_id_for("r", _alert(fingerprint="", feature="b"))
    assert a != b
    assert a == dag_run_id_for("r", _alert(fingerprint="", feature="a"))


def test_odd_alert_names_are_slugged() -> None:
    alert = replace(_alert(), labels={"alertname": "Drift high / feature=x (psi)"})
    assert AIRFLOW_RUN_ID.match(dag_run_id_for("r", alert))


def _deduper(redis, clock, cooldown: float = 600.0) -> Deduper:
    return Deduper(
        redis, RedisKeys("t"), clock=clock, cooldown_seconds=cooldown, incident_ttl_seconds=3600
    )


async def test_first_claim_is_accepted_and_enqueued(redis, clock) -> None:
    claim = await _deduper(redis, clock).claim(_item("run-a"), first_attempt_at=clock() + 5)
    assert claim.kind == "accepted"
    keys = RedisKeys("t")
    assert await redis.zscore(keys.pending_schedule, "run-a") == (clock() + 5) * 1000
    assert await redis.hexists(keys.pending_items, "run-a")


async def test_same_incident_is_duplicate(redis, clock) -> None:
    dedupe = _deduper(redis, clock)
    assert (await dedupe.claim(_item("run-a"), first_attempt_at=0)).kind == "accepted"
    clock.advance(3600 * 5)  # even long after the cooldown window
    assert (await dedupe.claim(_item("run-a"), first_attempt_at=0)).kind == "duplicate"


async def test_distinct_incident_inside_window_is_cooldown_then_accepted_after(
    redis, clock
) -> None:
    dedupe = _deduper(redis, clock, cooldown=600)
    assert (await dedupe.claim(_item("run-a"), first_attempt_at=0)).kind == "accepted"
    clock.advance(599)
    claim = await dedupe.claim(_item("run-b"), first_attempt_at=0)
    assert claim.kind == "cooldown"
    assert claim.holder == "run-a"
    assert claim.until is not None and abs(claim.until - (clock() + 1)) < 1e-3
    # cooldown did not record run-b, and did not enqueue it
    assert not await redis.hexists(RedisKeys("t").pending_items, "run-b")
    clock.advance(2)
    assert (await dedupe.claim(_item("run-b"), first_attempt_at=0)).kind == "accepted"
    # and a third incident is now cooling down behind run-b
    assert (await dedupe.claim(_item("run-c"), first_attempt_at=0)).holder == "run-b"


async def test_cooldown_is_per_dag(redis, clock) -> None:
    dedupe = _deduper(redis, clock)
    assert (await dedupe.claim(_item("run-a", "dag-1"), first_attempt_at=0)).kind == "accepted"
    assert (await dedupe.claim(_item("run-b", "dag-2"), first_attempt_at=0)).kind == "accepted"


async def test_zero_cooldown_disables_the_window(redis, clock) -> None:
    dedupe = _deduper(redis, clock, cooldown=0)
    assert (await dedupe.claim(_item("run-a"), first_attempt_at=0)).kind == "accepted"
    assert (await dedupe.claim(_item("run-b"), first_attempt_at=0)).kind == "accepted"


async def test_concurrent_claims_of_one_incident_accept_exactly_one(redis, clock) -> None:
    dedupe = _deduper(redis, clock)
    claims = await asyncio.gather(
        *(dedupe.claim(_item("run-a"), first_attempt_at=0) for _ in range(100))
    )
    kinds = [c.kind for c in claims]
    assert kinds.count("accepted") == 1
    assert kinds.count("duplicate") == 99


async def test_concurrent_distinct_incidents_accept_exactly_one_per_dag(redis, clock) -> None:
    dedupe = _deduper(redis, clock)
    claims = await asyncio.gather(
        *(dedupe.claim(_item(f"run-{i}"), first_attempt_at=0) for i in range(50))
    )
    kinds = [c.kind for c in claims]
    assert kinds.count("accepted") == 1
    assert kinds.count("cooldown") == 49
