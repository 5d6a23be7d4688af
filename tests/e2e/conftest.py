"""What an end-to-end scenario starts from, whatever ran before it in the shared stack."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from driftloop_cli import observe
from driftloop_cli.demo import endpoints
from driftloop_contracts import MODEL_NAME, ModelPromoted


def _wait(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def _consumer_on(url: str, version: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=5).json().get("model_version") == version
    except (httpx.HTTPError, ValueError):
        return False


@pytest.fixture
def base_champion(stack: Any, champion: str, retrain_runs: Any) -> str:
    """The full bootstrap model serves every replica, with no watch, the drift consumer judges
    against its reference, no DAG run is active and no retraining alert is open.

    Why: a drift scenario assumes its steady traffic matches the champion. After an earlier
    test's loop the champion was retrained on that test's drifted regime: the steady traffic
    would then be the drift, and the scenario's own drift a return to the champion's regime,
    which raises no alert at all (seen: the settle e2e after the closed loop).
    """
    from driftloop_training import registry
    from driftloop_training.bootstrap import full_bootstrap_version
    from driftloop_training.publisher import publish_model_promoted

    retrain_runs.end_active("a drift scenario starts with the DAG idle")
    training = stack.training_settings()
    uri = training.mlflow_tracking_uri
    version = full_bootstrap_version(training)
    registry.end_watch(uri)
    current = registry.get_champion(uri)
    if current is None or current.version != version:
        registry.set_champion(uri, version)
        publish_model_promoted(
            training.kafka_bootstrap,
            ModelPromoted(
                model_name=MODEL_NAME,
                version=version,
                run_id=registry.get_version(uri, version).run_id,
                reason="e2e setup: the full bootstrap model, no watch",
            ),
        )
    _wait(
        f"every replica on {version} without a shadow",
        lambda: set(observe.replica_watch_states(stack.model_api_urls)) == {(version, None)},
        120,
    )
    _wait(
        f"the drift consumer's reference at {version}",
        lambda: _consumer_on(stack.drift_consumer_url, version),
        120,
    )
    ep = endpoints(stack.settings)
    _wait("no retraining alert active", lambda: observe.active_retrain_alerts(ep) == [], 180)
    return version
