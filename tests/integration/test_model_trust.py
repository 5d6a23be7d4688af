"""Who can steer what the replicas serve, tried against the real stack (MLflow, Tansu, replicas,
drift consumer): an artifact needing an untrusted type, an artifact changed in the artifact
store after registration, and a forged ModelPromoted naming a version that is not champion.

Each attack is made the way an attacker with that access would make it (MLflow's own client,
files in the artifact store, the real broker); each must leave every replica serving the
champion and raise the counter that says why.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    EXPERIMENT_NAME,
    FEATURE_NAMES,
    MODEL_ARTIFACT_NAME,
    MODEL_NAME,
    TARGET_NAME,
    ModelPromoted,
)
from driftloop_contracts.model_artifact import (
    ARTIFACT_DIGEST_TAG,
    MODEL_DATA_FILE,
    SKOPS_TRUSTED_TYPES,
    artifact_digest,
)

pytestmark = pytest.mark.integration

#: Seconds for every replica to have reacted to an event (load attempted, or event judged).
REACTION_DEADLINE_S = 30.0


class Passthrough(BaseEstimator, TransformerMixin):
    """A custom pipeline step. Harmless here, but a class like it runs code on load: skops
    must refuse it unless driftloop's own list trusts it."""

    def fit(self, X: Any, y: Any = None) -> Passthrough:
        return self

    def transform(self, X: Any) -> Any:
        return X


PASSTHROUGH = f"{Passthrough.__module__}.{Passthrough.__qualname__}"


# --- helpers ----------------------------------------------------------------------------------


