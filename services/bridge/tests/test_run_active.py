"""One retrain per incident: no trigger while another run of the DAG is queued or running.

Real Redis, fake clock, fake Airflow whose active-run check answers ``fake_trigger.active``.
"""

from __future__ import annotations

from typing import Any

from driftloop_bridge.store import RedisKeys

ACTIVE = "alert__DriftFeatureHigh__20261123T120000__0123456789abcdef"
KEYS = RedisKeys()


def _settings(settings_factory: Any, **overrides: Any) -> Any:
    # A short cooldown: the measured failure was a cooldown expiring while the first run ran.
    return settings_factory(**{"cooldown_seconds": 120.0, "brake_max_triggers": 2, **overrides})


def _incident(payload: Any, n: int) -> dict[str, Any]:
    body = payload.json("grafana_firing.json")
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["fingerprint"] = f"{n:016x}"
    return body


async def _decide(h: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = await h.post("grafana", body)
    assert resp.status_code == 202, resp.text
    (decision,) = resp.json()["decisions"]
    return dict(decision)


def _sample(h: Any, name: str, labels: dict[str, str]) -> float:
    return h.bridge.metrics.registry.get_sample_value(name, labels) or 0.0


async def _brake_window(h: Any, token: str) -> int:
    resp = await h.http.get("/brake", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["triggers_in_window"])


async def test_active_run_means_no_trigger_and_a_run_active_decision(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        fake_trigger.active = [ACTIVE]
        decision = await _decide(h, _incident(payload, 1))
        assert decision["decision"] == "run_active"
        assert decision["active_dag_run_id"] == ACTIVE
        assert decision["outcome"] == "stood_down"
        assert ACTIVE in decision["reason"]
        assert fake_trigger.calls == []
        assert (
            _sample(
                h,
                "driftloop_bridge_decisions_total",
                {"source": "grafana", "decision": "run_active"},
            )
            == 1
        )
        assert _sample(h, "driftloop_bridge_triggers_total", {"outcome": "run_active"}) == 1
        trail = (await h.http.get("/decisions", params={"limit": 1})).json()["decisions"]
        assert trail[0]["decision"] == "run_active"
        assert trail[0]["active_dag_run_id"] == ACTIVE
        # the claim was released entirely: nothing pending, no incident, no cooldown, no brake count
        assert await h.bridge.queue.counts() == (0, 0)
        assert await redis.get(KEYS.incident(decision["dag_run_id"])) is None
        assert await redis.get(KEYS.cooldown(decision["dag_id"])) is None
        assert await _brake_window(h, token) == 0


async def test_cooldown_expiry_during_a_long_run_does_not_trigger_a_second_run(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    """The measured failure: the 120 s cooldown ran out while the first run still ran."""
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        first = await _decide(h, _incident(payload, 1))
        assert first["decision"] == "triggered"
        fake_trigger.active = [first["dag_run_id"]]  # Airflow: the run is still running
        clock.advance(121)
        second = await _decide(h, _incident(payload, 2))
        assert second["decision"] == "run_active"
        assert second["active_dag_run_id"] == first["dag_run_id"]
        assert len(fake_trigger.calls) == 1


async def test_still_firing_after_the_run_ended_is_decided_afresh(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    async with harness_factory(
        _settings(settings_factory, cooldown_seconds=0.0), redis, fake_trigger, clock
    ) as h:
        fake_trigger.active = [ACTIVE]
        assert (await _decide(h, _incident(payload, 1)))["decision"] == "run_active"
        fake_trigger.active = []
        again = await _decide(h, _incident(payload, 1))  # the same incident, re-notified
        assert again["decision"] == "triggered"
        assert [c[1] for c in fake_trigger.calls] == [again["dag_run_id"]]


async def test_re_notification_of_the_running_incident_is_a_duplicate(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        first = await _decide(h, _incident(payload, 1))
        fake_trigger.active = [first["dag_run_id"]]
        again = await _decide(h, _incident(payload, 1))
        assert again["decision"] == "duplicate"
        assert len(fake_trigger.calls) == 1


async def test_check_unavailable_queues_and_the_worker_checks_again(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    """Airflow cannot answer the check: the incident is kept (queued), never triggered blind."""
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        fake_trigger.check_down = True
        decision = await _decide(h, _incident(payload, 1))
        assert decision["decision"] == "queued"
        assert "active run" in decision["reason"]
        assert fake_trigger.calls == []
        assert await h.bridge.queue.counts() == (1, 0)

        # Airflow answers again, and a run (another incident's) is active: stood down
        fake_trigger.check_down = False
        fake_trigger.active = [ACTIVE]
        clock.advance(60)
        assert await h.bridge.queue.process_due() == 1
        assert fake_trigger.calls == []
        assert await h.bridge.queue.counts() == (0, 0)
        trail = (await h.http.get("/decisions", params={"limit": 1})).json()["decisions"]
        assert trail[0]["decision"] == "run_active"
        assert trail[0]["via"] == "retry"
        assert trail[0]["active_dag_run_id"] == ACTIVE
        assert await redis.get(KEYS.incident(decision["dag_run_id"])) is None


async def test_check_unavailable_then_no_active_run_triggers(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        fake_trigger.check_down = True
        decision = await _decide(h, _incident(payload, 1))
        assert decision["decision"] == "queued"
        fake_trigger.check_down = False
        clock.advance(60)
        assert await h.bridge.queue.process_due() == 1
        assert [c[1] for c in fake_trigger.calls] == [decision["dag_run_id"]]
        trail = (await h.http.get("/decisions", params={"limit": 1})).json()["decisions"]
        assert trail[0]["decision"] == "triggered"


async def test_stood_down_triggers_do_not_count_towards_the_brake(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(
        _settings(settings_factory, cooldown_seconds=0.0), redis, fake_trigger, clock
    ) as h:
        assert (await _decide(h, _incident(payload, 1)))["decision"] == "triggered"
        fake_trigger.active = [ACTIVE]
        for n in range(2, 6):
            assert (await _decide(h, _incident(payload, n)))["decision"] == "run_active"
        fake_trigger.active = []
        assert (await _decide(h, _incident(payload, 6)))["decision"] == "triggered"
        assert await _brake_window(h, token) == 2
        # and the brake still engages at the next one
        assert (await _decide(h, _incident(payload, 7)))["decision"] == "braked"
        assert len(fake_trigger.calls) == 2
