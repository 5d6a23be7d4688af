"""The champion's reference profile: resolved from MLflow, switched on promotion.

The version behind alias ``champion`` of the model carries its profile as the run artifact
``PROFILE_ARTIFACT_PATH`` and its holdout RMSE as the run metric ``HOLDOUT_RMSE_METRIC`` (the
layout the training package's registry module writes); ``MlflowClient`` reads both, so the
consumer needs no scikit-learn. The last profile used is also kept under ``STATE_DIR``, so a
restart while MLflow is down still measures drift against the right baseline (it is replaced
as soon as MLflow answers with a different champion).

When to look is :mod:`.reference_watcher`'s job (start-up, ``ModelPromoted`` events, a
periodic check). Either way the alias is the truth, not the event body, so a stale or replayed
event can never move the baseline backwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from driftloop_contracts import (
    CHAMPION_ALIAS,
    HOLDOUT_RMSE_METRIC,
    MODEL_NAME,
    PROFILE_ARTIFACT_PATH,
    ReferenceProfile,
)

from .drift import CompiledReference
from .errors import ReferenceUnavailable

if TYPE_CHECKING:  # mlflow is imported on first use: it is slow to import
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = structlog.get_logger(__name__)

CACHE_FILE = "reference.json"


@dataclass(frozen=True)
class LoadedReference:
    version: str
    run_id: str
    profile: ReferenceProfile
    compiled: CompiledReference
    holdout_rmse_usd: float | None

    @classmethod
    def build(
        cls, version: str, run_id: str, profile: ReferenceProfile, rmse: float | None
    ) -> LoadedReference:
        try:
            compiled = CompiledReference.from_profile(profile, version)
        except ValueError as exc:
            raise ReferenceUnavailable(f"profile of version {version} is unusable: {exc}") from exc
        return cls(version, run_id, profile, compiled, rmse)


@dataclass(frozen=True)
class VersionRef:
    version: str
    run_id: str
    holdout_rmse_usd: float | None


class ReferenceSource(Protocol):
    """Where profiles come from (MLflow in production, a dict in tests). Blocking calls."""

    def champion(self) -> VersionRef | None: ...

    def version(self, version: str) -> VersionRef: ...

    def profile(self, run_id: str) -> ReferenceProfile: ...


class MlflowReferenceSource:
    """:class:`ReferenceSource` over ``MlflowClient``: alias -> version -> run -> artifact.

    The model name and alias come from settings (defaults: the contracts' ``MODEL_NAME`` and
    ``CHAMPION_ALIAS``), which lets an isolated test consumer follow a model of its own.
    Blocking; the manager calls it in a thread.
    """

    def __init__(
        self, tracking_uri: str, model_name: str = MODEL_NAME, alias: str = CHAMPION_ALIAS
    ) -> None:
        # MLflow's HTTP client retries for minutes by default; a registry outage must surface
        # quickly here (the caller retries on its own schedule and keeps the old reference).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._uri = tracking_uri
        self._name = model_name
        self._alias = alias
        self._client: MlflowClient | None = None

    def _mlflow(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        return self._client

    def _ref(self, mv: ModelVersion) -> VersionRef:
        rmse: float | None = None
        if mv.run_id:
            try:
                rmse = self._mlflow().get_run(mv.run_id).data.metrics.get(HOLDOUT_RMSE_METRIC)
            except Exception:  # a deleted run must not hide the version
                rmse = None
        return VersionRef(str(mv.version), mv.run_id or "", rmse)

    def champion(self) -> VersionRef | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._mlflow().get_model_version_by_alias(self._name, self._alias)
        except MlflowException as exc:
            if exc.error_code in (
                "RESOURCE_DOES_NOT_EXIST",
                "NOT_FOUND",
                "INVALID_PARAMETER_VALUE",
            ):
                return None
            raise
        return self._ref(mv)

    def version(self, version: str) -> VersionRef:
        return self._ref(self._mlflow().get_model_version(self._name, version))

    def profile(self, run_id: str) -> ReferenceProfile:
        import mlflow.artifacts

        if not run_id:
            raise ReferenceUnavailable("the champion version has no source run")
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=PROFILE_ARTIFACT_PATH,
                dst_path=tmp,
                tracking_uri=self._uri,
            )
            return ReferenceProfile.model_validate_json(Path(path).read_text())


class ReferenceManager:
    """Loads the champion's reference; the loop applies a switch under its own lock."""

    def __init__(self, source: ReferenceSource, state_dir: Path | None = None) -> None:
        self._source = source
        self._state_dir = state_dir
        self.current: LoadedReference | None = None
        self.last_error: str | None = None
        self._rmse: dict[str, tuple[float | None, float]] = {}
        self._fetching: dict[str, asyncio.Task[None]] = {}

    async def load_champion(self) -> LoadedReference | None:
        """The champion's reference if it differs from :attr:`current`, else ``None``.

        Raises :class:`ReferenceUnavailable` when there is no champion or MLflow fails.
        """
        try:
            ref = await asyncio.to_thread(self._source.champion)
        except Exception as exc:
            self.last_error = str(exc)
            raise ReferenceUnavailable(f"cannot read the champion alias: {exc}") from exc
        if ref is None:
            self.last_error = "no champion registered yet"
            raise ReferenceUnavailable(self.last_error)
        if self.current is not None and self.current.version == ref.version:
            return None
        try:
            profile = await asyncio.to_thread(self._source.profile, ref.run_id)
        except Exception as exc:
            self.last_error = str(exc)
            raise ReferenceUnavailable(
                f"cannot load the profile of version {ref.version}: {exc}"
            ) from exc
        loaded = LoadedReference.build(ref.version, ref.run_id, profile, ref.holdout_rmse_usd)
        self._rmse[ref.version] = (ref.holdout_rmse_usd, time.monotonic())
        self.last_error = None
        return loaded

    def accept(self, loaded: LoadedReference) -> None:
        """Make ``loaded`` current and remember it for a restart without MLflow."""
        self.current = loaded
        if loaded.holdout_rmse_usd is not None:
            self._rmse[loaded.version] = (loaded.holdout_rmse_usd, time.monotonic())
        if self._state_dir is None:
            return
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
            path = self._state_dir / CACHE_FILE
            tmp = path.with_name(f".{CACHE_FILE}.{os.getpid()}.tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "version": loaded.version,
                        "run_id": loaded.run_id,
                        "holdout_rmse_usd": loaded.holdout_rmse_usd,
                        "profile": loaded.profile.model_dump(mode="json"),
                    }
                )
            )
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("reference_cache_write_failed", error=str(exc))

    def load_cached(self) -> LoadedReference | None:
        """The reference used before the last restart, if one was saved and is valid."""
        if self._state_dir is None:
            return None
        path = self._state_dir / CACHE_FILE
        try:
            raw = json.loads(path.read_text())
            profile = ReferenceProfile.model_validate(raw["profile"])
            return LoadedReference.build(
                str(raw["version"]),
                str(raw.get("run_id", "")),
                profile,
                raw.get("holdout_rmse_usd"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, ReferenceUnavailable) as exc:
            log.warning("reference_cache_unusable", path=str(path), error=str(exc))
            return None

    def baseline_rmse(self, version: str, *, retry_after_s: float = 60.0) -> float | None:
        """The version's training holdout RMSE if known; never waits for MLflow.

        An unknown version's metric is fetched in the background (at most once per
        ``retry_after_s``), so the online-error ratio appears on a later update instead of
        the consumer loop stalling on the registry.
        """
        cached = self._rmse.get(version)
        if cached is not None and cached[0] is not None:
            return cached[0]
        stale = cached is None or time.monotonic() - cached[1] >= retry_after_s
        if stale and version not in self._fetching:
            self._rmse[version] = (None, time.monotonic())
            task = asyncio.get_running_loop().create_task(self._fetch_rmse(version))
            self._fetching[version] = task
            task.add_done_callback(lambda _t: self._fetching.pop(version, None))
        return None

    async def _fetch_rmse(self, version: str) -> None:
        try:
            ref = await asyncio.to_thread(self._source.version, version)
        except Exception as exc:
            log.warning("holdout_rmse_unavailable", version=version, error=str(exc))
            return
        self._rmse[version] = (ref.holdout_rmse_usd, time.monotonic())
