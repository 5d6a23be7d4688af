"""Fixtures for cross-service tests: the real local stack, started once per session.

The stack runs on the test port plan (base 28000, state in .driftloop-test/) so it never
collides with a developer's own stack. If it is already up (another run keeps it), it is reused
and left running; otherwise it is started here from an empty state directory and stopped at the
end, and the teardown fails if any of its processes outlives `down`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop_cli import stack as stack_ops
from driftloop_cli import supervisor
from driftloop_cli.settings import REPO_ROOT, StackSettings
from driftloop_contracts import DAG_ID, TEST_BASE_PORT, PortPlan

SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "scikit_learn_data"
os.environ.setdefault("SCIKIT_LEARN_DATA", str(SHARED_DATA))
# The suite's stack bridge sees many incidents within an hour by design (every drift test makes
# one); the retraining brake (2 per hour by default) would brake the later ones. The brake has
# its own tests on a bridge of their own (tests/integration/test_bridge.py, services/bridge).
os.environ.setdefault("DRIFTLOOP_BRIDGE_BRAKE_MAX_TRIGGERS", "0")


@dataclass
class StackInfo:
    settings: StackSettings
    ports: PortPlan
    state_dir: Path
    kafka_bootstrap: str
    redis_url: str
    influx_url: str
    influx_db: str
    prometheus_url: str
    alertmanager_url: str
    mlflow_url: str
    airflow_url: str
    airflow_username: str
    airflow_password: str
    nginx_url: str
    model_api_urls: list[str]
    drift_consumer_url: str
    bridge_url: str
    webhook_token: str
    started_pids: list[int] = field(default_factory=list)

    def training_settings(self) -> Any:
        """The training package's settings as the stack gives them to the DAG's tasks (the
        same registry, broker and labelled-data log)."""
        from driftloop_training.settings import TrainingSettings

        return TrainingSettings(
            mlflow_tracking_uri=self.mlflow_url,
            kafka_bootstrap=self.kafka_bootstrap,
            labelled_log_dir=self.state_dir / "labelled",
            work_dir=self.state_dir / "work",
        )

    def stop(self, program: str) -> None:
        supervisor.control(self.settings, "stop", program)

    def start(self, program: str) -> None:
        supervisor.control(self.settings, "start", program)

    def restart(self, program: str) -> None:
        supervisor.control(self.settings, "restart", program)

    def wait_healthy(self, *programs: str, timeout_s: float = 120) -> None:
        """Poll until the named programs (default: all) report healthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = stack_ops.status(self.settings)
            bad = [s for s in statuses if (not programs or s.name in programs) and not s.healthy]
            if not bad:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not healthy in {timeout_s}s: {[(b.name, b.detail) for b in bad]}"
                )
            time.sleep(0.5)


def make_info(s: StackSettings) -> StackInfo:
    urls = s.urls
    return StackInfo(
        settings=s,
        ports=s.ports,
        state_dir=s.state_dir,
        kafka_bootstrap=urls.kafka,
        redis_url=urls.redis,
        influx_url=urls.influxdb,
        influx_db=s.influx_db,
        prometheus_url=urls.prometheus,
        alertmanager_url=urls.alertmanager,
        mlflow_url=urls.mlflow,
        airflow_url=urls.airflow,
        airflow_username=s.airflow_username,
        airflow_password=s.airflow_password.get_secret_value(),
        nginx_url=urls.nginx,
        model_api_urls=urls.model_apis(s.replicas),
        drift_consumer_url=urls.drift_consumer,
        bridge_url=urls.bridge,
        webhook_token=s.bridge_webhook_token.get_secret_value(),
    )


def _alive(pid: int) -> bool:
    return supervisor._alive(pid)


