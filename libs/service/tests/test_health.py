"""``/health/live`` and ``/health/ready`` answer with one vocabulary; ``/metrics`` serves the
app's own registry."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from driftloop_service import (
    Readiness,
    RetryCounter,
    health_router,
    metrics_router,
    new_registry,
)


def make_app(problems: list[str]) -> FastAPI:
    app = FastAPI()

    async def check(request: Request) -> Readiness:
        return Readiness(list(problems), {"model_version": "3"})

    app.include_router(health_router(check))
    return app


def test_live_is_alive() -> None:
    r = TestClient(make_app(["x"])).get("/health/live")
    assert r.status_code == 200 and r.json() == {"status": "alive"}


def test_ready_and_not_ready() -> None:
    r = TestClient(make_app([])).get("/health/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "problems": [], "model_version": "3"}
    r = TestClient(make_app(["no model loaded yet"])).get("/health/ready")
    assert r.status_code == 503
    assert r.json() == {
        "status": "not_ready",
        "problems": ["no model loaded yet"],
        "model_version": "3",
    }


def serving(registry: CollectorRegistry) -> Callable[[Request], CollectorRegistry]:
    """A ``registry_of`` for :func:`metrics_router` that always answers ``registry``."""
    return lambda request: registry


def test_registries_are_per_instance_and_count_retries() -> None:
    apps = []
    for _ in range(2):
        registry = new_registry()
        Counter("driftloop_things_total", "things", registry=registry).inc()
        hook = RetryCounter(registry, {"replica": "r0"}).hook("publish")
        hook(1, ConnectionError("x"), 0.1)
        app = FastAPI()
        app.include_router(metrics_router(serving(registry)))
        apps.append(app)
    for app in apps:  # two registries side by side, each with its own count
        text = TestClient(app).get("/metrics").text
        assert "driftloop_things_total 1.0" in text
        assert 'driftloop_retries_total{operation="publish",replica="r0"} 1.0' in text
        assert "process_cpu_seconds_total" in text
