"""MLflow operations: log a trained model with its profile, register it, move the champion alias,
and load a version's model and reference profile back.

Layout of what a model version carries (the drift consumer and the model API rely on it):

- the run logs the model at ``MODEL_ARTIFACT_NAME`` (sklearn flavour, **skops**, with a
  signature and an input example) and the profile JSON at ``PROFILE_ARTIFACT_PATH``;
- the run's metrics ``HOLDOUT_RMSE_METRIC`` / ``HOLDOUT_MAE_METRIC`` / ``HOLDOUT_R2_METRIC`` score
  the model on its holdout in USD;
- the run, and every version registered from it, carry the tag ``ARTIFACT_DIGEST_TAG``: the
  sha256 of the model's files as stored, computed from a download right after logging;
- the registered model ``MODEL_NAME`` has the alias ``CHAMPION_ALIAS`` on the served version;
  during the watch after a promotion (:func:`promote`) also ``SHADOW_ALIAS`` on the previous
  champion, and the new champion carries ``WATCH_UNTIL_TAG`` (when the watch ends).

Serialisation: skops with the trusted types of :mod:`driftloop_contracts.model_artifact`
(the one definition). Logging passes them to MLflow, which test-loads the file with them
before it uploads anything (a pipeline needing another type fails here, at training time);
loading never goes through ``mlflow.sklearn.load_model`` (it would take the types and the
format from the artifact itself) but through :func:`driftloop_contracts.model_artifact.load_verified`,
which checks the digest first. No pickle, no cloudpickle, no pyfunc.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftloop_contracts import (
    CHAMPION_ALIAS,
    EXPERIMENT_NAME,
    HOLDOUT_RMSE_METRIC,
    MODEL_ARTIFACT_NAME,
    MODEL_NAME,
    PROFILE_ARTIFACT_PATH,
    SHADOW_ALIAS,
    WATCH_UNTIL_TAG,
    ReferenceProfile,
    format_watch_until,
    utcnow,
)
from driftloop_contracts.model_artifact import (
    ARTIFACT_DIGEST_TAG,
    SERIALIZATION_FORMAT,
    SKOPS_TRUSTED_TYPES,
    artifact_digest,
    load_verified,
)

from .errors import RegistryError

if TYPE_CHECKING:  # mlflow is imported on first use: it is slow to import
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

#: Tag keys written by this package (on runs and model versions).
TAG_ROLE = "driftloop.role"
TAG_RUN_KEY = "driftloop.run_key"
TAG_MODEL_URI = "driftloop.model_uri"
TAG_DECISION = "driftloop.decision"
#: The Airflow run that trained a challenger: on its MLflow run, copied onto its version.
TAG_DAG_RUN_ID = "driftloop.dag_run_id"
_MAX_TAG_CHARS = 5000
#: MLflow error codes meaning "no such alias / registered model" (they vary by version).
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
_MAX_PARAM_CHARS = 500


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_uri: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str | None:
        """The model artifact's sha256 recorded on the run (``None`` on pre-skops runs)."""
        return self.tags.get(ARTIFACT_DIGEST_TAG)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version of :data:`MODEL_NAME`."""

    version: str
    run_id: str
    source: str
    tags: dict[str, str]
    holdout_rmse_usd: float | None = None


def client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` (also the registry), set as the process default.

    The fluent API (``start_run``, ``log_model``) reads the process default; each public
    function here sets it from its argument, so callers never depend on ambient state.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def _registry_errors(action: str) -> Iterator[None]:
    """Turn MLflow/HTTP failures into :class:`RegistryError` naming what was attempted."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"MLflow failed to {action}: {exc.message}") from exc
    except OSError as exc:  # requests' ConnectionError is an OSError
        raise RegistryError(f"MLflow unreachable while trying to {action}: {exc}") from exc


def _clip(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pip_requirements() -> list[str]:
    """Explicit requirements, so MLflow does not export the whole workspace lock into them."""
    import numpy
    import sklearn
    import skops

    return [
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pd.__version__}",
        f"skops=={skops.__version__}",
    ]


