"""Fixtures for cross-service tests: the real local stack, started once per session.

The stack runs on the test port plan (base 28000, state in .driftloop-test/) so it never
collides with a developer's own stack. If it is already up (another run keeps it), it is reused
and left running; otherwise it is started here from an empty state directory and stopped at the
end, and the teardown fails if any of its processes outlives `down`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from driftloop_cli import stack as stack_ops
from driftloop_cli import supervisor
from driftloop_cli.settings import REPO_ROOT, StackSettings
from driftloop_contracts import TEST_BASE_PORT, PortPlan

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


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    s = StackSettings(
        base_port=int(os.environ.get("DRIFTLOOP_TEST_BASE_PORT", TEST_BASE_PORT)),
        state_dir=REPO_ROOT / ".driftloop-test",
        scikit_learn_data=SHARED_DATA,
    ).resolved()
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
def champion(stack: StackInfo) -> str:
    """The registered champion's version (bootstrapped once if the registry has none)."""
    from driftloop_training.bootstrap import bootstrap
    from driftloop_training.settings import TrainingSettings

    result = bootstrap(
        TrainingSettings(
            mlflow_tracking_uri=stack.mlflow_url,
            kafka_bootstrap=stack.kafka_bootstrap,
            labelled_log_dir=stack.state_dir / "labelled",
            work_dir=stack.state_dir / "work",
        )
    )
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