def counter(url: str, name: str, **labels: str) -> float:
    """One sample of ``url``/metrics (summed over series matching ``labels``; 0 if absent)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and set(labels.items()) <= set(sample.labels.items()):
                total += sample.value
    return total


def served(urls: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for url in urls:
        try:
            out.append(httpx.get(f"{url}/model", timeout=5).json().get("model_version"))
        except (httpx.HTTPError, ValueError):
            out.append(None)
    return out


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def small_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {name: rng.uniform(1.0, 5.0, 300) for name in FEATURE_NAMES}, columns=list(FEATURE_NAMES)
    )
    frame[TARGET_NAME] = frame.iloc[:, 0] * 0.4 + rng.normal(0, 0.1, 300)
    return frame


def register_valid_version(stack: Any, seed: int) -> tuple[str, str, str]:
    """A version logged and registered the normal way (skops, digest), alias untouched.
    Returns (version, run id, logged model id)."""
    from driftloop_training import registry
    from driftloop_training.profile import compute_profile
    from driftloop_training.train import ModelParams, features_of, fit_model, predict_usd

    frame = small_frame(seed)
    model = fit_model(frame, params=ModelParams(max_iter=10, random_state=seed))
    logged = registry.log_model_run(
        stack.mlflow_url,
        model=model,
        features=features_of(frame),
        profile=compute_profile(features_of(frame), predict_usd(model, frame)),
        run_name=f"trust-test-{seed}",
    )
    info = registry.register_version(
        stack.mlflow_url, run_id=logged.run_id, model_uri=logged.model_uri
    )
    return info.version, logged.run_id, logged.model_uri.removeprefix("models:/")


def register_untrusted_version(stack: Any) -> str:
    """What someone with write access to MLflow can do without driftloop's code: log a pipeline
    with a custom class whose own MLmodel trusts it, register it with a *correct* digest (so
    only the type check stands in the way)."""
    import mlflow
    import mlflow.artifacts
    import mlflow.sklearn

    from driftloop_training import registry

    frame = small_frame(7)
    features = frame.loc[:, list(FEATURE_NAMES)]
    from driftloop_training.train import ModelParams, build_pipeline

    model = Pipeline(
        [("custom", Passthrough()), ("model", build_pipeline(ModelParams(max_iter=5)))]
    ).fit(features, frame[TARGET_NAME])
    c = registry.client(stack.mlflow_url)
    mlflow.set_experiment(EXPERIMENT_NAME)
    with mlflow.start_run(run_name="trust-test-untrusted"):
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT_NAME,
            serialization_format="skops",
            skops_trusted_types=[PASSTHROUGH, *SKOPS_TRUSTED_TYPES],
            pip_requirements=["scikit-learn"],
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)
        digest = artifact_digest(Path(local))
    mv = mlflow.register_model(info.model_uri, MODEL_NAME)
    c.set_model_version_tag(MODEL_NAME, str(mv.version), ARTIFACT_DIGEST_TAG, digest)
    return str(mv.version)


def promote(stack: Any, version: str, *, move_alias: bool, reason: str) -> None:
    """Optionally move the alias (registry write access), then announce on the real broker."""
    from driftloop_training import registry
    from driftloop_training.publisher import publish_model_promoted

    if move_alias:
        registry.set_champion(stack.mlflow_url, version)
    publish_model_promoted(
        stack.kafka_bootstrap,
        ModelPromoted(model_name=MODEL_NAME, version=version, run_id="forged", reason=reason),
    )


@pytest.fixture
def serving(stack: Any, champion: str, retrain_runs: Any) -> Iterator[str]:
    """No DAG run active (one would promote mid-test) and every replica serving the champion
    before the test; afterwards the alias is put back on it (the tests move it) and every
    replica still serves it."""
    from driftloop_training import registry

    retrain_runs.end_active("the model trust tests need the champion to stay put")
    before = registry.get_champion(stack.mlflow_url)
    assert before is not None
    wait_until(
        lambda: served(stack.model_api_urls) == [before.version] * len(stack.model_api_urls),
        120,
        f"every replica serving version {before.version}",
    )
    yield before.version
    registry.set_champion(stack.mlflow_url, before.version)
    assert served(stack.model_api_urls) == [before.version] * len(stack.model_api_urls)


def assert_still_serving(stack: Any, version: str) -> None:
    assert served(stack.model_api_urls) == [version] * len(stack.model_api_urls)
    response = httpx.post(f"{stack.nginx_url}/predict", json=EXAMPLE_FEATURES, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == version


def wait_for_rise(urls: list[str], name: str, before: list[float], **labels: str) -> list[float]:
    """Poll until ``name`` rose on every url; returns the new values."""
    now: list[float] = list(before)

    def risen() -> bool:
        now[:] = [counter(u, name, **labels) for u in urls]
        return all(n > b for n, b in zip(now, before, strict=True))

    wait_until(risen, REACTION_DEADLINE_S, f"{name}{labels} to rise on {urls}")
    return now


# --- tests ------------------------------------------------------------------------------------


def test_an_artifact_needing_an_untrusted_type_is_refused_and_the_champion_keeps_serving(
    stack: Any, serving: str
) -> None:
    """The alias is moved to a version whose pipeline holds a custom class (its MLmodel trusts
    it, its digest is right): every replica refuses it by name, counts
    ``driftloop_model_load_failures_total{reason="untrusted_type"}``, and keeps serving."""
    urls = stack.model_api_urls
    failures = "driftloop_model_load_failures_total"
    before = [counter(u, failures, reason="untrusted_type") for u in urls]
    bad = register_untrusted_version(stack)
    promote(stack, bad, move_alias=True, reason="trust test: untrusted type")
    after = wait_for_rise(urls, failures, before, reason="untrusted_type")
    assert_still_serving(stack, serving)
    assert all(counter(u, "driftloop_model_info", model_version=bad) == 0 for u in urls)
    print(f"untrusted type {PASSTHROUGH}: refused on {len(urls)} replicas {before} -> {after}")


def test_an_artifact_changed_in_the_store_after_registration_is_refused(
    stack: Any, serving: str
) -> None:
    """A version registered the normal way, then its model.skops replaced in the artifact store
    by another valid, trusted model (the champion's): only the digest can tell. Every replica
    refuses it (``reason="digest_mismatch"``) and keeps serving."""
    urls = stack.model_api_urls
    failures = "driftloop_model_load_failures_total"
    before = [counter(u, failures, reason="digest_mismatch") for u in urls]
    version, _, model_id = register_valid_version(stack, seed=31)
    store = stack.state_dir / "mlflow" / "artifacts"
    targets = [p for p in store.rglob(MODEL_DATA_FILE) if model_id in p.parts]
    assert len(targets) == 1, targets
    donor = next(p for p in store.rglob(MODEL_DATA_FILE) if model_id not in p.parts)
    shutil.copyfile(donor, targets[0])
    promote(stack, version, move_alias=True, reason="trust test: tampered artifact")
    after = wait_for_rise(urls, failures, before, reason="digest_mismatch")
    assert_still_serving(stack, serving)
    print(f"tampered version {version}: refused on {len(urls)} replicas {before} -> {after}")


def test_a_forged_promotion_of_a_non_champion_is_counted_and_ignored(
    stack: Any, serving: str
) -> None:
    """A valid version exists (a rejected challenger, say) but the alias stays on the champion;
    a ModelPromoted naming it is produced on the real broker. Every replica and the drift
    consumer count it as ``not_champion``; nobody loads it."""
    urls = stack.model_api_urls
    ignored = "driftloop_model_events_ignored_total"
    readers = [*urls, stack.drift_consumer_url]
    before = [counter(u, ignored, reason="not_champion") for u in readers]
    challenger, _, _ = register_valid_version(stack, seed=41)
    promote(stack, challenger, move_alias=False, reason="trust test: forged promotion")
    after = wait_for_rise(readers, ignored, before, reason="not_champion")
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0] * len(readers)
    assert_still_serving(stack, serving)
    assert all(counter(u, "driftloop_model_info", model_version=challenger) == 0 for u in urls)
    print(f"forged promotion of {challenger}: ignored by {len(readers)} readers")