def log_model_run(
    tracking_uri: str,
    *,
    model: Any,
    features: pd.DataFrame,
    profile: ReferenceProfile,
    run_name: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, Any] | None = None,
    json_artifacts: dict[str, Any] | None = None,
) -> LoggedModel:
    """Log one trained model as a finished run of :data:`EXPERIMENT_NAME`.

    ``features`` (the training inputs) provide the signature and a five-row input example.
    ``json_artifacts`` maps artifact file names to JSON-serialisable content (lineage, trigger).
    """
    import mlflow
    from mlflow.models import infer_signature

    client(tracking_uri)
    example = features.head(5)
    signature = infer_signature(example, model.predict(example))
    with _registry_errors("log the training run"):
        mlflow.set_experiment(EXPERIMENT_NAME)
        with mlflow.start_run(run_name=run_name) as run:
            if tags:
                mlflow.set_tags({k: _clip(v, _MAX_TAG_CHARS) for k, v in tags.items()})
            if params:
                mlflow.log_params({k: _clip(v, _MAX_PARAM_CHARS) for k, v in params.items()})
            if metrics:
                mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                files = {PROFILE_ARTIFACT_PATH: profile.model_dump(mode="json")}
                files.update(json_artifacts or {})
                for name, content in files.items():
                    path = Path(tmp) / name
                    path.write_text(json.dumps(content, indent=1, default=str))
                    mlflow.log_artifact(str(path))
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_ARTIFACT_NAME,
                serialization_format=SERIALIZATION_FORMAT,
                skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
            )
            digest = _stored_digest(tracking_uri, info.model_uri)
            # The digest before the model URI: find_run reuses only runs with both.
            mlflow.set_tags({ARTIFACT_DIGEST_TAG: digest, TAG_MODEL_URI: info.model_uri})
    return LoggedModel(
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        tags={ARTIFACT_DIGEST_TAG: digest, TAG_MODEL_URI: info.model_uri},
    )


def _stored_digest(tracking_uri: str, model_uri: str) -> str:
    """The digest of the model's files as the artifact store holds them (downloaded back, so
    what is recorded is what loaders will fetch, not what this process meant to upload)."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
        )
        return artifact_digest(Path(local))


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Add metrics to a finished run (evaluation happens in a later task than training)."""
    c = client(tracking_uri)
    with _registry_errors(f"log metrics on run {run_id}"):
        for key, value in metrics.items():
            c.log_metric(run_id, key, float(value))


def set_run_tags(tracking_uri: str, run_id: str, tags: dict[str, Any]) -> None:
    c = client(tracking_uri)
    with _registry_errors(f"tag run {run_id}"):
        for key, value in tags.items():
            c.set_tag(run_id, key, _clip(value, _MAX_TAG_CHARS))


