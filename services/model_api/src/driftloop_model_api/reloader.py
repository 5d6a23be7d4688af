"""Keeps the served model equal to the registry's champion: start-up load, events, safety net.

* **Start-up**: resolve ``models:/<name>@<alias>`` and load it, retrying with capped
  exponential backoff until it works; the replica is alive but not ready meanwhile.
* **Events**: consumes ``model-events`` as a broadcast. The consumer has *no group*, so every
  replica (and the drift consumer) sees every event and no replica steals another's. It starts
  at the end of the topic; events older than this process, or not newer than the last event
  handled, are ignored (replays), because the start-up load already read the alias. If the
  topic's end falls behind our position, the log was reset (Tansu keeps nothing across a
  restart and the topic is recreated empty): the consumer rewinds to its beginning, where
  everything is new.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from driftloop_contracts import MODEL_EVENTS_TOPIC, EventError, ModelPromoted, decode_event, utcnow

from .metrics import Metrics
from .model_holder import ModelHolder
from .model_source import ModelSource

log = structlog.get_logger(__name__)

ConsumerFactory = Callable[[], Any]
#: Events stamped this long before our start are replays, not news.
STALE_EVENT_MARGIN = timedelta(seconds=2)
#: How often the consumer compares its position with the topic's end (log reset detection).
LOG_RESET_CHECK_S = 5.0


@dataclass(frozen=True)
class _Command:
    kind: Literal["alias", "version"]
    version: str = ""
    reason: str = ""


def aiokafka_consumer_factory(
    bootstrap: str, *, client_id: str, session_timeout_ms: int
) -> ConsumerFactory:
    """A group-less consumer of ``model-events`` that starts at the end (broadcast)."""

    def make() -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            MODEL_EVENTS_TOPIC,
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=session_timeout_ms,
            request_timeout_ms=max(session_timeout_ms + 1_000, 10_000),
            metadata_max_age_ms=10_000,
        )

    return make


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
        self._consumer_factory = consumer_factory
        self._check_interval = check_interval_s
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._attempts = reload_attempts
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at: datetime = utcnow()
        self._last_event_at: datetime | None = None
        self.consumer_connected = False
        self.last_error: str | None = None

    # --- public ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.started_at = utcnow()
        self._tasks = [
            asyncio.create_task(self._worker(), name="reload-worker"),
            asyncio.create_task(self._periodic(), name="alias-check"),
        ]
        if self._consumer_factory is not None:
            self._tasks.append(asyncio.create_task(self._consume(), name="model-events"))

    async def stop(self) -> None:
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
        while True:
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
        attempt = 0
        while True:
            attempt += 1
            try:
                ref = await asyncio.to_thread(self._source.resolve_alias, self._alias)
                await self._load(ref.version, reason="start-up")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc)
                delay = min(self._retry_max, self._retry_initial * 2 ** min(attempt - 1, 16))
                log.warning(
                    "champion_not_available",
                    attempt=attempt,
                    error=str(exc),
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)

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
        for attempt in range(1, self._attempts + 1):
            current = self._holder.current
            if current is not None and current.version == version:
                return
            try:
                await self._load(version, reason)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc)
                if attempt == self._attempts:
                    log.error(
                        "reload_gave_up",
                        version=version,
                        attempts=attempt,
                        kept=current.version if current else None,
                    )
                    return
                await asyncio.sleep(min(self._retry_max, self._retry_initial * 2 ** (attempt - 1)))

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
        while True:
            await asyncio.sleep(self._check_interval)
            if self._holder.current is not None:
                self.request_alias_check()

    async def _consume(self) -> None:
        assert self._consumer_factory is not None
        attempt = 0
        while True:
            consumer = self._consumer_factory()
            try:
                await consumer.start()
                self.consumer_connected = True
                attempt = 0
                log.info("model_events_consumer_started", topic=MODEL_EVENTS_TOPIC)
                # Anything announced while we were not listening is caught by the alias.
                if self._holder.current is not None:
                    self.request_alias_check()
                checked = asyncio.get_running_loop().time()
                while True:
                    batches = await consumer.getmany(timeout_ms=1_000)
                    for tp, records in batches.items():
                        for record in records:
                            self._on_record(tp, record)
                    if asyncio.get_running_loop().time() - checked > LOG_RESET_CHECK_S:
                        checked = asyncio.get_running_loop().time()
                        await self._rewind_if_reset(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self.consumer_connected = False
                delay = min(self._retry_max, self._retry_initial * 2 ** min(attempt - 1, 16))
                log.warning(
                    "model_events_consumer_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                self.consumer_connected = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 5)

    async def _rewind_if_reset(self, consumer: Any) -> None:
        """Seek to the beginning of any partition whose end is now behind our position."""
        try:
            partitions = list(consumer.assignment())
            if not partitions:
                return
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                position = await consumer.position(tp)
                if position > ends.get(tp, position):
                    log.warning(
                        "model_events_log_reset",
                        partition=tp.partition,
                        position=position,
                        end=ends[tp],
                    )
                    await consumer.seek_to_beginning(tp)
        except Exception as exc:  # broker away: the next check tries again
            log.debug("model_events_reset_check_failed", error=str(exc))

    def _on_record(self, tp: Any, record: Any) -> None:
        try:
            event = decode_event(MODEL_EVENTS_TOPIC, record.value)
        except EventError as exc:
            log.warning(
                "model_event_invalid",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                reason=exc.reason,
                error=str(exc),
            )
            return
        self.handle_event(event)
