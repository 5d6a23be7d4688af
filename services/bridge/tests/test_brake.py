"""The circuit breaker on real Redis with a fake clock and fake Airflow: N triggers per window,
then ``braked`` (no DAG run) until a person resets it or the hold expires."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from driftloop_bridge.auth import AuthConfig

WINDOW = 3600.0
HOLD = 6 * 3600.0


def _settings(settings_factory: Any, **overrides: Any) -> Any:
    values = {
        "cooldown_seconds": 0.0,  # every distinct incident would trigger: only the brake limits
        "brake_max_triggers": 2,
        "brake_window_seconds": WINDOW,
        "brake_hold_seconds": HOLD,
        **overrides,
    }
    return settings_factory(**values)


def _incident(payload: Any, n: int) -> dict[str, Any]:
    """The Grafana fixture as the ``n``-th distinct incident (its own fingerprint)."""
    body = payload.json("grafana_firing.json")
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["fingerprint"] = f"{n:016x}"
    return body


async def _decide(h: Any, body: dict[str, Any]) -> str:
    resp = await h.post("grafana", body)
    assert resp.status_code == 202, resp.text
    decisions = resp.json()["decisions"]
    assert len(decisions) == 1
    return str(decisions[0]["decision"])


def _sample(h: Any, name: str, labels: dict[str, str] | None = None) -> float:
    value = h.bridge.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def _braked(h: Any) -> float:
    return _sample(
        h, "driftloop_bridge_decisions_total", {"source": "grafana", "decision": "braked"}
    )


async def _state(h: Any, token: str) -> dict[str, Any]:
    resp = await h.http.get("/brake", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _reset(h: Any, token: str) -> dict[str, Any]:
    resp = await h.http.post("/brake/reset", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_n_pass_then_braked_without_a_trigger_call(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        assert _sample(h, "driftloop_bridge_brake_engaged") == 0
        assert await _decide(h, _incident(payload, 1)) == "triggered"
        clock.advance(60)
        assert await _decide(h, _incident(payload, 2)) == "triggered"
        clock.advance(60)
        assert await _decide(h, _incident(payload, 3)) == "braked"
        assert len(fake_trigger.calls) == 2
        assert _braked(h) == 1
        assert _sample(h, "driftloop_bridge_brake_engaged") == 1

        trail = (await h.http.get("/decisions")).json()["decisions"]
        assert trail[0]["decision"] == "braked"
        assert "reset-brake" in trail[0]["reason"]

        state = await _state(h, token)
        assert state["engaged"] is True
        assert state["triggers_in_window"] == 2
        assert [t["dag_run_id"] for t in state["triggers"]] == [c[1] for c in fake_trigger.calls]
        assert state["since"] is not None and state["until"] is not None

        # a braked incident was not recorded: it is no duplicate once the brake is released
        await _reset(h, token)
        assert await _decide(h, _incident(payload, 3)) == "triggered"
        assert len(fake_trigger.calls) == 3


async def test_brake_holds_after_the_window_slides_until_reset(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        for n in (1, 2):
            assert await _decide(h, _incident(payload, n)) == "triggered"
        assert await _decide(h, _incident(payload, 3)) == "braked"
        clock.advance(WINDOW + 1)  # both triggers left the window; the brake stays on
        assert await _decide(h, _incident(payload, 4)) == "braked"
        state = await _state(h, token)
        assert (state["engaged"], state["triggers_in_window"]) == (True, 0)
        assert len(fake_trigger.calls) == 2

        reset = await _reset(h, token)
        assert reset["was"]["engaged"] is True
        assert reset["now"]["engaged"] is False
        assert _sample(h, "driftloop_bridge_brake_engaged") == 0
        assert _sample(h, "driftloop_bridge_brake_resets_total") == 1
        trail = (
            await h.http.get("/decisions", headers={"Authorization": f"Bearer {token}"})
        ).json()["decisions"]
        assert trail[0]["decision"] == "brake_reset"
        assert trail[0]["source"] == "operator"
        assert "was engaged with 0 trigger(s)" in trail[0]["reason"]
        assert await _decide(h, _incident(payload, 4)) == "triggered"
        assert len(fake_trigger.calls) == 3


async def test_reset_forgets_the_window_so_n_more_pass(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        for n in (1, 2):
            assert await _decide(h, _incident(payload, n)) == "triggered"
        assert await _decide(h, _incident(payload, 3)) == "braked"
        await _reset(h, token)
        decided = [await _decide(h, _incident(payload, n)) for n in (3, 4, 5)]
        assert decided == ["triggered", "triggered", "braked"]
        assert len(fake_trigger.calls) == 4


async def test_brake_expires_after_the_hold(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        for n in (1, 2):
            assert await _decide(h, _incident(payload, n)) == "triggered"
        assert await _decide(h, _incident(payload, 3)) == "braked"
        clock.advance(HOLD - 1)
        assert await _decide(h, _incident(payload, 4)) == "braked"
        assert (await _state(h, token))["engaged"] is True
        clock.advance(2)
        state = await _state(h, token)
        assert state["engaged"] is False
        assert _sample(h, "driftloop_bridge_brake_engaged") == 0  # read of the state refreshes it
        assert await _decide(h, _incident(payload, 4)) == "triggered"
        assert len(fake_trigger.calls) == 3


async def test_window_slides_before_the_brake_engages(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        assert await _decide(h, _incident(payload, 1)) == "triggered"
        clock.advance(WINDOW - 10)
        assert await _decide(h, _incident(payload, 2)) == "triggered"
        clock.advance(11)  # the first trigger left the window: one slot is free again
        assert await _decide(h, _incident(payload, 3)) == "triggered"
        assert await _decide(h, _incident(payload, 4)) == "braked"
        assert len(fake_trigger.calls) == 3


async def test_zero_disables_the_brake(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    settings = _settings(settings_factory, brake_max_triggers=0)
    async with harness_factory(settings, redis, fake_trigger, clock) as h:
        decided = [await _decide(h, _incident(payload, n)) for n in range(1, 11)]
        assert decided == ["triggered"] * 10
        assert len(fake_trigger.calls) == 10
        state = await _state(h, token)
        assert (state["enabled"], state["engaged"], state["triggers_in_window"]) == (
            False,
            False,
            0,
        )
        assert _braked(h) == 0


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_concurrent_incidents_never_exceed_n(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token, limit
) -> None:
    settings = _settings(settings_factory, brake_max_triggers=limit)
    async with harness_factory(settings, redis, fake_trigger, clock) as h:
        decided = await asyncio.gather(*(_decide(h, _incident(payload, n)) for n in range(50)))
        assert decided.count("triggered") == limit
        assert decided.count("braked") == 50 - limit
        assert len(fake_trigger.calls) == limit
        assert (await _state(h, token))["triggers_in_window"] == limit


async def test_duplicates_and_cooldown_come_before_the_brake(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload
) -> None:
    settings = _settings(settings_factory, brake_max_triggers=1, cooldown_seconds=600.0)
    async with harness_factory(settings, redis, fake_trigger, clock) as h:
        assert await _decide(h, _incident(payload, 1)) == "triggered"
        assert await _decide(h, _incident(payload, 1)) == "duplicate"
        assert await _decide(h, _incident(payload, 2)) == "cooldown"
        clock.advance(601)
        assert await _decide(h, _incident(payload, 2)) == "braked"
        assert await _decide(h, _incident(payload, 1)) == "duplicate"  # still its own run
        assert len(fake_trigger.calls) == 1


async def test_brake_state_survives_a_restart_and_is_shared(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    settings = _settings(settings_factory)
    async with harness_factory(settings, redis, fake_trigger, clock) as first:
        for n in (1, 2):
            assert await _decide(first, _incident(payload, n)) == "triggered"
    async with harness_factory(settings, redis, fake_trigger, clock) as second:
        assert await _decide(second, _incident(payload, 3)) == "braked"
        async with harness_factory(settings, redis, fake_trigger, clock) as third:
            await _reset(third, token)
        assert await _decide(second, _incident(payload, 3)) == "triggered"


async def test_brake_endpoints_need_the_token(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        for n in (1, 2, 3):
            await _decide(h, _incident(payload, n))
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            got = await h.http.get("/brake", headers=headers)
            assert got.status_code == 401
            assert got.json()["error"] == "unauthorized"
            reset = await h.http.post("/brake/reset", headers=headers)
            assert reset.status_code == 401
        assert (await _state(h, token))["engaged"] is True  # nothing was reset
        assert _sample(h, "driftloop_bridge_brake_resets_total") == 0
        assert isinstance(h.bridge.auth, AuthConfig)


async def test_watch_refreshes_the_gauge_until_stopped(
    settings_factory, harness_factory, redis, fake_trigger, clock, payload, token
) -> None:
    async with harness_factory(_settings(settings_factory), redis, fake_trigger, clock) as h:
        for n in (1, 2, 3):
            await _decide(h, _incident(payload, n))
        brake = h.bridge.brake
        clock.advance(HOLD + 1)  # expired while nothing was decided
        assert _sample(h, "driftloop_bridge_brake_engaged") == 1
        stopping = asyncio.Event()
        task = asyncio.create_task(brake.watch(stopping, 0.01))
        deadline = asyncio.get_running_loop().time() + 5
        while _sample(h, "driftloop_bridge_brake_engaged") != 0:
            assert asyncio.get_running_loop().time() < deadline, "gauge never refreshed"
            await asyncio.sleep(0.01)
        stopping.set()
        await asyncio.wait_for(task, 5)