def find_run(tracking_uri: str, tags: dict[str, str]) -> LoggedModel | None:
    """The newest finished run with all ``tags`` and a logged model, if any.

    Lets a retried task reuse the run its first attempt completed instead of logging a twin.
    """
    c = client(tracking_uri)
    with _registry_errors("search runs"):
        experiment = c.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            return None
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        clauses.append("attributes.status = 'FINISHED'")
        runs = c.search_runs(
            [experiment.experiment_id],
            filter_string=" and ".join(clauses),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    for run in runs:
        model_uri = run.data.tags.get(TAG_MODEL_URI)
        if model_uri and run.data.tags.get(ARTIFACT_DIGEST_TAG):
            return LoggedModel(run_id=run.info.run_id, model_uri=model_uri, tags=run.data.tags)
    return None


def _version_info(c: MlflowClient, mv: ModelVersion) -> VersionInfo:
    rmse: float | None = None
    if mv.run_id:
        try:
            rmse = c.get_run(mv.run_id).data.metrics.get(HOLDOUT_RMSE_METRIC)
        except Exception:  # a deleted run must not hide the version
            rmse = None
    return VersionInfo(
        version=str(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        tags=dict(mv.tags or {}),
        holdout_rmse_usd=rmse,
    )


def register_version(
    tracking_uri: str, *, run_id: str, model_uri: str, tags: dict[str, Any] | None = None
) -> VersionInfo:
    """Register the run's model as a new version of :data:`MODEL_NAME` (once per run).

    If a version already exists for ``run_id`` (a retried task) it is returned instead. The
    version gets the run's :data:`ARTIFACT_DIGEST_TAG`, which every loader checks; a run
    without one (logged before skops, or not by :func:`log_model_run`) is not registered.
    """
    import mlflow

    c = client(tracking_uri)
    with _registry_errors(f"register the model of run {run_id}"):
        run_tags = c.get_run(run_id).data.tags
        digest = run_tags.get(ARTIFACT_DIGEST_TAG)
        if not digest:
            raise RegistryError(
                f"run {run_id} has no {ARTIFACT_DIGEST_TAG} tag: only models logged by "
                "log_model_run (skops, digest recorded) are registered"
            )
        existing = c.search_model_versions(f"name = '{MODEL_NAME}' and run_id = '{run_id}'")
        if existing:
            mv = max(existing, key=lambda v: int(v.version))
        else:
            mv = mlflow.register_model(model_uri, MODEL_NAME)
        c.set_model_version_tag(MODEL_NAME, str(mv.version), ARTIFACT_DIGEST_TAG, digest)
        if run_tags.get(TAG_DAG_RUN_ID):  # the version names the DAG run that made it
            c.set_model_version_tag(
                MODEL_NAME, str(mv.version), TAG_DAG_RUN_ID, run_tags[TAG_DAG_RUN_ID]
            )
        for key, value in (tags or {}).items():
            c.set_model_version_tag(MODEL_NAME, str(mv.version), key, _clip(value, _MAX_TAG_CHARS))
        return _version_info(c, c.get_model_version(MODEL_NAME, str(mv.version)))


def tag_version(tracking_uri: str, version: str, tags: dict[str, Any]) -> None:
    c = client(tracking_uri)
    with _registry_errors(f"tag version {version}"):
        for key, value in tags.items():
            c.set_model_version_tag(MODEL_NAME, version, key, _clip(value, _MAX_TAG_CHARS))


def get_version(tracking_uri: str, version: str) -> VersionInfo:
    c = client(tracking_uri)
    with _registry_errors(f"read version {version}"):
        return _version_info(c, c.get_model_version(MODEL_NAME, version))


def get_champion(tracking_uri: str) -> VersionInfo | None:
    """The version that alias :data:`CHAMPION_ALIAS` points at, or ``None`` if there is none."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        mv = c.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return None
        raise RegistryError(f"MLflow failed to read the champion alias: {exc.message}") from exc
    except OSError as exc:
        raise RegistryError(f"MLflow unreachable while reading the champion: {exc}") from exc
    with _registry_errors("read the champion version"):
        return _version_info(c, mv)


def search_versions(tracking_uri: str, tags: dict[str, str]) -> list[VersionInfo]:
    """Versions of :data:`MODEL_NAME` carrying all ``tags``, oldest first."""
    c = client(tracking_uri)
    clauses = [f"name = '{MODEL_NAME}'", *(f"tags.`{k}` = '{v}'" for k, v in tags.items())]
    with _registry_errors("search model versions"):
        found = c.search_model_versions(" and ".join(clauses))
        return [_version_info(c, mv) for mv in sorted(found, key=lambda mv: int(mv.version))]


def set_champion(tracking_uri: str, version: str) -> None:
    """Point :data:`CHAMPION_ALIAS` at ``version`` (moving it if it pointed elsewhere)."""
    c = client(tracking_uri)
    with _registry_errors(f"move alias {CHAMPION_ALIAS} to version {version}"):
        c.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)


def promote(tracking_uri: str, version: str, *, previous: str | None, watch_s: float) -> str | None:
    """Make ``version`` the champion and start its watch; returns the watch's end (tag value).

    With a ``previous`` champion and ``watch_s > 0``: tag ``version`` with
    :data:`WATCH_UNTIL_TAG` (now + ``watch_s``), point :data:`SHADOW_ALIAS` at ``previous``,
    then move :data:`CHAMPION_ALIAS`. In that order, so a replica that sees the new champion
    always finds its shadow too, and a retried call repeats the same steps. Otherwise (first
    champion, watch disabled) a shadow alias left by an earlier watch is removed, since it
    would name a version that is no longer the previous champion.
    """
    c = client(tracking_uri)
    if previous is None or previous == version or watch_s <= 0:
        set_champion(tracking_uri, version)
        end_watch(tracking_uri)
        return None
    until = format_watch_until(utcnow() + timedelta(seconds=watch_s))
    with _registry_errors(f"start the watch of version {version}"):
        c.set_model_version_tag(MODEL_NAME, version, WATCH_UNTIL_TAG, until)
        c.set_registered_model_alias(MODEL_NAME, SHADOW_ALIAS, previous)
    set_champion(tracking_uri, version)
    return until


def end_watch(tracking_uri: str) -> bool:
    """Remove :data:`SHADOW_ALIAS` (replicas drop the shadow on their next alias check);
    returns whether it existed."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    with _registry_errors(f"remove alias {SHADOW_ALIAS}"):
        try:
            c.get_model_version_by_alias(MODEL_NAME, SHADOW_ALIAS)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return False
            raise
        c.delete_registered_model_alias(MODEL_NAME, SHADOW_ALIAS)
    return True


def load_model(tracking_uri: str, version: str) -> Any:
    """The fitted scikit-learn pipeline of one version (predicts in 100,000 USD).

    Load by version, not by alias: resolve the champion first (:func:`get_champion`) so the
    model and its profile are guaranteed to belong to the same version. Refuses (raises
    :class:`~driftloop_contracts.model_artifact.ModelRejected`) an artifact whose digest
    differs from the version's tag or that needs an untrusted type.
    """
    c = client(tracking_uri)
    with _registry_errors(f"read version {version}"):
        tags = dict(c.get_model_version(MODEL_NAME, version).tags or {})
    return _load_checked(
        tracking_uri,
        f"models:/{MODEL_NAME}/{version}",
        tags.get(ARTIFACT_DIGEST_TAG),
        where=f"{MODEL_NAME} version {version}",
    )


def load_run_model(tracking_uri: str, run_id: str, model_uri: str) -> Any:
    """Load a logged model that is not registered yet (the challenger), checked against the
    digest its run recorded."""
    c = client(tracking_uri)
    with _registry_errors(f"read run {run_id}"):
        digest = c.get_run(run_id).data.tags.get(ARTIFACT_DIGEST_TAG)
    return _load_checked(tracking_uri, model_uri, digest, where=f"the model of run {run_id}")


def _load_checked(tracking_uri: str, model_uri: str, digest: str | None, *, where: str) -> Any:
    import mlflow.artifacts

    with (
        _registry_errors(f"download {model_uri}"),
        tempfile.TemporaryDirectory() as tmp,
    ):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
        )
        return load_verified(Path(local), digest, where=where)


def load_profile_for_run(tracking_uri: str, run_id: str) -> ReferenceProfile:
    """The reference profile logged by run ``run_id``."""
    import mlflow.artifacts

    with (
        _registry_errors(f"download the profile of run {run_id}"),
        tempfile.TemporaryDirectory() as tmp,
    ):
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=PROFILE_ARTIFACT_PATH,
            dst_path=tmp,
            tracking_uri=tracking_uri,
        )
        return ReferenceProfile.model_validate_json(Path(path).read_text())


def load_profile(tracking_uri: str, version: str) -> ReferenceProfile:
    """The reference profile of model version ``version``."""
    info = get_version(tracking_uri, version)
    if not info.run_id:
        raise RegistryError(f"version {version} of {MODEL_NAME} has no source run")
    return load_profile_for_run(tracking_uri, info.run_id)
