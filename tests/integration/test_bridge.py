"""The bridge against the real local stack: real Redis, real Airflow 3, the real retraining DAG.

Payload formats (see services/bridge/tests/test_payloads.py for the full provenance):
Grafana unified alerting webhook = grafana/alerting ``receivers/webhook/v1/webhook.go`` +
``templates/template_data.go``; Alertmanager webhook v4 = prometheus/alertmanager
``notify/webhook/webhook.go`` + ``template/template.go``; one test also has a *real*
Alertmanager (Debian's prometheus-alertmanager) deliver its own webhook.

Most tests drive a bridge process of their own (``python -m driftloop_bridge``, the same
entry point the supervisor runs) on the stack's Redis (under a key prefix unique to this
run) and the stack's Airflow, so they can pick a cooldown, restart it mid-test, and stay out
of the way of the stack's own bridge and of other tests. Its rules are the default
``services/bridge/rules.yaml`` plus one conf override (``min_labelled_rows`` far above any
data) so every DAG run these tests create ends at ``collect`` as *skipped*: the real DAG
runs, but nothing is trained or promoted. The stack's supervised bridge is exercised for
the cases that create no run (auth, malformed bodies, resolved alerts).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from driftloop_bridge.auth import sign
from driftloop_cli.observe import ObservationError, metric_total, scrape_metrics
from driftloop_contracts import DAG_ID, HOST

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "services" / "bridge" / "tests" / "fixtures"
DEFAULT_RULES = REPO / "services" / "bridge" / "rules.yaml"
#: Far above any labelled data, and no wait for the incident's regime: the DAG's
#: ``wait_for_regime`` skips the run at once (see airflow/dags), so it ends within seconds.
SKIP_TRAINING = {"min_labelled_rows": 1_000_000_000, "regime_wait_seconds": 0}
PORT_RANGE = range(33100, 33200)


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def fresh(name: str, **labels: str) -> tuple[dict[str, Any], str]:
    """A fixture payload turned into a new incident (unique fingerprint, startsAt = now)."""
    body = copy.deepcopy(fixture_json(name))
    fingerprint = uuid.uuid4().hex[:16]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for alert in body["alerts"]:
        alert["fingerprint"] = fingerprint
        alert["startsAt"] = now
        alert["labels"].update(labels)
    return body, fingerprint


def free_port() -> int:
    for port in PORT_RANGE:
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 33100-33199")


def poll(what: str, check: Any, timeout_s: float = 60, every_s: float = 0.25) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` at the deadline.

    A component that is coming back (Airflow after a restart, on a loaded machine) may time out
    or refuse a connection for a while: that is "not yet", not a failure, until the deadline.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except (httpx.TransportError, ObservationError) as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what} (last error: {last_error!r})"
            )
        time.sleep(every_s)


class AirflowAPI:
    """Just enough of Airflow's REST API v2 to look at DAG runs."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self._auth = {"username": username, "password": password}
        self._token: str | None = None

    def _get(self, path: str, **params: Any) -> httpx.Response:
        for _ in range(2):
            if self._token is None:
                r = httpx.post(f"{self.url}/auth/token", json=self._auth, timeout=10)
                r.raise_for_status()
                self._token = r.json()["access_token"]
            r = httpx.get(
                f"{self.url}/api/v2{path}",
                params=params,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=10,
            )
            if r.status_code not in (401, 403):
                return r
            self._token = None
        return r

    def run(self, run_id: str) -> dict[str, Any] | None:
        r = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def active(self) -> list[str]:
        """Run ids of the DAG that are queued or running."""
        r = self._get(f"/dags/{DAG_ID}/dagRuns", state=["queued", "running"], limit=10)
        r.raise_for_status()
        return [run["dag_run_id"] for run in r.json()["dag_runs"]]

    def wait_idle(self, timeout_s: float = 180) -> None:
        """Until no run of the DAG is active: the bridge answers ``run_active`` while one is
        (one retrain per incident), and these tests each want their own run."""
        poll("the DAG to have no active run", lambda: not self.active(), timeout_s, 0.5)

    def task_states(self, run_id: str) -> dict[str, str]:
        r = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        r.raise_for_status()
        return {ti["task_id"]: str(ti["state"]) for ti in r.json()["task_instances"]}

    def runs_for(self, fingerprint: str) -> list[dict[str, Any]]:
        """Every recent run of the DAG whose conf carries this alert fingerprint."""
        r = self._get(f"/dags/{DAG_ID}/dagRuns", limit=100, order_by="-run_after")
        r.raise_for_status()
        return [
            run
            for run in r.json()["dag_runs"]
            if (run.get("conf") or {}).get("fingerprint") == fingerprint
        ]


