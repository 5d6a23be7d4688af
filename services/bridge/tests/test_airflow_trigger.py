"""The Airflow client wrapper against a stub speaking Airflow 3.3's REST API v2.

The stub's bodies were captured from a real Airflow 3.3.2 api-server (``POST /auth/token``
-> 201 ``{"access_token"}``; ``POST /api/v2/dags/{id}/dagRuns`` -> 200 DAGRunResponse, 409 on a
repeated run id, 403 ``Invalid JWT token`` for a bad token, 404 for an unknown DAG). It binds a
loopback port of the OS's choosing; the real thing is exercised in tests/integration.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from driftloop_bridge.airflow_trigger import AirflowTrigger, token_expiry
from driftloop_bridge.errors import TriggerRejected, TriggerUnavailable

RUN_BODY: dict[str, Any] = {
    "dag_run_id": "RUN",
    "dag_id": "retrain_house_price",
    "logical_date": None,
    "queued_at": "2026-11-23T12:31:30.547693Z",
    "start_date": None,
    "end_date": None,
    "duration": None,
    "data_interval_start": None,
    "data_interval_end": None,
    "run_after": "2026-11-23T12:31:30.543880Z",
    "last_scheduling_decision": None,
    "run_type": "manual",
    "state": "queued",
    "triggered_by": "rest_api",
    "triggering_user_name": "admin",
    "conf": {},
    "note": None,
    "dag_versions": [],
    "bundle_version": None,
    "dag_display_name": "retrain_house_price",
    "partition_key": None,
    "partition_date": None,
}


def jwt(exp: float) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS512'})}.{part({'sub': 'admin', 'exp': int(exp)})}.sig"


class Stub:
    def __init__(self) -> None:
        self.token_exp = 2_000_000_000.0
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.run_statuses: list[int] = []  # next statuses for dagRuns, then 200/409
        self.runs: dict[str, dict[str, Any]] = {}
        self.seen_auth: list[str] = []
        self.token_status = 201
        self.active: list[str] = []  # run ids the list endpoint answers as queued/running
        self.list_queries: list[str] = []


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            if auth.removeprefix("Bearer ") not in state.valid_tokens:
                return self._send(403, {"detail": "Invalid JWT token"})
            if state.run_statuses:
                status = state.run_statuses.pop(0)
                return self._send(status, {"detail": f"stub {status}"})
            state.list_queries.append(self.path)
            runs = [{**RUN_BODY, "dag_run_id": r, "state": "running"} for r in state.active]
            return self._send(200, {"dag_runs": runs, "total_entries": len(runs)})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/auth/token":
                if state.token_status != 201:
                    return self._send(state.token_status, {"detail": "Invalid credentials"})
                assert body == {"username": "admin", "password": "pw"}
                state.tokens_issued += 1
                token = jwt(state.token_exp) + str(state.tokens_issued)
                state.valid_tokens.add(token)
                return self._send(201, {"access_token": token})
            auth = self.headers.get("Authorization", "")
            state.seen_auth.append(auth)
            if auth.removeprefix("Bearer ") not in state.valid_tokens:
                return self._send(403, {"detail": "Invalid JWT token"})
            if state.run_statuses:
                status = state.run_statuses.pop(0)
                return self._send(status, {"detail": f"stub {status}"})
            if self.path == "/api/v2/dags/missing/dagRuns":
                return self._send(404, {"detail": "Dag with dag_id: 'missing' not found"})
            run_id = body["dag_run_id"]
            if run_id in state.runs:
                return self._send(409, {"detail": {"reason": "Unique constraint violation"}})
            state.runs[run_id] = body["conf"]
            return self._send(200, {**RUN_BODY, "dag_run_id": run_id, "conf": body["conf"]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _trigger(url: str, now: list[float] | None = None) -> AirflowTrigger:
    clock_values = now if now is not None else [1_795_400_000.0]
    return AirflowTrigger(
        url, "admin", SecretStr("pw"), default_timeout=2, clock=lambda: clock_values[0]
    )


def test_token_expiry_reads_the_exp_claim() -> None:
    assert token_expiry(jwt(1234)) == 1234
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!.c") is None


async def test_creates_then_409_means_exists(stub) -> None:
    state, url = stub
    trigger = _trigger(url)
    result = await trigger.trigger("retrain_house_price", "run-1", {"alertname": "A"})
    assert result.outcome == "created" and result.state == "queued"
    assert state.runs == {"run-1": {"alertname": "A"}}
    again = await trigger.trigger("retrain_house_price", "run-1", {"alertname": "A"})
    assert again.outcome == "exists"
    assert state.tokens_issued == 1  # the token is cached


async def test_token_is_refreshed_before_expiry(stub) -> None:
    state, url = stub
    now = [1_795_400_000.0]
    state.token_exp = now[0] + 3600
    trigger = _trigger(url, now)
    await trigger.trigger("d", "run-1", {})
    now[0] += 3600 - 30  # inside the refresh margin
    await trigger.trigger("d", "run-2", {})
    assert state.tokens_issued == 2


async def test_refused_token_is_fetched_again_once(stub) -> None:
    state, url = stub
    trigger = _trigger(url)
    await trigger.trigger("d", "run-1", {})
    state.valid_tokens.clear()  # e.g. the JWT secret rotated on the Airflow side
    result = await trigger.trigger("d", "run-2", {})
    assert result.outcome == "created"
    assert state.tokens_issued == 2


async def test_unknown_dag_is_retryable(stub) -> None:
    _, url = stub
    with pytest.raises(TriggerUnavailable, match="not found") as info:
        await _trigger(url).trigger("missing", "run-1", {})
    assert info.value.status == 404


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(stub, status: int) -> None:
    state, url = stub
    state.run_statuses = [status]
    with pytest.raises(TriggerUnavailable, match=f"answered {status}"):
        await _trigger(url).trigger("d", "run-1", {})


@pytest.mark.parametrize("status", [400, 422])
async def test_bad_requests_are_rejected(stub, status: int) -> None:
    state, url = stub
    state.run_statuses = [status]
    with pytest.raises(TriggerRejected, match=f"answered {status}"):
        await _trigger(url).trigger("d", "run-1", {})


async def test_wrong_credentials_are_retryable_and_say_so(stub) -> None:
    state, url = stub
    state.token_status = 401
    with pytest.raises(TriggerUnavailable, match="refused a token for user 'admin'"):
        await _trigger(url).trigger("d", "run-1", {})


async def test_airflow_down_is_retryable() -> None:
    # A port nothing listens on: bind, read the number, close.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TriggerUnavailable, match="unreachable"):
        await _trigger(f"http://127.0.0.1:{port}").trigger("d", "run-1", {})


async def test_close_releases_the_connections(stub) -> None:
    # The bridge's shutdown calls it; the generated ApiClient itself has no close().
    _, url = stub
    trigger = _trigger(url)
    await trigger.trigger("d", "run-1", {})
    trigger.close()


async def test_active_runs_asks_for_queued_and_running(stub) -> None:
    state, url = stub
    trigger = _trigger(url)
    # the token comes from a trigger first, so the GET sees a valid one
    await trigger.trigger("retrain_house_price", "run-0", {})
    assert await trigger.active_runs("retrain_house_price") == []
    state.active = ["run-1", "run-2"]
    assert await trigger.active_runs("retrain_house_price") == ["run-1", "run-2"]
    query = state.list_queries[-1]
    assert query.startswith("/api/v2/dags/retrain_house_price/dagRuns?")
    assert "state=queued" in query and "state=running" in query


async def test_active_runs_failures_are_retryable_never_rejections(stub) -> None:
    state, url = stub
    trigger = _trigger(url)
    for status in (400, 500):
        state.run_statuses = [status]
        with pytest.raises(TriggerUnavailable, match=f"{status}"):
            await trigger.active_runs("retrain_house_price")
