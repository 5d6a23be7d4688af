"""Health probes for every kind of component, each answering (healthy, detail) quickly."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import redis

from driftloop_contracts import TOPICS

from .components import Component

TIMEOUT = 2.0


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


def probe(c: Component, airflow_health: dict[str, Any] | None = None) -> Health:
    try:
        kind, _, arg = c.probe.partition(":")
        if kind == "kafka":
            return asyncio.run(_kafka(c.url.removeprefix("kafka://")))
        if kind == "redis":
            redis.Redis.from_url(c.url, socket_timeout=TIMEOUT).ping()
            return Health(True, "PONG")
        if kind == "influxdb":
            r = httpx.get(f"{c.url}/ping", timeout=TIMEOUT)
            return Health(r.status_code == 204, f"/ping {r.status_code}")
        if kind == "mlflow":
            return _http_ok(f"{c.url}/health")
        if kind in {"prometheus", "alertmanager"}:
            return _http_ok(f"{c.url}/-/ready")
        if kind == "airflow":
            health = airflow_health if airflow_health is not None else airflow_status(c.url)
            part = health.get(arg or "metadatabase", {})
            status = part.get("status")
            return Health(status == "healthy", f"{arg or 'api/metadatabase'}: {status}")
        if kind == "http":
            return _http_ok(f"{c.url}{arg}")
        if kind == "tcp":
            host, port = urlparse(c.url).hostname, urlparse(c.url).port
            with socket.create_connection((host, port), timeout=TIMEOUT):
                return Health(True, "accepting connections")
        return Health(False, f"unknown probe {c.probe}")
    except Exception as exc:  # a probe reports, it never raises
        return Health(False, f"{type(exc).__name__}: {exc}"[:200])


def readiness(c: Component) -> Health | None:
    """A service's ``/health/ready``: ready, or the problems it names (``None``: not a service).

    Liveness only says the process answers; a consumer that stopped consuming is alive and not
    ready, and that is what a person looking at ``driftloop status`` needs to see.
    """
    if c.readiness_path is None:
        return None
    try:
        r = httpx.get(f"{c.url}{c.readiness_path}", timeout=TIMEOUT)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Health(False, f"{c.readiness_path}: {type(exc).__name__}: {exc}"[:200])
    problems = body.get("problems") if isinstance(body, dict) else None
    if r.status_code == 200:
        return Health(True, "ready")
    why = "; ".join(map(str, problems)) if problems else f"{c.readiness_path} {r.status_code}"
    return Health(False, why[:300])


def airflow_status(url: str) -> dict[str, Any]:
    try:
        r = httpx.get(f"{url}/api/v2/monitor/health", timeout=TIMEOUT)
        return r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


def _http_ok(url: str) -> Health:
    r = httpx.get(url, timeout=TIMEOUT)
    return Health(r.status_code == 200, f"{urlparse(url).path} {r.status_code}")


async def _kafka(bootstrap: str) -> Health:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(admin.start(), TIMEOUT)
        topics = set(await asyncio.wait_for(admin.list_topics(), TIMEOUT))
    finally:
        await admin.close()
    missing = [t.name for t in TOPICS if t.name not in topics]
    if missing:
        return Health(False, f"missing topics {missing}")
    return Health(True, f"{len(TOPICS)} topics")