class BridgeProcess:
    """``python -m driftloop_bridge`` with its own settings; start, stop, restart."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_BRIDGE_")},
            "DRIFTLOOP_BRIDGE_HOST": HOST,
            "DRIFTLOOP_BRIDGE_PORT": str(self.port),
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_bridge"], env=self.env, stdout=log, stderr=log
        )
        poll(f"bridge on {self.url} ready", self._ready, timeout_s=60)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"bridge exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


class Harness:
    def __init__(
        self, stack: Any, bridge: BridgeProcess, token: str, hmac_secret: str, prefix: str
    ) -> None:
        self.stack = stack
        self.bridge = bridge
        self.token = token
        self.hmac_secret = hmac_secret
        self.prefix = prefix
        self.airflow = AirflowAPI(stack.airflow_url, stack.airflow_username, stack.airflow_password)
        self.redis = redis.Redis.from_url(stack.redis_url)

    def headers(self, source: str, body: bytes, *, token: str | None = None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or self.token}",
        }
        if source == "grafana":
            ts = str(int(time.time()))
            headers["X-Grafana-Alert-Timestamp"] = ts
            headers["X-Grafana-Alert-Signature"] = sign(self.hmac_secret, body, ts)
        return headers

    def post(self, source: str, payload: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return httpx.post(
            f"{self.bridge.url}/webhooks/{source}",
            content=body,
            headers=self.headers(source, body, **kw),
            timeout=30,
        )

    def our_keys(self) -> set[bytes]:
        return set(self.redis.scan_iter(match=f"{self.prefix}:*", count=1000))

    def pending(self) -> int:
        return httpx.get(f"{self.bridge.url}/health/ready", timeout=5).json()["pending_triggers"]

    def decisions(self, limit: int = 200) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.bridge.url}/decisions", params={"limit": limit}, timeout=5)
        return r.json()["decisions"]


def _rules_file(tmp: Path) -> Path:
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    for rule in doc["rules"]:
        rule["conf"] = {**rule["conf"], **SKIP_TRAINING}
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _start_bridge(stack: Any, tmp: Path, name: str, **settings: str) -> Harness:
    token = secrets.token_urlsafe(24)
    hmac_secret = secrets.token_urlsafe(24)
    prefix = f"driftloop:bridge-it:{uuid.uuid4().hex[:8]}"
    env = {
        "DRIFTLOOP_BRIDGE_REDIS_URL": stack.redis_url,
        "DRIFTLOOP_BRIDGE_REDIS_PREFIX": prefix,
        "DRIFTLOOP_BRIDGE_AIRFLOW_URL": stack.airflow_url,
        "DRIFTLOOP_BRIDGE_AIRFLOW_USERNAME": stack.airflow_username,
        "DRIFTLOOP_BRIDGE_AIRFLOW_PASSWORD": stack.airflow_password,
        "DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN": token,
        "DRIFTLOOP_BRIDGE_HMAC_SECRET": hmac_secret,
        "DRIFTLOOP_BRIDGE_RULES_FILE": str(_rules_file(tmp)),
        "DRIFTLOOP_BRIDGE_RETRY_INITIAL_SECONDS": "0.5",
        "DRIFTLOOP_BRIDGE_RETRY_MAX_BACKOFF_SECONDS": "2",
        "DRIFTLOOP_BRIDGE_LOG_FORMAT": "json",
        # Each test is its own incident: the circuit breaker would brake the third (a test of
        # its own turns it on).
        "DRIFTLOOP_BRIDGE_BRAKE_MAX_TRIGGERS": "0",
        **{f"DRIFTLOOP_BRIDGE_{k.upper()}": v for k, v in settings.items()},
    }
    bridge = BridgeProcess(env, tmp / f"{name}.log")
    bridge.start()
    return Harness(stack, bridge, token, hmac_secret, prefix)


def _cleanup(h: Harness) -> None:
    h.bridge.stop()
    keys = h.our_keys()
    if keys:
        h.redis.delete(*keys)
    h.redis.close()


@pytest.fixture(scope="module")
def bridge(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """Our own bridge on the stack, cooldown off (each test is a separate incident)."""
    h = _start_bridge(stack, tmp_path_factory.mktemp("bridge"), "bridge", cooldown_seconds="0")
    yield h
    _cleanup(h)


@pytest.fixture(scope="module")
def stack_bridge(stack: Any) -> Iterator[Any]:
    """The stack's supervised bridge, restarted once so it runs the code under test."""
    stack.restart("bridge")
    stack.wait_healthy("bridge", timeout_s=60)
    poll("stack bridge ready", lambda: _status(f"{stack.bridge_url}/health/ready") == 200)
    yield stack


