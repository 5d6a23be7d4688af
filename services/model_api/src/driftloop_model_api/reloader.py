"""Keeps the served model equal to the registry's champion: start-up load, events, safety net.

* **Start-up**: resolve ``models:/<name>@<alias>`` and load it, retrying with capped
  exponential backoff until it works (:func:`driftloop_service.retrying`); the replica is alive
  but not ready meanwhile.
* **Events**: the shared :class:`driftloop_service.ModelEventsSubscriber` reads ``model-events``
  as a broadcast (no group: every replica and the drift consumer sees every event) from the end
  of the topic, and rewinds when the broker's log was reset. Events older than this process, or
  not newer than the last event handled, are ignored (replays), because the start-up load
  already read the alias.
* **Safety net**: every ``alias_check_interval_seconds`` the alias is read again, so a missed
  event (broker down, topic recreated) only delays a reload.

All loads run one at a time in a single worker task, in arrival order, so a slow alias check
can never overwrite a newer promotion. Loading (HTTP + deserialisation) runs in a thread; the
new model is swapped in atomically (see :mod:`driftloop_model_api.model_holder`). A failed
load keeps the current model and is counted as ``driftloop_model_reloads_total{outcome="failure"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog

from driftloop_contracts import ModelPromoted, utcnow
from driftloop_service import (
    Backoff,
    ModelEventsSubscriber,
    RetryStopped,
    retrying,
    wait_or_stop,
)
from driftloop_service.subscriber import ConsumerFactory

from .metrics import Metrics
from .model_holder import ModelHolder
from .model_source import ModelSource

log = structlog.get_logger(__name__)

__all__ = ["ConsumerFactory", "Reloader"]

#: Events stamped this long before our start are replays, not news.
STALE_EVENT_MARGIN = timedelta(seconds=2)


@dataclass(frozen=True)
class _Command:
    kind: Literal["alias", "version"]
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
    ) -> None:
        self._holder = holder
        self._source = source
        self._metrics = metrics
        self._alias = alias
        self._check_interval = check_interval_s
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._attempts = reload_attempts
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

    def request_version(self, version: str, reason: str = "") -> None:
        """Load ``version`` (in the background, after anything already queued)."""
        self._queue.put_nowait(_Command("version", version, reason))

    def request_alias_check(self) -> None:
        self._queue.put_nowait(_Command("alias"))

    def handle_event(self, event: ModelPromoted) -> bool:
        """Queue the announced version if the event is for our model and not a stale replay."""
        if event.model_name != self._source.model_name:
            log.info("model_event_ignored", reason="other_model", model_name=event.model_name)
            return False
        if event.timestamp < self.started_at - STALE_EVENT_MARGIN:
            log.info("model_event_ignored", reason="older_than_process", version=event.version)
            return False
        if self._last_event_at is not None and event.timestamp <= self._last_event_at:
            log.info("model_event_ignored", reason="replayed", version=event.version)
            return False
        self._last_event_at = event.timestamp
        log.info(
            "model_promoted_received",
            version=event.version,
            run_id=event.run_id,
            reason=event.reason,
        )
        self.request_version(event.version, reason=f"event: {event.reason}".strip())
        return True

    # --- tasks ----------------------------------------------------------------------------

    async def _worker(self) -> None:
        await self._initial_load()
        while not self._stopping.is_set():
            command = await self._queue.get()
            try:
                if command.kind == "alias":
                    await self._check_alias()
                else:
                    await self._load_with_retries(command.version, command.reason)
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
            await self._load(ref.version, reason="start-up")
        except Exception as exc:
            self.last_error = str(exc)
            raise

    def _champion_missing(self, attempt: int, error: BaseException, delay: float) -> None:
        self._metrics.retries.hook("champion_load")(attempt, error, delay)
        log.warning(
            "champion_not_available", attempt=attempt, error=str(error), retry_in_s=round(delay, 2)
        )

    async def _check_alias(self) -> None:
        try:
            ref = await asyncio.to_thread(self._source.resolve_alias, self._alias)
        except Exception as exc:
            self.last_error = str(exc)
            log.warning("alias_check_failed", error=str(exc))
            return
        current = self._holder.current
        if current is None or current.version != ref.version:
            await self._load_with_retries(ref.version, reason=f"alias {self._alias} moved")

    async def _load_with_retries(self, version: str, reason: str) -> None:
        """Up to ``reload_attempts`` loads of ``version``; on failure the current model stays."""
        policy = retrying(
            backoff=self._backoff,
            attempts=self._attempts,
            stopping=self._stopping,
            on_retry=self._metrics.retries.hook("model_reload"),
        )
        try:
            await policy(self._load_unless_current, version, reason)
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

    async def _load_unless_current(self, version: str, reason: str) -> None:
        current = self._holder.current
        if current is None or current.version != version:
            await self._load(version, reason)

    async def _load(self, version: str, reason: str) -> None:
        try:
            model = await asyncio.to_thread(self._source.load, version)
        except Exception as exc:
            self._metrics.reload("failure")
            current = self._holder.current
            log.error(
                "model_load_failed",
                version=version,
                reason=reason,
                error=str(exc),
                kept=current.version if current else None,
            )
            raise
        previous = self._holder.swap(model)
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

    async def _periodic(self) -> None:
        while not await wait_or_stop(self._stopping, self._check_interval):
            if self._holder.current is not None:
                self.request_alias_check()

    def _on_subscribed(self) -> None:
        # Anything announced while we were not listening is caught by the alias.
        if self._holder.current is not None:
            self.request_alias_check()
