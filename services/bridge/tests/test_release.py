"""Giving up on a trigger releases its claim: exactly its incident and cooldown keys go.

Without the release an alert whose trigger was dead-lettered (Airflow down past the retry age,
or a 4xx) would be answered ``duplicate`` for as long as it fires, and every other incident
for its DAG ``cooldown`` for the window: the loop would never retrain for it. Real Redis (the
Lua scripts run as in production), a fake clock and a fake Airflow.
"""

from __future__ import annotations

from typing import Any

from driftloop_bridge.dedupe import Deduper
from driftloop_bridge.metrics import BridgeMetrics
from driftloop_bridge.retry_queue import Attempt, PendingTrigger, Release, RetryQueue
from driftloop_bridge.store import RedisKeys
from driftloop_service import Backoff

KEYS = RedisKeys("rel")
COOLDOWN_S = 600.0


class Parts:
    """A deduper and a queue sharing one key space, as in the app; finals as the hook saw them."""

    def __init__(self, redis: Any, trigger: Any, clock: Any, *, max_age: float) -> None:
        self.redis = redis
        self.clock = clock
        self.metrics = BridgeMetrics()
        self.finals: list[tuple[str, Attempt]] = []
        self.deduper = Deduper(
            redis, KEYS, clock=clock, cooldown_seconds=COOLDOWN_S, incident_ttl_seconds=7200
        )
        self.queue = RetryQueue(
            redis,
            KEYS,
            trigger,
            clock=clock,
            backoff=Backoff(1.0, 30.0),
            max_age_seconds=max_age,
            poll_seconds=0.05,
            call_timeout_seconds=1.0,
            on_final=self._on_final,
            metrics=self.metrics,
        )

    async def _on_final(self, item: PendingTrigger, attempt: Attempt) -> None:
        self.finals.append((item.dag_run_id, attempt))

    async def claim(self, run_id: str, dag_id: str) -> str:
        item = PendingTrigger(
            dag_id=dag_id,
            dag_run_id=run_id,
            conf={"k": "v"},
            source="alertmanager",
            alertname="DriftFeatureHigh",
            fingerprint=run_id,
            rule="r",
            first_seen=self.clock(),
        )
        return (await self.deduper.claim(item, first_attempt_at=self.clock())).kind

    async def work_until_final(self, run_id: str, limit: int = 2000) -> Attempt:
        """Run the worker, a second of fake time per idle round, until ``run_id`` is final."""
        seen = len(self.finals)
        for _ in range(limit):
            for done, attempt in self.finals[seen:]:
                if done == run_id:
                    return attempt
            if not await self.queue.process_due():
                self.clock.advance(1)
        raise AssertionError(f"{run_id} never reached a final outcome")

    async def claim_keys(self) -> dict[bytes, bytes]:
        """Every incident and cooldown key with its value."""
        found: dict[bytes, bytes] = {}
        for pattern in (KEYS.incident("*"), KEYS.cooldown("*")):
            async for key in self.redis.scan_iter(match=pattern):
                found[key] = await self.redis.get(key)
        return found

    def released(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "driftloop_bridge_released_total", {"reason": reason}
        )
        return value or 0.0


def _without(keys: dict[bytes, bytes], *names: str) -> dict[bytes, bytes]:
    gone = {n.encode() for n in names}
    assert gone <= set(keys), f"{gone - set(keys)} were not there to begin with"
    return {k: v for k, v in keys.items() if k not in gone}


async def test_dead_letter_by_age_clears_exactly_its_own_keys(redis, clock, fake_trigger) -> None:
    parts = Parts(redis, fake_trigger, clock, max_age=10)
    # another DAG's incident that Airflow accepted: its keys must stay
    assert await parts.claim("run-done", "dag-3") == "accepted"
    assert (await parts.work_until_final("run-done")).outcome == "created"
    fake_trigger.mode = "down"
    assert await parts.claim("run-a", "dag-1") == "accepted"
    clock.advance(6)
    # another DAG's incident still pending when run-a gives up: its keys must stay too
    assert await parts.claim("run-b", "dag-2") == "accepted"
    before = await parts.claim_keys()

    attempt = await parts.work_until_final("run-a")

    assert attempt.outcome == "dead_letter"
    assert attempt.release == Release("max_age", ("incident", "cooldown"))
    assert await parts.claim_keys() == _without(
        before, KEYS.incident("run-a"), KEYS.cooldown("dag-1")
    )
    assert [p.dag_run_id for p in await parts.queue.pending()] == ["run-b"]
    (dead,) = await parts.queue.dead_letters()
    assert dead.dag_run_id == "run-a" and dead.extra["release_reason"] == "max_age"
    assert parts.released("max_age") == 1 and parts.released("rejected") == 0

    # the same alert, still firing, triggers again once Airflow is back
    fake_trigger.mode = "ok"
    assert await parts.claim("run-a", "dag-1") == "accepted"
    assert (await parts.work_until_final("run-a")).outcome == "created"
    assert "run-a" in fake_trigger.runs