@pytest.fixture(autouse=True)
def _dag_idle(retrain_runs: Any) -> None:
    """Each test starts with no active run (the previous test's, or one the stack's bridge
    triggered for a live alert, would make the bridge answer ``run_active``)."""
    retrain_runs.end_active("a bridge test starts with no active run")


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


# --- Grafana ----------------------------------------------------------------------------------
def test_grafana_firing_creates_one_run_with_the_alerts_conf(bridge: Harness) -> None:
    body, fingerprint = fresh("grafana_firing.json")
    started = time.perf_counter()
    resp = bridge.post("grafana", body)
    elapsed = time.perf_counter() - started
    assert resp.status_code == 202, resp.text
    (decision,) = resp.json()["decisions"]
    assert decision["decision"] == "triggered", decision
    assert decision["outcome"] == "created"
    assert elapsed < 5, f"webhook took {elapsed:.2f}s"
    run = bridge.airflow.run(decision["dag_run_id"])
    assert run is not None
    conf = run["conf"]
    assert conf["alertname"] == "DriftPredictionHigh"
    assert conf["labels"]["feature"] == "prediction"
    assert conf["values"] == {"A": 0.3125, "B": 0.25, "C": 1.0}
    assert conf["fingerprint"] == fingerprint
    assert conf["source"] == "grafana"
    assert len(bridge.airflow.runs_for(fingerprint)) == 1


def test_grafana_same_payload_100_times_also_concurrently_is_one_run(bridge: Harness) -> None:
    body, fingerprint = fresh("grafana_firing.json")
    raw = json.dumps(body).encode()
    decisions = [bridge.post("grafana", raw).json()["decisions"][0]["decision"] for _ in range(50)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{bridge.bridge.url}/webhooks/grafana",
                        content=raw,
                        headers=bridge.headers("grafana", raw),
                    )
                    for _ in range(50)
                )
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {202}
    decisions += [r.json()["decisions"][0]["decision"] for r in responses]
    assert decisions.count("triggered") == 1, decisions
    assert decisions.count("duplicate") == 99
    assert len(bridge.airflow.runs_for(fingerprint)) == 1


def test_grafana_resolved_creates_no_run_but_is_recorded(bridge: Harness) -> None:
    body, fingerprint = fresh("grafana_resolved.json")
    resp = bridge.post("grafana", body)
    assert resp.status_code == 202
    (decision,) = resp.json()["decisions"]
    assert decision["decision"] == "resolved"
    assert bridge.airflow.run(decision["dag_run_id"]) is None
    assert bridge.airflow.runs_for(fingerprint) == []
    recorded = [d for d in bridge.decisions() if d["fingerprint"] == fingerprint]
    assert [d["decision"] for d in recorded] == ["resolved"]


