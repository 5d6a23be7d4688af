"""Which shadow to hold: follow the ``shadow`` alias and the champion's watch end.

The reloader calls :meth:`ShadowWatch.follow` after every look at the champion (start-up, each
``ModelPromoted``, each periodic alias check), with the champion it just resolved. The rules:

* the champion's ``driftloop.watch_until`` tag has passed → no shadow (even if the alias
  lingers: the watch is over either way);
* the alias does not exist (watch ended, rollback, or never started) → no shadow;
* the alias names the champion (a rollback caught half-way) → no shadow;
* otherwise hold the alias's version: the one already held, the champion this replica just
  replaced (a promotion: no download), or a fresh load through the same verified path as the
  champion (:func:`driftloop_contracts.model_artifact.load_verified`, digest + trusted types).

A registry that does not answer keeps the current shadow (the next check decides). A load
that fails or is refused leaves the replica without a shadow, counted in
``driftloop_shadow_failures_total{reason}`` (``load_error`` or the refusal's reason); the next
check tries again. Serving is never affected: the champion is held elsewhere.

A rollback moves ``champion`` to the version held here; :meth:`ShadowWatch.take` hands it to
the reloader, so the switch back needs no download either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from driftloop_contracts import SHADOW_ALIAS, utcnow, watch_until
from driftloop_contracts.model_artifact import ModelRejected

from .errors import AliasNotFound
from .model_holder import LoadedModel
from .model_source import ModelSource, VersionRef
from .shadow import LOAD_ERROR, ShadowMetrics, ShadowStage

log = structlog.get_logger(__name__)


class ShadowWatch:
    """Keeps :class:`~.shadow.ShadowStage` on the version the ``shadow`` alias names."""

    def __init__(
        self,
        stage: ShadowStage,
        source: ModelSource,
        metrics: ShadowMetrics,
        *,
        alias: str = SHADOW_ALIAS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._stage = stage
        self._source = source
        self._metrics = metrics
        self._alias = alias
        self._clock = clock

    def take(self, version: str) -> LoadedModel | None:
        """The shadow's model if it is ``version`` (the champion returns to it: rollback)."""
        model = self._stage.model
        return model if model is not None and model.version == version else None

    async def follow(self, champion: VersionRef, replaced: LoadedModel | None = None) -> None:
        """Hold the shadow that goes with ``champion`` (module docstring); ``replaced`` is the
        model the replica served before ``champion``, reused if the alias names it."""
        end = watch_until(champion.tags)
        if end is not None and self._clock() >= end:
            self._drop(f"watch of version {champion.version} ended at {end.isoformat()}")
            return
        try:
            ref = await asyncio.to_thread(self._source.resolve_alias, self._alias)
        except AliasNotFound:
            self._drop(f"alias {self._alias} removed")
            return
        except Exception as exc:
            log.warning("shadow_alias_check_failed", error=str(exc))
            return
        if ref.version == champion.version:
            self._drop(f"alias {self._alias} names the champion")
            return
        held = self._stage.model
        if held is not None and held.version == ref.version:
            return
        if replaced is not None and replaced.version == ref.version:
            self._hold(replaced, "the replaced champion")
            return
        try:
            model = await asyncio.to_thread(self._source.load, ref.version)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, ModelRejected) else LOAD_ERROR
            self._metrics.failed(reason)
            self._stage.set(None)
            log.error("shadow_load_failed", version=ref.version, reason=reason, error=str(exc))
            return
        self._hold(model, "loaded")

    def _hold(self, model: LoadedModel, how: str) -> None:
        self._stage.set(model)
        log.info("shadow_loaded", version=model.version, run_id=model.run_id, source=how)

    def _drop(self, why: str) -> None:
        held = self._stage.model
        if held is None:
            return
        self._stage.set(None)
        log.info("shadow_dropped", version=held.version, reason=why)
