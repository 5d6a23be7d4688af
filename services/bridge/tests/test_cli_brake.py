"""`driftloop loop brake|reset-brake` against a real bridge (uvicorn on a free port, the test's
redis-server, fake Airflow): the CLI sees the brake engaged, releases it, and names the problem
when the bridge is unreachable or refuses the token."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from driftloop_bridge.app import create_app
from driftloop_cli.main import app as cli

from .conftest import TOKEN, FakeTrigger, fixture_json, make_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bridge_url(redis_socket: Path, redis: Any) -> Iterator[str]:
    settings = make_settings(
        redis_url=f"unix://{redis_socket}", cooldown_seconds=0.0, brake_max_triggers=1
    )
    app = create_app(settings, trigger=FakeTrigger(), run_worker=False)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "bridge did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _incident(n: int) -> dict[str, Any]:
    body = fixture_json("grafana_firing.json")
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["fingerprint"] = f"{n:016x}"
    return body


def _run(*args: str, token: str = TOKEN) -> Any:
    env = {"DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN": token}
    return CliRunner().invoke(cli, list(args), env=env)


def test_cli_shows_and_resets_the_brake(bridge_url: str) -> None:
    decided = []
    for n in (1, 2):
        resp = httpx.post(
            f"{bridge_url}/webhooks/grafana",
            json=_incident(n),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        decided.append(resp.json()["decisions"][0]["decision"])
    assert decided == ["triggered", "braked"]

    shown = _run("loop", "brake", "--url", bridge_url, "--json")
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.stdout)
    assert (state["engaged"], state["triggers_in_window"]) == (True, 1)

    table = _run("loop", "brake", "--url", bridge_url)
    assert table.exit_code == 0 and "ENGAGED" in table.stdout

    reset = _run("loop", "reset-brake", "--url", bridge_url)
    assert reset.exit_code == 0, reset.output
    assert "released" in reset.stdout

    after = json.loads(_run("loop", "brake", "--url", bridge_url, "--json").stdout)
    assert (after["engaged"], after["triggers_in_window"]) == (False, 0)


def test_cli_names_a_refused_token_and_changes_nothing(bridge_url: str) -> None:
    refused = _run("loop", "reset-brake", "--url", bridge_url, token="not-the-token")
    assert refused.exit_code == 2
    assert "refused the token" in refused.stderr
    assert "DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN" in refused.stderr


def test_cli_names_an_unreachable_bridge() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    for command in ("brake", "reset-brake"):
        result = _run("loop", command, "--url", url)
        assert result.exit_code == 2
        assert f"cannot reach the bridge at {url}" in result.stderr
        assert "driftloop up" in result.stderr