# --- Alertmanager -----------------------------------------------------------------------------
def test_alertmanager_payload_same_behaviour(bridge: Harness) -> None:
    body, fingerprint = fresh("alertmanager_0_25_firing_captured.json")
    raw = json.dumps(body).encode()
    first = bridge.post("alertmanager", raw)
    assert first.status_code == 202
    (decision,) = first.json()["decisions"]
    assert decision["decision"] == "triggered", decision

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{bridge.bridge.url}/webhooks/alertmanager",
                        content=raw,
                        headers=bridge.headers("alertmanager", raw),
                    )
                    for _ in range(99)
                )
            )

    repeats = asyncio.run(burst())
    assert [r.json()["decisions"][0]["decision"] for r in repeats] == ["duplicate"] * 99
    runs = bridge.airflow.runs_for(fingerprint)
    assert [r["dag_run_id"] for r in runs] == [decision["dag_run_id"]]
    assert runs[0]["conf"]["labels"]["feature"] == "average_rooms"

    resolved, _ = fresh("alertmanager_0_25_resolved_captured.json")
    for alert in resolved["alerts"]:
        alert["fingerprint"] = fingerprint
        alert["startsAt"] = body["alerts"][0]["startsAt"]
    (res,) = bridge.post("alertmanager", resolved).json()["decisions"]
    assert res["decision"] == "resolved"
    assert res["dag_run_id"] == decision["dag_run_id"]
    assert len(bridge.airflow.runs_for(fingerprint)) == 1


def test_real_alertmanager_delivers_to_the_bridge(bridge: Harness, tmp_path: Path) -> None:
    """Debian's prometheus-alertmanager sends its own webhook (bearer auth) to our bridge."""
    binary = "/usr/bin/prometheus-alertmanager"
    if not Path(binary).exists():
        pytest.skip("prometheus-alertmanager not installed")
    port = free_port()
    config = {
        "route": {
            "receiver": "bridge",
            "group_by": ["alertname", "feature"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "bridge",
                "webhook_configs": [
                    {
                        "url": f"{bridge.bridge.url}/webhooks/alertmanager",
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": bridge.token}
                        },
                    }
                ],
            }
        ],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "am.log").open("ab")
    am = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=log,
    )
    am_url = f"http://{HOST}:{port}"
    feature = f"it-{uuid.uuid4().hex[:8]}"
    labels = {"alertname": "DriftFeatureHigh", "feature": feature, "statistic": "psi"}
    try:
        poll("alertmanager ready", lambda: _status(f"{am_url}/-/ready") == 200, timeout_s=30)
        r = httpx.post(f"{am_url}/api/v2/alerts", json=[{"labels": labels}], timeout=5)
        assert r.status_code == 200, r.text

        def triggered() -> dict[str, Any] | None:
            for d in bridge.decisions():
                if d["decision"] == "triggered" and d["source"] == "alertmanager":
                    run = bridge.airflow.run(d["dag_run_id"])
                    if run and run["conf"]["labels"].get("feature") == feature:
                        return run
            return None

        run = poll("a DAG run from Alertmanager's webhook", triggered, timeout_s=60, every_s=0.5)
        assert run["conf"]["source"] == "alertmanager"
        assert len(bridge.airflow.runs_for(run["conf"]["fingerprint"])) == 1

        ended = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        r = httpx.post(
            f"{am_url}/api/v2/alerts", json=[{"labels": labels, "endsAt": ended}], timeout=5
        )
        assert r.status_code == 200

        def resolved() -> bool:
            return any(
                d["decision"] == "resolved" and d["dag_run_id"] == run["dag_run_id"]
                for d in bridge.decisions()
            )

        poll("the resolved notification", resolved, timeout_s=60, every_s=0.5)
        assert len(bridge.airflow.runs_for(run["conf"]["fingerprint"])) == 1
    finally:
        am.terminate()
        am.wait(timeout=20)


