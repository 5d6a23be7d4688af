"""Where model versions come from: the MLflow registry (alias look-up, download, profile id).

Every call here blocks (HTTP + deserialisation), so callers run them in a worker thread
(``asyncio.to_thread``) and the event loop keeps serving. Retries are the caller's job: the
MLflow client's own long retry loop is shortened so an outage is noticed and reported quickly.

A version is loaded only through :func:`driftloop_contracts.model_artifact.load_verified`:
the downloaded files must hash to the version's registered digest and the skops file may only
need the trusted types defined there. No pickle, no cloudpickle, no pyfunc fallback, and no
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``: an artifact that fails a check raises
:class:`~driftloop_contracts.model_artifact.ModelRejected`, which the reloader counts by reason
while the current model keeps serving.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from driftloop_contracts import PROFILE_ARTIFACT_PATH, utcnow
from driftloop_contracts.model_artifact import ARTIFACT_DIGEST_TAG, ModelRejected, load_verified

from .errors import AliasNotFound, ModelLoadError
from .model_holder import LoadedModel

log = structlog.get_logger(__name__)

#: MLflow error codes of "no such alias / registered model" (they vary between versions).
_ABSENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})


@dataclass(frozen=True)
class VersionRef:
    """A registered version: its number, the training run that produced it and its tags
    (the champion's ``driftloop.watch_until`` bounds the shadow, :mod:`.shadow_watch`)."""

    version: str
    run_id: str
    tags: Mapping[str, str] = field(default_factory=dict)


class ModelSource(Protocol):
    """What the reloader needs from a registry; tests pass a fake."""

    model_name: str

    def resolve_alias(self, alias: str) -> VersionRef:
        """The alias's version; :class:`AliasNotFound` if the registry has no such alias."""

    def load(self, version: str) -> LoadedModel: ...


class MlflowModelSource:
    """The real registry; what it serves is checked, not trusted (module docstring)."""

    def __init__(self, tracking_uri: str, model_name: str, *, http_timeout_s: int = 15) -> None:
        # Process-wide by MLflow's design; a replica talks to one registry.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(http_timeout_s))
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def resolve_alias(self, alias: str) -> VersionRef:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                raise AliasNotFound(f"{self.model_name}@{alias} does not exist") from exc
            raise ModelLoadError(f"cannot resolve {self.model_name}@{alias}: {exc}") from exc
        except Exception as exc:
            raise ModelLoadError(f"cannot resolve {self.model_name}@{alias}: {exc}") from exc
        return VersionRef(version=str(mv.version), run_id=mv.run_id or "", tags=dict(mv.tags or {}))

    def load(self, version: str) -> LoadedModel:
        """Download, verify and deserialise ``version``; :class:`ModelRejected` if unsafe."""
        try:
            mv = self._client.get_model_version(self.model_name, version)
            tags = dict(mv.tags or {})
            estimator = self._load_estimator(version, tags.get(ARTIFACT_DIGEST_TAG))
        except (ModelLoadError, ModelRejected):
            raise
        except Exception as exc:
            raise ModelLoadError(f"cannot load {self.model_name} version {version}: {exc}") from exc
        run_id = mv.run_id or ""
        return LoadedModel.build(
            name=self.model_name,
            version=str(mv.version),
            run_id=run_id,
            loaded_at=utcnow(),
            profile_id=self._profile_id(run_id, tags),
            estimator=estimator,
        )

    def _load_estimator(self, version: str, digest: str | None) -> Any:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.model_name}/{version}",
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
            )
            return load_verified(Path(local), digest, where=f"{self.model_name} version {version}")

    def _profile_id(self, run_id: str, tags: dict[str, str]) -> str | None:
        """The reference profile's id (tag if the trainer set one, else the artifact's field)."""
        if tags.get("profile_id"):
            return tags["profile_id"]
        if not run_id:
            return None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self._client.download_artifacts(run_id, PROFILE_ARTIFACT_PATH, tmp)
                with open(path, encoding="utf-8") as fh:
                    return str(json.load(fh)["profile_id"])
        except Exception as exc:  # the profile is informative here; serving does not need it
            log.warning("reference_profile_unavailable", run_id=run_id, error=str(exc))
            return None
