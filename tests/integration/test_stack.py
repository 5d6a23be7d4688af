"""The local stack itself: every component up, healthy and answering on its own port."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def status_json(driftloop) -> dict[str, Any]:
    result = driftloop("status", "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_every_component_is_healthy_and_answers_on_its_port(stack, driftloop) -> None:
    components = status_json(driftloop)["components"]
    names = {c["name"] for c in components}
    assert {
        "kafka",
        "redis",
        "influxdb",
        "mlflow",
        "prometheus",
        "alertmanager",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    } <= names
    services = {"bridge", "drift-consumer"} | {n for n in names if n.startswith("model-api-")}
    for c in components:
        assert c["healthy"], c
        assert c["state"] == "RUNNING", c
        # our services report readiness too (true or false, with the reason); infrastructure not
        assert (c["ready"] is None) == (c["name"] not in services), c
        if c["ready"] is False:
            assert c["ready_detail"], c
        if c["port"]:
            assert c["port"] >= stack.ports.base
            with socket.create_connection(("127.0.0.1", c["port"]), timeout=2):
                pass


def test_status_shows_each_components_memory_and_the_total(stack, driftloop) -> None:
    doc = status_json(driftloop)
    rss = {c["name"]: c["rss_bytes"] for c in doc["components"]}
    # every running program has a resident tree; no process is smaller than 1 MiB
    assert all(v is not None and v >= 1024 * 1024 for v in rss.values()), rss
    assert doc["total_rss_bytes"] == sum(rss.values())


def test_up_twice_is_harmless(driftloop) -> None:
    before = {c["name"]: c["pid"] for c in status_json(driftloop)["components"]}
    result = driftloop("up")
    assert result.returncode == 0, result.stdout + result.stderr
    after = {c["name"]: c["pid"] for c in status_json(driftloop)["components"]}
    assert after == before  # nothing restarted


def test_status_names_a_stopped_component(stack, driftloop) -> None:
    stack.stop("alertmanager")
    try:
        result = driftloop("status", "--json", timeout=60)
        assert result.returncode == 1
        by_name = {c["name"]: c for c in json.loads(result.stdout)["components"]}
        assert by_name["alertmanager"]["healthy"] is False
        assert by_name["alertmanager"]["state"] == "STOPPED"
        assert by_name["redis"]["healthy"] is True
    finally:
        stack.start("alertmanager")
        stack.wait_healthy("alertmanager")


def test_the_drift_consumer_exports_redis_memory_against_its_bound(stack) -> None:
    """RedisMemoryHigh's inputs come from the stack's real Redis (``INFO memory``), bounded by
    the ``maxmemory`` of redis-conf/limits.conf."""
    import time

    import httpx
    import redis
    from prometheus_client.parser import text_string_to_metric_families

    bound = int(redis.Redis.from_url(stack.redis_url).config_get("maxmemory")["maxmemory"] or 0)
    assert bound > 0  # the local stack's Redis is bounded (noeviction at 1 GiB)

    def exported() -> dict[str, float]:
        text = httpx.get(f"{stack.drift_consumer_url}/metrics", timeout=5).text
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("driftloop_redis_")
        }

    deadline = time.monotonic() + 60
    while (got := exported()).get("driftloop_redis_maxmemory_bytes") != bound:
        assert time.monotonic() < deadline, f"maxmemory {bound} never exported: {got}"
        time.sleep(0.5)
    assert 0 < got["driftloop_redis_used_memory_bytes"] < bound, got
