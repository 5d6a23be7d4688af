"""The artifact checks of :mod:`driftloop_contracts.model_artifact` on real MLflow/skops files.

Artifacts are written with ``mlflow.sklearn.save_model`` (the same writer ``log_model`` uses),
including the attack the checks exist for: an artifact whose own ``MLmodel`` whitelists a
custom class, or that was saved with pickle.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from driftloop_contracts import FEATURE_NAMES, MODEL_NAME
from driftloop_contracts.model_artifact import (
    ARTIFACT_DIGEST_TAG,
    SKOPS_TRUSTED_TYPES,
    DigestMismatch,
    DigestMissing,
    LegacyPickleArtifact,
    UntrustedArtifact,
    artifact_digest,
    load_verified,
)
from driftloop_training import registry
from driftloop_training.bootstrap import bootstrap
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import ModelParams, build_pipeline


class Passthrough(BaseEstimator, TransformerMixin):
    """A custom step: harmless, but not a type driftloop trusts (any class could be here)."""

    def fit(self, X: Any, y: Any = None) -> Passthrough:
        return self

    def transform(self, X: Any) -> Any:
        return X


PASSTHROUGH = f"{Passthrough.__module__}.{Passthrough.__qualname__}"


def _frame(n: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.uniform(1, 5, size=(n, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    return X, X.iloc[:, 0].to_numpy() * 0.5


def _save(model: Any, path: Path, *, fmt: str = "skops", trusted: list[str] | None = None) -> Path:
    import mlflow.sklearn

    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format=fmt,
        skops_trusted_types=trusted,
        pip_requirements=["scikit-learn"],  # skips MLflow's slow requirement inference
    )
    return path


@pytest.fixture
def pipeline() -> Pipeline:
    X, y = _frame()
    return build_pipeline(ModelParams(max_iter=5, early_stopping=False)).fit(X, y)


def test_our_pipeline_round_trips_with_the_trusted_list(tmp_path: Path, pipeline: Pipeline) -> None:
    path = _save(pipeline, tmp_path / "m", trusted=list(SKOPS_TRUSTED_TYPES))
    model = load_verified(path, artifact_digest(path), where="test")
    X, _ = _frame(5)
    assert np.array_equal(model.predict(X), pipeline.predict(X))


def test_a_custom_class_is_refused_even_when_the_artifact_trusts_it(tmp_path: Path) -> None:
    """The artifact's own MLmodel lists the class as trusted (what an attacker would write);
    the loader uses only SKOPS_TRUSTED_TYPES and names the type it refused."""
    X, y = _frame()
    steps = [("custom", Passthrough()), ("model", build_pipeline(ModelParams(max_iter=5)))]
    model = Pipeline(steps).fit(X, y)
    path = _save(model, tmp_path / "m", trusted=[PASSTHROUGH, *SKOPS_TRUSTED_TYPES])
    assert PASSTHROUGH in (path / "MLmodel").read_text()
    with pytest.raises(UntrustedArtifact) as refused:
        load_verified(path, artifact_digest(path), where="version 9")
    assert refused.value.types == [PASSTHROUGH]
    assert PASSTHROUGH in str(refused.value) and "version 9" in str(refused.value)
    assert refused.value.reason == "untrusted_type"


def test_a_pickled_model_is_refused_with_the_migration_step(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    path = _save(pipeline, tmp_path / "m", fmt="cloudpickle")
    with pytest.raises(LegacyPickleArtifact, match="driftloop bootstrap"):
        load_verified(path, artifact_digest(path), where="version 1")


def test_digest_covers_every_file_but_not_download_metadata(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    path = _save(pipeline, tmp_path / "m", trusted=list(SKOPS_TRUSTED_TYPES))
    digest = artifact_digest(path)
    copy = Path(shutil.copytree(path, tmp_path / "copy"))
    assert artifact_digest(copy) == digest  # location-independent
    (copy / "registered_model_meta").write_text("model_name: x\n")
    assert artifact_digest(copy) == digest
    (copy / "code").mkdir()
    (copy / "code" / "extra.py").write_text("import os\n")
    assert artifact_digest(copy) != digest
    shutil.rmtree(copy / "code")
    assert artifact_digest(copy) == digest
    with (copy / "model.skops").open("ab") as fh:
        fh.write(b"\0")
    assert artifact_digest(copy) != digest


def test_a_changed_or_unrecorded_artifact_is_refused_before_parsing(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    path = _save(pipeline, tmp_path / "m", trusted=list(SKOPS_TRUSTED_TYPES))
    digest = artifact_digest(path)
    with pytest.raises(DigestMissing):
        load_verified(path, None, where="v")
    other = _save(
        build_pipeline(ModelParams(max_iter=7)).fit(*_frame()),
        tmp_path / "other",
        trusted=list(SKOPS_TRUSTED_TYPES),
    )
    shutil.copy(other / "model.skops", path / "model.skops")  # a valid, trusted, other model
    with pytest.raises(DigestMismatch) as refused:
        load_verified(path, digest, where="v")
    assert refused.value.expected == digest and refused.value.reason == "digest_mismatch"


def test_registration_records_the_stored_digest_and_loading_checks_it(
    settings: TrainingSettings, fast: ModelParams
) -> None:
    """Through the registry: the version carries the digest of its stored files; a file
    changed in the artifact store afterwards makes load_model refuse the version."""
    result = bootstrap(settings, sample_rows=500, params=fast)
    uri = settings.mlflow_tracking_uri
    info = registry.get_version(uri, result.version)
    run = registry.client(uri).get_run(result.run_id)
    assert info.tags[ARTIFACT_DIGEST_TAG] == run.data.tags[ARTIFACT_DIGEST_TAG]
    registry.load_model(uri, result.version)  # checks pass

    stored = next((settings.work_dir.parent / "artifacts").rglob("model.skops"))
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(DigestMismatch, match=f"{MODEL_NAME} version {result.version}"):
        registry.load_model(uri, result.version)


def test_bootstrap_replaces_a_pre_skops_champion_which_loading_refuses(
    settings: TrainingSettings, fast: ModelParams, pipeline: Pipeline
) -> None:
    """A champion logged with cloudpickle by an earlier driftloop (no digest): loading it is
    refused with the migration step, and plain bootstrap (no --force) replaces it."""
    import mlflow
    import mlflow.sklearn

    from driftloop_contracts import EXPERIMENT_NAME, MODEL_ARTIFACT_NAME

    uri = settings.mlflow_tracking_uri
    registry.client(uri)
    mlflow.set_experiment(EXPERIMENT_NAME)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name=MODEL_ARTIFACT_NAME,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    old = str(mlflow.register_model(info.model_uri, MODEL_NAME).version)
    registry.set_champion(uri, old)
    with pytest.raises(LegacyPickleArtifact, match="driftloop bootstrap"):
        registry.load_model(uri, old)

    result = bootstrap(settings, sample_rows=500, params=fast)
    assert result.created and result.version != old
    assert f"replacing version {old}, a pre-skops model" in result.message
    champion = registry.get_champion(uri)
    assert champion is not None and champion.version == result.version
    registry.load_model(uri, result.version)
    assert not bootstrap(settings, sample_rows=500, params=fast).created  # idempotent again