# --- refusals ---------------------------------------------------------------------------------
def test_bad_auth_is_401_with_no_run_and_no_redis_writes(bridge: Harness) -> None:
    body, fingerprint = fresh("grafana_firing.json")
    raw = json.dumps(body).encode()
    keys_before = bridge.our_keys()
    decisions_before = bridge.redis.llen(f"{bridge.prefix}:decisions")
    url = f"{bridge.bridge.url}/webhooks/grafana"
    ts = str(int(time.time()))
    good_sig = sign(bridge.hmac_secret, raw, ts)
    stale_ts = str(int(time.time()) - 3600)
    cases = {
        "no token": {"X-Grafana-Alert-Timestamp": ts, "X-Grafana-Alert-Signature": good_sig},
        "wrong token": {
            "Authorization": "Bearer not-the-token",
            "X-Grafana-Alert-Timestamp": ts,
            "X-Grafana-Alert-Signature": good_sig,
        },
        "bad HMAC": {
            "Authorization": f"Bearer {bridge.token}",
            "X-Grafana-Alert-Timestamp": ts,
            "X-Grafana-Alert-Signature": sign("wrong-secret", raw, ts),
        },
        "stale timestamp": {
            "Authorization": f"Bearer {bridge.token}",
            "X-Grafana-Alert-Timestamp": stale_ts,
            "X-Grafana-Alert-Signature": sign(bridge.hmac_secret, raw, stale_ts),
        },
        "no signature": {"Authorization": f"Bearer {bridge.token}"},
    }
    for name, headers in cases.items():
        r = httpx.post(url, content=raw, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 401, (name, r.text)
    r = httpx.post(
        f"{bridge.bridge.url}/webhooks/alertmanager",
        content=raw,
        headers={"Authorization": "Bearer nope"},
    )
    assert r.status_code == 401
    assert bridge.our_keys() == keys_before
    assert bridge.redis.llen(f"{bridge.prefix}:decisions") == decisions_before
    assert bridge.airflow.runs_for(fingerprint) == []
    unauthorized = metric_total(
        scrape_metrics([bridge.bridge.url]),
        "driftloop_bridge_decisions_total",
        decision="unauthorized",
        source="grafana",
    )
    assert unauthorized >= 5


def _problems(r: httpx.Response) -> list[str]:
    """The shared error body's field problems as ``field: message`` lines."""
    body = r.json()
    assert set(body) == {"error", "message", "detail"}, body
    return [f"{d['field']}: {d['message']}" for d in body["detail"]]


def test_stack_bridge_refuses_bad_auth_and_malformed(stack_bridge: Any) -> None:
    url = f"{stack_bridge.bridge_url}/webhooks/alertmanager"
    raw = json.dumps(fixture_json("alertmanager_resolved.json")).encode()
    assert httpx.post(url, content=raw).status_code == 401
    assert httpx.post(url, content=raw, headers={"Authorization": "Bearer x"}).status_code == 401
    auth = {"Authorization": f"Bearer {stack_bridge.webhook_token}"}
    r = httpx.post(url, content=b"{nope", headers=auth)
    assert r.status_code == 422 and r.json()["error"] == "invalid_payload"
    assert _problems(r) == ["body: not valid JSON"]
    r = httpx.post(url, content=raw, headers=auth)
    assert r.status_code == 202
    assert r.json()["decisions"][0]["decision"] == "resolved"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"alerts": [', "body: not valid JSON"),
        (b"[]", "body: expected an object, got list"),
        (
            json.dumps({"version": "4", "status": "firing", "receiver": "x"}).encode(),
            "alerts: Field required",
        ),
        (
            json.dumps(
                {
                    "alerts": [
                        {
                            "status": "firing",
                            "labels": {"alertname": 1},
                            "startsAt": "2026-01-01T00:00:00Z",
                        }
                    ]
                }
            ).encode(),
            "alerts.0.labels.alertname: Input should be a valid string",
        ),
        (
            json.dumps(
                {"alerts": [{"status": "firing", "labels": {}, "startsAt": 1767225600}]}
            ).encode(),
            "alerts.0.startsAt: Value error, must be an RFC 3339 timestamp string",
        ),
        (
            json.dumps({"alerts": "DriftFeatureHigh"}).encode(),
            "alerts: Input should be a valid list",
        ),
    ],
)
def test_malformed_bodies_are_422_naming_the_problem(
    bridge: Harness, raw: bytes, problem: str
) -> None:
    keys_before = bridge.our_keys()
    r = bridge.post("alertmanager", raw)
    assert r.status_code == 422, r.text
    assert problem in _problems(r), r.json()
    assert bridge.our_keys() == keys_before


