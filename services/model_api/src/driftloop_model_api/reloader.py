"""Keeps the served model equal to the registry's champion: start-up load, events, safety net.

Only the ``champion`` alias decides what is served; nothing else names a version to load.

* **Start-up**: resolve ``models:/<name>@<alias>`` and load it, retrying with capped
  exponential backoff until it works (:func:`driftloop_service.retrying`); the replica is alive
  but not ready meanwhile.
* **Events**: the shared :class:`driftloop_service.ModelEventsSubscriber` reads ``model-events``
  as a broadcast (no group: every replica and the drift consumer sees every event) from the end
  of the topic, and rewinds when the broker's log was reset. A ``ModelPromoted`` is a *hint*:
  it makes the replica read the alias now and load the alias's version. An event naming
  another version (forged by anyone who can produce to the topic, or overtaken by a later
  promotion) is logged and counted as
  ``driftloop_model_events_ignored_total{reason="not_champion"}``; events for another model,
  older than this process or not newer than the last one handled are counted under their own
  reasons (:class:`driftloop_contracts.PromotionIgnored`) and dropped.
* **Safety net**: every ``alias_check_interval_seconds`` the alias is read again, so a missed
  event (broker down, topic recreated) only delays a reload.

* **Shadow**: after every look at the champion the :class:`~.shadow_watch.ShadowWatch` (if
  any) follows the ``shadow`` alias, so the watch after a promotion starts and ends on the
  same events and checks. A champion the shadow already holds (a rollback) is swapped in
  without a download.

All loads run one at a time in a single worker task, in arrival order, so a slow alias check
can never overwrite a newer promotion. Loading (HTTP + deserialisation) runs in a thread; the
new model is swapped in atomically (see :mod:`driftloop_model_api.model_holder`). A failed
load keeps the current model and is counted twice: ``driftloop_model_reloads_total{outcome=
"failure"}`` and ``driftloop_model_load_failures_total{reason}``, the reason saying whether
the artifact was refused (:class:`~driftloop_contracts.model_artifact.ModelRejected`: an
untrusted type, a digest mismatch, a pre-skops model; not retried, the next alias check tries
again) or the load failed (``error``: retried ``reload_attempts`` times).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog

from driftloop_contracts import ModelPromoted, PromotionIgnored, utcnow
from driftloop_contracts.model_artifact import ModelRejected
from driftloop_service import (
    Backoff,
    ModelEventsSubscriber,
    RetryStopped,
    retrying,
    settle_heap,
    wait_or_stop,
)
from driftloop_service.subscriber import ConsumerFactory

from .metrics import Metrics
from .model_holder import LoadedModel, ModelHolder
from .model_source import ModelSource, VersionRef
from .shadow_watch import ShadowWatch

log = structlog.get_logger(__name__)

__all__ = ["ConsumerFactory", "Reloader"]

#: Events stamped this long before our start are replays, not news.
STALE_EVENT_MARGIN = timedelta(seconds=2)
#: ``driftloop_model_load_failures_total`` reason of a load that failed without a refusal.
LOAD_ERROR = "error"


@dataclass(frozen=True)
class _Command:
    #: ``alias``: load the alias's version if it is not served. ``event``: the same, after a
    #: ModelPromoted announcing ``version`` (compared with the alias, never loaded as such).
    kind: Literal["alias", "event"]
    version: str = ""
    reason: str = ""


class Reloader:
    """Owns the three tasks that keep :class:`ModelHolder` on the champion."""

    def __init__(
        self,
        holder: ModelHolder,
        source: ModelSource,
        metrics: Metrics,
        *,
        alias: str,
        consumer_factory: ConsumerFactory | None,
        check_interval_s: float = 30.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        reload_attempts: int = 3,
        shadow: ShadowWatch | None = None,
    ) -> None:
        self._holder = holder
        self._source = source
        self._metrics = metrics
        self._alias = alias
        self._check_interval = check_interval_s
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._attempts = reload_attempts
        self._shadow = shadow
        #: The champion resolved last, and the model the last swap replaced (a shadow candidate).
        self._champion: VersionRef | None = None
        self._replaced: LoadedModel | None = None
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._subscriber = (
            ModelEventsSubscriber(
                consumer_factory,
                self.handle_event,
                on_connected=self._on_subscribed,
                on_invalid=lambda topic, error: metrics.invalid(topic, error.reason),
                on_retry=metrics.retries.hook("model_events_consumer"),
                backoff=self._backoff,
            )
            if consumer_factory is not None
            else None
        )
        self.started_at: datetime = utcnow()
        self._last_event_at: datetime | None = None
        self.last_error: str | None = None

    @property
    def consumer_connected(self) -> bool:
        """The model-events subscriber is reading (shown on ``/health/ready``)."""
        return self._subscriber is not None and self._subscriber.connected

    # --- public ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.started_at = utcnow()
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._worker(), name="reload-worker"),
            asyncio.create_task(self._periodic(), name="alias-check"),
        ]
        if self._subscriber is not None:
            self._tasks.append(
                asyncio.create_task(self._subscriber.run(self._stopping), name="model-events")
            )

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def request_alias_check(self) -> None:
        self._queue.put_nowait(_Command("alias"))

    def handle_event(self, event: ModelPromoted) -> bool:
        """Queue an alias check for a fresh promotion of our model; count anything else.

        Returns whether the event was queued. The announced version is not loaded: the worker
        reads the alias and loads what it names (see :meth:`_follow_event`).
        """
        if event.model_name != self._source.model_name:
            return self._ignore(PromotionIgnored.OTHER_MODEL, event, model_name=event.model_name)
        if event.timestamp < self.started_at - STALE_EVENT_MARGIN:
            return self._ignore(PromotionIgnored.STALE, event)
        if self._last_event_at is not None and event.timestamp <= self._last_event_at:
            return self._ignore(PromotionIgnored.REPLAYED, event)
        self._last_event_at = event.timestamp
        log.info(
            "model_promoted_received",
            version=event.version,
            run_id=event.run_id,
            reason=event.reason,
        )
        self._queue.put_nowait(
            _Command("event", event.version, reason=f"event: {event.reason}".strip())
        )
        return True

    def _ignore(self, reason: PromotionIgnored, event: ModelPromoted, **context: str) -> bool:
        self._metrics.event_ignored(reason)
        log.info("model_event_ignored", reason=str(reason), version=event.version, **context)
        return False

    # --- tasks ----------------------------------------------------------------------------

    async def _worker(self) -> None:
        await self._initial_load()
        await self._follow_shadow()
        while not self._stopping.is_set():
            command = await self._queue.get()
            try:
                if command.kind == "alias":
                    await self._check_alias()
                else:
                    await self._follow_event(command.version, command.reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one bad command stop reloading
                log.error("reload_command_failed", command=command.kind, error=str(exc))

    async def _initial_load(self) -> None:
        """Load the alias's version, retrying (capped backoff) until it works or we stop."""
        policy = retrying(
            backoff=self._backoff, stopping=self._stopping, on_retry=self._champion_missing
        )
        with contextlib.suppress(RetryStopped):
            await policy(self._load_alias)

    async def _load_alias(self) -> None:
        try:
            ref = await asyncio.to_thread(self._source.resolve_alias, self._alias)
            self._champion = ref
            await self._load(ref.version, reason="start-up")
        except Exception as exc:
            self.last_error = str(exc)
            raise

    def _champion_missing(self, attempt: int, error: BaseException, delay: float) -> None:
        self._metrics.retries.hook("champion_load")(attempt, error, delay)
        log.warning(
            "champion_not_available", attempt=attempt, error=str(error), retry_in_s=round(delay, 2)
        )

    async def _resolve(self) -> str | None:
        """The alias's version now, or ``None`` (logged) if the registry does not answer."""
        try:
            ref = await asyncio.to_thread(self._source.resolve_alias, self._alias)
        except Exception as exc:
            self.last_error = str(exc)
            self._metrics.alias_check_failed()
            log.warning("alias_check_failed", error=str(exc))
            return None
        self._champion = ref
        return ref.version

    async def _check_alias(self) -> None:
        version = await self._resolve()
        if version is not None:
            await self._load_with_retries(version, reason=f"alias {self._alias} moved")
            await self._follow_shadow()

    async def _follow_shadow(self) -> None:
        """Let the shadow follow the champion just resolved (never fails the reload)."""
        if self._shadow is None or self._champion is None:
            return
        try:
            await self._shadow.follow(self._champion, self._replaced)
        except Exception as exc:
            log.error("shadow_follow_failed", error=str(exc))
        self._replaced = None  # a shadow keeps its own reference; do not pin old models

    async def _follow_event(self, announced: str, reason: str) -> None:
        """A promotion was announced: load what the alias names, whatever the event said."""
        version = await self._resolve()
        if version is None:
            return  # the periodic check (or the next event) reads the alias again
        if version != announced:
            self._metrics.event_ignored(PromotionIgnored.NOT_CHAMPION)
            log.warning(
                "model_event_ignored",
                reason=str(PromotionIgnored.NOT_CHAMPION),
                announced=announced,
                champion=version,
            )
            reason = f"alias {self._alias} (event announced version {announced})"
        await self._load_with_retries(version, reason)
        await self._follow_shadow()

    async def _load_with_retries(self, version: str, reason: str) -> None:
        """Up to ``reload_attempts`` loads of ``version``; on failure the current model stays."""
        policy = retrying(
            backoff=self._backoff,
            attempts=self._attempts,
            stopping=self._stopping,
            on_retry=self._metrics.retries.hook("model_reload"),
        )
        try:
            rejected: ModelRejected | None = await policy(
                self._load_unless_current, version, reason
            )
        except RetryStopped:
            return
        except Exception as exc:
            self.last_error = str(exc)
            current = self._holder.current
            log.error(
                "reload_gave_up",
                version=version,
                attempts=self._attempts,
                kept=current.version if current else None,
            )
            return
        if rejected is not None:
            self.last_error = str(rejected)

    async def _load_unless_current(self, version: str, reason: str) -> ModelRejected | None:
        """Load ``version`` unless served; a refusal is returned, not raised, since retrying
        cannot change the artifact's verdict."""
        current = self._holder.current
        if current is None or current.version != version:
            try:
                await self._load(version, reason)
            except ModelRejected as exc:
                return exc
        return None

    async def _load(self, version: str, reason: str) -> None:
        model = self._shadow.take(version) if self._shadow is not None else None
        try:
            if model is None:
                model = await asyncio.to_thread(self._source.load, version)
        except Exception as exc:
            failure = exc.reason if isinstance(exc, ModelRejected) else LOAD_ERROR
            self._metrics.reload("failure")
            self._metrics.load_failed(failure)
            current = self._holder.current
            log.error(
                "model_rejected" if isinstance(exc, ModelRejected) else "model_load_failed",
                version=version,
                reason=reason,
                failure=failure,
                error=str(exc),
                kept=current.version if current else None,
            )
            raise
        previous = self._holder.swap(model)
        self._replaced = previous
        self._metrics.reload("success")
        self._metrics.set_model(model.name, model.version, model.loaded_at.timestamp())
        self.last_error = None
        log.info(
            "model_loaded",
            model_name=model.name,
            version=model.version,
            run_id=model.run_id,
            previous=previous.version if previous else None,
            reason=reason,
        )
        settle_heap()  # no ~90 ms full collections under load (driftloop_service.memory)

    async def _periodic(self) -> None:
        while not await wait_or_stop(self._stopping, self._check_interval):
            if self._holder.current is not None:
                self.request_alias_check()

    def _on_subscribed(self) -> None:
        # Anything announced while we were not listening is caught by the alias.
        if self._holder.current is not None:
            self.request_alias_check()