@contextlib.contextmanager
def running_stack(s: StackSettings) -> Iterator[StackInfo]:
    """The stack laid out by ``s`` (resolved), up for the ``with`` body.

    If it is already up (another run keeps it), it is reused and left running; otherwise it is
    started from an empty state directory and stopped at the end, and the exit fails if any of
    its processes outlives `down`. One code path for the session's stack and for a module's own
    (another replica count, base port and state directory: tests/integration/test_four_replicas.py).
    """
    reused = supervisor.is_running(s)
    if not reused and s.state_dir.exists():
        # Start from nothing: an earlier session's registry, labelled log and retrained
        # champions (whose profiles already contain drifted rows) would change what the
        # tests measure, so a second `make test` would not test what the first one did.
        shutil.rmtree(s.state_dir)
    try:
        statuses = stack_ops.up(s)
    except BaseException:
        # A stack that did not come up in time is still half running: stop what did start, or
        # it outlives the run (and a second run would reuse a broken stack).
        if not reused:
            stack_ops.down(s)
        raise
    info = make_info(s)
    info.started_pids = [st.pid for st in statuses if st.pid]
    yield info
    if reused or os.environ.get("DRIFTLOOP_TEST_KEEP_STACK"):
        return
    stack_ops.down(s)
    deadline = time.monotonic() + 30
    while (
        alive := [pid for pid in info.started_pids if _alive(pid)]
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"processes still alive after `driftloop down`: {alive}"


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    s = StackSettings(
        base_port=int(os.environ.get("DRIFTLOOP_TEST_BASE_PORT", TEST_BASE_PORT)),
        state_dir=REPO_ROOT / ".driftloop-test",
        scikit_learn_data=SHARED_DATA,
    ).resolved()
    with running_stack(s) as info:
        yield info


@pytest.fixture(scope="session")
def start_stack() -> Callable[[StackSettings], AbstractContextManager[StackInfo]]:
    """:func:`running_stack`, for a module that needs a stack of its own, started and stopped
    exactly as the session's is (a fixture, because test modules do not import conftest)."""
    return running_stack


@pytest.fixture(scope="session")
def champion(stack: StackInfo) -> str:
    """The registered champion's version (bootstrapped once if the registry has none)."""
    from driftloop_training.bootstrap import bootstrap

    result = bootstrap(stack.training_settings())
    return str(result.version)


@pytest.fixture(scope="session")
def driftloop(stack: StackInfo):
    """Run the real `driftloop` command against the test stack; returns the completed process."""
    import subprocess
    import sys

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "driftloop_cli.main",
                "--base-port",
                str(stack.ports.base),
                "--state-dir",
                str(stack.state_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )

    return run


class RetrainRuns:
    """The retraining DAG's runs in the stack's Airflow, as the tests that need it idle see them.

    The suite's stack is shared: a drift test's traffic may leave an alert firing, and the
    stack's bridge then triggers a run that waits up to ``regime_wait_seconds`` for rows of its
    regime. While it waits the bridge answers ``run_active`` to every other incident and, with
    ``max_active_runs=1``, a test's own trigger queues behind it. A test that needs its own run
    therefore ends the runs it did not start (state ``failed``, with a note) instead of waiting
    them out.
    """

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self._auth = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        r: httpx.Response | None = None
        for _ in range(2):
            if self._token is None:
                t = httpx.post(f"{self.url}/auth/token", json=self._auth, timeout=30)
                self._token = t.raise_for_status().json()["access_token"]
            r = httpx.request(
                method,
                f"{self.url}/api/v2/dags/{DAG_ID}{path}",
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=30,
                **kwargs,  # type: ignore[arg-type]
            )
            if r.status_code not in (401, 403):
                return r
            self._token = None
        assert r is not None
        return r

    def active(self) -> list[str]:
        """Run ids of the DAG that are queued or running."""
        r = self._request("GET", "/dagRuns", params={"state": ["queued", "running"], "limit": 100})
        if r.status_code == 404:  # the DAG is not parsed yet: nothing of it can run
            return []
        r.raise_for_status()
        return [run["dag_run_id"] for run in r.json()["dag_runs"]]

    def end_active(self, why: str, timeout_s: float = 60) -> list[str]:
        """Mark every queued or running run failed and wait until none is active."""
        ended: list[str] = []
        deadline = time.monotonic() + timeout_s
        while active := self.active():
            for run_id in active:
                r = self._request(
                    "PATCH",
                    f"/dagRuns/{run_id}",
                    json={"state": "failed", "note": f"ended by the test suite: {why}"},
                )
                if r.status_code != 404:  # it may have ended on its own meanwhile
                    r.raise_for_status()
                ended.append(run_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"runs of {DAG_ID} still active after {timeout_s}s: {active}")
            time.sleep(0.5)
        return ended

    @contextlib.contextmanager
    def held(self, why: str, parse_timeout_s: float = 120) -> Iterator[None]:
        """The DAG paused and no run of it active for the ``with`` body; afterwards every run
        left queued is deleted and the DAG unpaused (also when the body failed).

        A test that moves the champion by hand makes the stack's monitoring see a new model
        (a new reference, other predictions): its drift alerts may fire and the bridge trigger
        a run, whose promotion would move the champion under the test (seen in CI: a replica
        state that never came). Airflow still accepts a trigger for a paused DAG, the run waits
        queued, which is all an alert-path test must prove; deleting those runs before the
        unpause keeps them from running later, in another test.
        """
        deadline = time.monotonic() + parse_timeout_s
        while (r := self._request("GET", "")).status_code == 404:
            if time.monotonic() > deadline:
                raise AssertionError(f"DAG {DAG_ID} not parsed by Airflow after {parse_timeout_s}s")
            time.sleep(1.0)
        r.raise_for_status()
        self._request("PATCH", "", json={"is_paused": True}).raise_for_status()
        try:
            self.end_active(why)
            yield
        finally:
            queued = self._request("GET", "/dagRuns", params={"state": ["queued"], "limit": 100})
            for run in queued.raise_for_status().json()["dag_runs"]:
                deleted = self._request("DELETE", f"/dagRuns/{run['dag_run_id']}")
                if deleted.status_code != 404:
                    deleted.raise_for_status()
            # Checked while still paused: once unpaused, a firing alert may legitimately start
            # a new run at any moment, which is not a run the hold left behind.
            assert self.active() == [], "a run of the held DAG is still active after the hold"
            self._request("PATCH", "", json={"is_paused": False}).raise_for_status()
            assert self._request("GET", "").raise_for_status().json()["is_paused"] is False


@pytest.fixture(scope="session")
def retrain_runs(stack: StackInfo) -> RetrainRuns:
    return RetrainRuns(stack.airflow_url, stack.airflow_username, stack.airflow_password)


@pytest.fixture
def retraining_held(retrain_runs: RetrainRuns) -> Iterator[None]:
    """The retraining DAG paused for the test, with no run active (:meth:`RetrainRuns.held`)."""
    with retrain_runs.held("the test moves the champion itself"):
        yield