# --- outage and restart -----------------------------------------------------------------------
def test_airflow_down_and_bridge_restart_lose_nothing(bridge: Harness) -> None:
    body, fingerprint = fresh("grafana_firing.json")
    stack = bridge.stack
    stack.stop("airflow-api-server")
    try:
        started = time.perf_counter()
        resp = bridge.post("grafana", body)
        elapsed = time.perf_counter() - started
        assert resp.status_code == 202
        (decision,) = resp.json()["decisions"]
        assert decision["decision"] == "queued", decision
        assert elapsed < 5, f"webhook took {elapsed:.2f}s with Airflow down"
        run_id = decision["dag_run_id"]

        bridge.bridge.restart()  # while Airflow is still down
        pending = httpx.get(f"{bridge.bridge.url}/pending").json()["triggers"]
        assert [p["dag_run_id"] for p in pending] == [run_id]
        assert pending[0]["attempts"] >= 1
    finally:
        stack.start("airflow-api-server")
    stack.wait_healthy("airflow-api-server", timeout_s=180)
    poll("the queued run to appear in Airflow", lambda: bridge.airflow.run(run_id), 180, 1.0)
    # The queue forgets the trigger before the decision is recorded: wait for the decision.
    retried = poll(
        "the retry's decision",
        lambda: [
            d for d in bridge.decisions() if d["dag_run_id"] == run_id and d["via"] == "retry"
        ],
        60,
        0.5,
    )
    assert [d["decision"] for d in retried] == ["triggered"]
    assert bridge.pending() == 0
    runs = bridge.airflow.runs_for(fingerprint)
    assert [r["dag_run_id"] for r in runs] == [run_id]


def test_trigger_given_up_while_airflow_is_down_is_released_and_fires_again(
    stack: Any, tmp_path: Path
) -> None:
    """Airflow down past the retry age: the trigger is dead-lettered *and* its claim released.

    A cooldown far longer than the test makes the release visible twice over: without it the
    same alert would be a ``duplicate`` and, were it not, the DAG would still be cooling down.
    """
    h = _start_bridge(
        stack, tmp_path, "release", retry_max_age_seconds="4", cooldown_seconds="3600"
    )
    try:
        body, fingerprint = fresh("grafana_firing.json")
        stack.stop("airflow-api-server")
        try:
            (queued,) = h.post("grafana", body).json()["decisions"]
            assert queued["decision"] == "queued", queued
            run_id = queued["dag_run_id"]
            released = poll(
                "the trigger to be dead-lettered and released",
                lambda: [
                    d
                    for d in h.decisions()
                    if d["dag_run_id"] == run_id and d["decision"] == "released"
                ],
                timeout_s=60,
                every_s=0.5,
            )
            assert [(d["via"], d["outcome"]) for d in released] == [("retry", "max_age")]
            dead = httpx.get(f"{h.bridge.url}/dead-letters", timeout=5).json()["triggers"]
            assert [d["dag_run_id"] for d in dead] == [run_id]
            assert h.redis.exists(f"{h.prefix}:incident:{run_id}") == 0
            assert h.redis.exists(f"{h.prefix}:cooldown:{DAG_ID}") == 0
            assert h.pending() == 0
            scraped = scrape_metrics([h.bridge.url])
            assert metric_total(scraped, "driftloop_bridge_released_total", reason="max_age") == 1
        finally:
            stack.start("airflow-api-server")
        stack.wait_healthy("airflow-api-server", timeout_s=180)

        def fire_again() -> dict[str, Any] | None:
            """The same alert, still firing, re-sent (as Grafana does) until a run exists.

            Airflow just came back and may still answer slowly: a re-send can be queued, or
            even given up and released again (the retry age is 4 s), before one gets through.
            """
            (d,) = h.post("grafana", body).json()["decisions"]
            assert d["dag_run_id"] == run_id, d
            assert d["decision"] in ("triggered", "queued", "duplicate", "dead_letter"), d
            return h.airflow.run(run_id)

        poll("the same alert to trigger a DAG run", fire_again, timeout_s=180, every_s=2.0)
        triggered = poll(
            "the triggered decision",
            lambda: [
                d
                for d in h.decisions()
                if d["dag_run_id"] == run_id and d["decision"] == "triggered"
            ],
            timeout_s=60,
            every_s=0.5,
        )
        assert len(triggered) == 1, triggered
        runs = h.airflow.runs_for(fingerprint)
        assert [r["dag_run_id"] for r in runs] == [run_id]
    finally:
        _cleanup(h)