async def test_dead_letter_by_rejection_clears_exactly_its_own_keys(
    redis, clock, fake_trigger
) -> None:
    parts = Parts(redis, fake_trigger, clock, max_age=300)
    assert await parts.claim("run-done", "dag-3") == "accepted"
    assert (await parts.work_until_final("run-done")).outcome == "created"
    fake_trigger.mode = "down"
    assert await parts.claim("run-b", "dag-2") == "accepted"
    fake_trigger.mode = "reject"
    assert await parts.claim("run-a", "dag-1") == "accepted"
    before = await parts.claim_keys()
    (item,) = [p for p in await parts.queue.pending() if p.dag_run_id == "run-a"]

    attempt = await parts.queue.attempt(item)

    assert attempt.outcome == "dead_letter"
    assert attempt.release == Release("rejected", ("incident", "cooldown"))
    assert await parts.claim_keys() == _without(
        before, KEYS.incident("run-a"), KEYS.cooldown("dag-1")
    )
    assert [p.dag_run_id for p in await parts.queue.pending()] == ["run-b"]
    assert parts.released("rejected") == 1 and parts.released("max_age") == 0
    # the same incident is no longer a duplicate, nor is its DAG cooling down
    assert await parts.claim("run-a", "dag-1") == "accepted"
    assert await parts.claim("run-c", "dag-1") == "cooldown"


async def test_a_cooldown_window_another_incident_holds_is_left_alone(
    redis, clock, fake_trigger
) -> None:
    fake_trigger.mode = "down"
    parts = Parts(redis, fake_trigger, clock, max_age=COOLDOWN_S + 300)
    assert await parts.claim("run-a", "dag-1") == "accepted"
    clock.advance(COOLDOWN_S + 1)
    # run-a's window closed: a second incident of the same DAG takes the window over
    assert await parts.claim("run-d", "dag-1") == "accepted"
    before = await parts.claim_keys()
    assert before[KEYS.cooldown("dag-1").encode()].endswith(b"|run-d")

    attempt = await parts.work_until_final("run-a")

    assert attempt.release == Release("max_age", ("incident",))
    assert await parts.claim_keys() == _without(before, KEYS.incident("run-a"))
    assert [p.dag_run_id for p in await parts.queue.pending()] == ["run-d"]
    assert await parts.claim("run-e", "dag-1") == "cooldown"


# --- through the webhook: the decisions, the metric, and the same alert firing again -----------
def _released_total(harness: Any, reason: str) -> float:
    value = harness.bridge.metrics.registry.get_sample_value(
        "driftloop_bridge_released_total", {"reason": reason}
    )
    return value or 0.0


async def _claim_keys(redis: Any) -> list[bytes]:
    """The app's incident and cooldown keys (default prefix)."""
    app_keys = RedisKeys()
    found = [k async for k in redis.scan_iter(match=app_keys.incident("*"))]
    found += [k async for k in redis.scan_iter(match=app_keys.cooldown("*"))]
    return sorted(found)


async def test_rejected_webhook_trigger_is_released_and_fires_again(
    harness, payload, fake_trigger
) -> None:
    fake_trigger.mode = "reject"
    raw = payload("grafana_firing.json")
    (decision,) = (await harness.post("grafana", raw)).json()["decisions"]
    assert decision["decision"] == "dead_letter"
    assert await _claim_keys(harness.bridge.redis) == []
    released, dead = (await harness.http.get("/decisions", params={"limit": 2})).json()["decisions"]
    assert dead["decision"] == "dead_letter"
    assert released["decision"] == "released" and released["via"] == "webhook"
    assert released["outcome"] == "rejected"
    assert released["dag_run_id"] == decision["dag_run_id"]
    assert "cleared the incident key and cooldown key" in released["reason"]
    assert _released_total(harness, "rejected") == 1
    metrics = (await harness.http.get("/metrics")).text
    assert 'driftloop_bridge_released_total{reason="rejected"} 1.0' in metrics

    fake_trigger.mode = "ok"
    (again,) = (await harness.post("grafana", raw)).json()["decisions"]
    assert again["decision"] == "triggered" and again["outcome"] == "created"
    assert again["dag_run_id"] == decision["dag_run_id"]
    assert list(fake_trigger.runs) == [decision["dag_run_id"]]


async def test_trigger_past_the_retry_age_is_released_and_fires_again(
    harness, payload, fake_trigger, clock
) -> None:
    fake_trigger.mode = "down"
    raw = payload("grafana_firing.json")
    (decision,) = (await harness.post("grafana", raw)).json()["decisions"]
    assert decision["decision"] == "queued"
    queue = harness.bridge.queue
    # the retry age of the test settings is 300 s
    for _ in range(2000):
        if (await queue.counts())[1]:
            break
        if not await queue.process_due():
            clock.advance(1)
    assert await queue.counts() == (0, 1)
    assert await _claim_keys(harness.bridge.redis) == []
    released, dead = (await harness.http.get("/decisions", params={"limit": 2})).json()["decisions"]
    assert dead["decision"] == "dead_letter" and dead["via"] == "retry"
    assert released["decision"] == "released" and released["via"] == "retry"
    assert released["outcome"] == "max_age"
    assert "max age passed" in released["reason"]
    assert _released_total(harness, "max_age") == 1

    # still firing: Alertmanager/Grafana re-send the same alert, Airflow is back
    fake_trigger.mode = "ok"
    (again,) = (await harness.post("grafana", raw)).json()["decisions"]
    assert again["decision"] == "triggered" and again["outcome"] == "created"
    assert again["dag_run_id"] == decision["dag_run_id"]
    (same,) = (await harness.post("grafana", raw)).json()["decisions"]
    assert same["decision"] == "duplicate"
