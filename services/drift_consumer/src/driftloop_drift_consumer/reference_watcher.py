"""The reference watcher: keeps the drift reference on the champion.

Three triggers, one truth (the champion alias in MLflow, read by :class:`ReferenceManager`):

- start-up: the profile cached by the previous run is applied at once, then MLflow is asked
  (retried with backoff until it answers; consuming starts anyway, since joins and the
  labelled log need no reference);
- ``model-events``: a ``ModelPromoted`` for our model asks for an immediate alias check
  (:func:`follow_model_events`, a group-less consumer from the end: a broadcast, every
  instance sees every event);
- a periodic alias check, the safety net for a missed event (broker restarted, topic
  recreated), and :meth:`ReferenceWatcher.request_check` (the loop calls it when a replica
  already serves a newer version).

The subscription to ``model-events`` is kept to :func:`follow_model_events` and
:func:`model_events_consumer_factory`, so a shared subscriber can replace them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from driftloop_contracts import MODEL_EVENTS_TOPIC

from .decoding import Invalid, decode_model_event
from .errors import ReferenceUnavailable
from .reference import LoadedReference, ReferenceManager
from .settings import DriftConsumerSettings
from .shutdown import sleep_unless_stopping
from .sinks.prometheus import ConsumerMetrics

log = structlog.get_logger(__name__)


class ReferenceWatcher:
    """Loads the champion's reference and hands every change to ``apply``."""

    def __init__(
        self,
        references: ReferenceManager,
        *,
        settings: DriftConsumerSettings,
        stopping: asyncio.Event,
        apply: Callable[[LoadedReference], Awaitable[None]],
    ) -> None:
        """``apply`` switches the consumer to a reference (under the loop's lock)."""
        self.references = references
        self.settings = settings
        self._stopping = stopping
        self._apply = apply
        self._check = asyncio.Event()
        #: Set once consuming may start: a reference is applied, or MLflow failed once.
        self.ready = asyncio.Event()

    def request_check(self) -> None:
        """Re-read the champion alias now instead of at the next periodic check."""
        self._check.set()

    async def run(self) -> None:
        """Keep the reference on the champion until shutdown: start-up load, then checks.

        A reference cached by the previous run is applied at once: windows only take events
        labelled with the reference's version, so a stale cache cannot mis-measure anything,
        and MLflow's answer (when it comes) replaces it if the champion moved meanwhile.
        """
        cached = self.references.load_cached()
        if cached is not None:
            log.info("reference_from_cache", model_version=cached.version)
            await self._switch(cached)
        attempt = 0
        while not self._stopping.is_set():
            try:
                loaded = await self.references.load_champion()
                if loaded is not None:
                    await self._switch(loaded)
                self.ready.set()
                break
            except ReferenceUnavailable as exc:
                attempt += 1
                delay = min(self.settings.reference_retry_max_seconds, 0.5 * 2 ** min(attempt, 6))
                log.warning(
                    "reference_unavailable", attempt=attempt, error=str(exc), retry_in_s=delay
                )
                self.ready.set()  # consume anyway: joins and the log need no reference
                await sleep_unless_stopping(self._stopping, delay, also=self._check)
                self._check.clear()
        while not self._stopping.is_set():
            await sleep_unless_stopping(
                self._stopping, self.settings.reference_check_interval_seconds, also=self._check
            )
            self._check.clear()
            if self._stopping.is_set():
                break
            try:
                loaded = await self.references.load_champion()
            except ReferenceUnavailable as exc:
                log.warning("reference_check_failed", error=str(exc))
                await sleep_unless_stopping(self._stopping, 1.0)
                continue
            if loaded is not None:
                await self._switch(loaded)

    async def _switch(self, loaded: LoadedReference) -> None:
        await self._apply(loaded)
        self.ready.set()


# --- the model-events subscription ---------------------------------------------------------


async def follow_model_events(
    factory: Callable[[], Any],
    *,
    model_name: str,
    metrics: ConsumerMetrics,
    stopping: asyncio.Event,
    on_promoted: Callable[[], None],
) -> None:
    """Read ``model-events`` until shutdown; call ``on_promoted`` for each promotion of
    ``model_name``. A consumer that fails is recreated after a capped backoff."""
    delay = 0.5
    while not stopping.is_set():
        consumer = factory()
        try:
            await consumer.start()
            delay = 0.5
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        _on_model_event(
                            tp.topic, tp.partition, record, model_name, metrics, on_promoted
                        )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("model_events_consumer_failed", error=str(exc), retry_in_s=delay)
            await sleep_unless_stopping(stopping, delay)
            delay = min(delay * 2, 10.0)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


def _on_model_event(
    topic: str,
    partition: int,
    record: Any,
    model_name: str,
    metrics: ConsumerMetrics,
    on_promoted: Callable[[], None],
) -> None:
    event = decode_model_event(record)
    if isinstance(event, Invalid):
        metrics.events_invalid.labels(topic, event.reason).inc()
        log.warning(
            "invalid_event",
            topic=topic,
            partition=partition,
            offset=event.offset,
            reason=event.reason,
            error=event.error,
        )
        return
    metrics.events_consumed.labels(topic).inc()
    if event.model_name != model_name:
        metrics.events_invalid.labels(topic, "unknown_model").inc()
        return
    log.info("model_promoted_received", version=event.version, reason=event.reason)
    on_promoted()


def model_events_consumer_factory(
    bootstrap: str, *, client_id: str, session_timeout_ms: int, topic: str = MODEL_EVENTS_TOPIC
) -> Callable[[], Any]:
    """A group-less consumer of ``model-events`` from the end: every instance sees every event."""

    def make() -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            topic,
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