# --- cooldown ---------------------------------------------------------------------------------
def test_cooldown_suppresses_a_second_incident_inside_the_window_only(
    stack: Any, tmp_path: Path
) -> None:
    window = 6.0
    h = _start_bridge(stack, tmp_path, "cooldown", cooldown_seconds=str(window))
    try:
        first, fp1 = fresh("alertmanager_firing.json", feature="median_income_in_block")
        first["alerts"] = first["alerts"][:1]
        second, fp2 = fresh("alertmanager_firing.json", feature="average_rooms")
        second["alerts"] = second["alerts"][:1]
        opened = time.monotonic()
        (d1,) = h.post("alertmanager", first).json()["decisions"]
        assert d1["decision"] == "triggered", d1
        (d2,) = h.post("alertmanager", second).json()["decisions"]
        assert time.monotonic() - opened < window, "test too slow to land inside the window"
        assert d2["decision"] == "cooldown", d2
        assert h.airflow.runs_for(fp2) == []

        h.airflow.wait_idle()  # the first incident's run ends (skipped) within seconds

        def after_window() -> dict[str, Any] | None:
            (d,) = h.post("alertmanager", second).json()["decisions"]
            return d if d["decision"] != "cooldown" else None

        d3 = poll("the cooldown window to close", after_window, timeout_s=window + 30, every_s=0.5)
        assert time.monotonic() - opened >= window - 0.5
        assert d3["decision"] == "triggered", d3
        assert len(h.airflow.runs_for(fp1)) == 1
        assert len(h.airflow.runs_for(fp2)) == 1
    finally:
        _cleanup(h)


# --- circuit breaker --------------------------------------------------------------------------
def test_brake_stops_triggers_beyond_the_budget_until_the_cli_resets_it(
    stack: Any, tmp_path: Path
) -> None:
    """Budget 1: the second incident is `braked` (no DAG run in Airflow), the brake is
    reported engaged, `driftloop loop reset-brake` releases it, and the same alert then
    triggers its run."""
    from typer.testing import CliRunner

    from driftloop_cli.main import app as cli

    h = _start_bridge(stack, tmp_path, "brake", cooldown_seconds="0", brake_max_triggers="1")
    try:
        first, fp1 = fresh("alertmanager_firing.json", feature="median_income_in_block")
        first["alerts"] = first["alerts"][:1]
        second, fp2 = fresh("alertmanager_firing.json", feature="average_rooms")
        second["alerts"] = second["alerts"][:1]
        (d1,) = h.post("alertmanager", first).json()["decisions"]
        assert d1["decision"] == "triggered", d1
        (d2,) = h.post("alertmanager", second).json()["decisions"]
        assert d2["decision"] == "braked", d2
        assert len(h.airflow.runs_for(fp1)) == 1
        assert h.airflow.runs_for(fp2) == []

        scraped = scrape_metrics([h.bridge.url])
        assert metric_total(scraped, "driftloop_bridge_brake_engaged") == 1
        assert metric_total(scraped, "driftloop_bridge_decisions_total", decision="braked") == 1
        assert h.decisions()[0]["decision"] == "braked"

        runner = CliRunner()
        env = {"DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN": h.token}
        shown = runner.invoke(cli, ["loop", "brake", "--url", h.bridge.url, "--json"], env=env)
        assert shown.exit_code == 0, shown.output
        state = json.loads(shown.stdout)
        assert (state["engaged"], state["triggers_in_window"]) == (True, 1)
        assert state["triggers"][0]["dag_run_id"] == d1["dag_run_id"]

        reset = runner.invoke(cli, ["loop", "reset-brake", "--url", h.bridge.url], env=env)
        assert reset.exit_code == 0, reset.output
        assert metric_total(scrape_metrics([h.bridge.url]), "driftloop_bridge_brake_engaged") == 0

        h.airflow.wait_idle()  # else the answer is run_active (d1's run still ending)
        (d3,) = h.post("alertmanager", second).json()["decisions"]
        assert d3["decision"] == "triggered", d3
        assert len(h.airflow.runs_for(fp2)) == 1
        assert len(h.airflow.runs_for(fp1)) == 1
    finally:
        _cleanup(h)


