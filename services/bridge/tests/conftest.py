"""Fixtures for the bridge's unit tests.

Redis is a real ``redis-server`` on a Unix socket in a temp dir (no TCP, nothing shared with
the stack), so the Lua scripts run exactly as in production; time is a :class:`FakeClock`
and Airflow a :class:`FakeTrigger`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from driftloop_bridge.app import create_app
from driftloop_bridge.errors import TriggerRejected, TriggerUnavailable
from driftloop_bridge.retry_queue import TriggerResult
from driftloop_bridge.settings import BridgeSettings

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "unit-test-token-0123456789"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads(fixture_bytes(name))


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, start: float = 1_795_400_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTrigger:
    """Stands in for Airflow: records calls; ``mode`` is ok / down / reject.

    ``active`` lists the run ids the active-run check answers (runs the test pretends are
    queued or running); ``check_down`` makes only that check fail (the trigger would work).
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.active: list[str] = []
        self.check_down = False
        self.checks = 0

    async def active_runs(self, dag_id: str, *, call_timeout: float | None = None) -> list[str]:
        self.checks += 1
        if self.mode == "down" or self.check_down:
            raise TriggerUnavailable("Airflow unreachable: connection refused")
        return list(self.active)

    async def trigger(
        self,
        dag_id: str,
        dag_run_id: str,
        conf: dict[str, Any],
        *,
        call_timeout: float | None = None,
    ) -> TriggerResult:
        self.calls.append((dag_id, dag_run_id, conf))
        if self.mode == "down":
            raise TriggerUnavailable("Airflow unreachable: connection refused")
        if self.mode == "reject":
            raise TriggerRejected("Airflow answered 400: bad conf", 400)
        if dag_run_id in self.runs:
            return TriggerResult("exists")
        self.runs[dag_run_id] = conf
        return TriggerResult("created", "queued")


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    workdir = tmp_path_factory.mktemp("redis")
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The socket file appears before Redis accepts connections: wait for a PING.
    deadline = time.monotonic() + 10
    while not _answers_ping(sock):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.02)
    yield sock
    proc.terminate()
    proc.wait(timeout=10)


def _answers_ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(SyncRedis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except RedisError:
        return False


@pytest.fixture
async def redis(redis_socket: Path) -> AsyncIterator[Redis]:
    client = Redis(unix_socket_path=str(redis_socket))
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_trigger() -> FakeTrigger:
    return FakeTrigger()


def make_settings(**overrides: Any) -> BridgeSettings:
    values: dict[str, Any] = {
        "airflow_password": "unused",
        "webhook_token": TOKEN,
        "cooldown_seconds": 600.0,
        "retry_initial_seconds": 1.0,
        "retry_max_backoff_seconds": 30.0,
        "retry_max_age_seconds": 300.0,
    }
    values.update(overrides)
    return BridgeSettings(**values)


@pytest.fixture
def settings() -> BridgeSettings:
    return make_settings()


class AppHarness:
    def __init__(self, app: FastAPI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    @property
    def bridge(self) -> Any:
        return self.app.state.bridge

    async def post(
        self,
        source: str,
        body: bytes | dict[str, Any],
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return await self.http.post(f"/webhooks/{source}", content=raw, headers=sent)


@pytest.fixture
async def harness(
    settings: BridgeSettings, redis: Redis, fake_trigger: FakeTrigger, clock: FakeClock
) -> AsyncIterator[AppHarness]:
    async with build_harness(settings, redis, fake_trigger, clock) as h:
        yield h


class build_harness:
    """``async with build_harness(...) as h``: the app with its lifespan running."""

    def __init__(
        self, settings: BridgeSettings, redis: Redis, trigger: FakeTrigger, clock: FakeClock
    ) -> None:
        self.app = create_app(settings, redis=redis, trigger=trigger, clock=clock, run_worker=False)

    async def __aenter__(self) -> AppHarness:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://bridge"
        )
        return AppHarness(self.app, self._http)

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()
        await self._lifespan.__aexit__(None, None, None)


@pytest.fixture
def payload() -> Any:
    """``payload(name)`` -> the raw bytes of a fixture file; ``payload.json(name)`` -> dict."""

    class _Payload:
        def __call__(self, name: str) -> bytes:
            return fixture_bytes(name)

        def json(self, name: str) -> dict[str, Any]:
            return fixture_json(name)

    return _Payload()


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def settings_factory() -> Any:
    return make_settings


@pytest.fixture
def harness_factory() -> Any:
    return build_harness