# --- one retrain per incident -----------------------------------------------------------------
def test_no_second_run_while_one_is_active(stack: Any, tmp_path: Path) -> None:
    """The measured failure: the cooldown ran out while the first run still ran, and a second
    incident started a second run. Here the cooldown is off altogether; the first run waits in
    ``wait_for_regime`` (no labelled rows of its regime will come), so it stays active, and a
    second incident is answered ``run_active`` naming it, with no run created in Airflow.
    Once the first run has ended (skipped by the sensor's bound), the same alert triggers."""
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    for rule in doc["rules"]:
        rule["conf"] = {
            **rule["conf"],
            "min_labelled_rows": 1_000_000_000,
            "min_regime_rows": 1_000_000,
            # long enough for the sensor's first look on a loaded machine, short for the test
            "regime_wait_seconds": 90,
        }
    rules = tmp_path / "rules-wait.yaml"
    rules.write_text(yaml.safe_dump(doc))
    h = _start_bridge(stack, tmp_path, "run-active", cooldown_seconds="0", rules_file=str(rules))
    try:
        first, fp1 = fresh("alertmanager_firing.json", feature="median_income_in_block")
        first["alerts"] = first["alerts"][:1]
        second, fp2 = fresh("alertmanager_firing.json", feature="average_rooms")
        second["alerts"] = second["alerts"][:1]
        (d1,) = h.post("alertmanager", first).json()["decisions"]
        assert d1["decision"] == "triggered", d1
        run1 = d1["dag_run_id"]
        # the DAG is waiting for the incident's regime: the sensor is poking, not failed
        poll(
            "wait_for_regime to be running (poking)",
            lambda: h.airflow.task_states(run1).get("wait_for_regime") == "running",
            timeout_s=90,
            every_s=0.5,
        )
        assert h.airflow.active() == [run1]

        (d2,) = h.post("alertmanager", second).json()["decisions"]
        assert d2["decision"] == "run_active", d2
        assert d2["active_dag_run_id"] == run1
        assert h.airflow.runs_for(fp2) == []
        assert h.decisions(limit=1)[0]["decision"] == "run_active"
        scraped = scrape_metrics([h.bridge.url])
        assert metric_total(scraped, "driftloop_bridge_decisions_total", decision="run_active") == 1
        assert h.pending() == 0
        assert h.redis.exists(f"{h.prefix}:incident:{d2['dag_run_id']}") == 0

        # the first run ends skipped by the bound (no rows of its regime), nothing trained
        h.airflow.wait_idle(timeout_s=240)
        run = h.airflow.run(run1)
        assert run is not None and run["state"] == "success"
        states = h.airflow.task_states(run1)
        assert states["wait_for_regime"] == "skipped", states
        assert states["collect"] == "skipped" and states["train"] == "skipped", states

        # still firing after that: decided afresh, and now it triggers its own run
        (d3,) = h.post("alertmanager", second).json()["decisions"]
        assert d3["decision"] == "triggered", d3
        assert [r["dag_run_id"] for r in h.airflow.runs_for(fp2)] == [d3["dag_run_id"]]
        assert len(h.airflow.runs_for(fp1)) == 1
    finally:
        _cleanup(h)
