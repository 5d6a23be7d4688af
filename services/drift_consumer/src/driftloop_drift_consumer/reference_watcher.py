"""The reference watcher: keeps the drift reference on the champion.

Three triggers, one truth (the champion alias in MLflow, read by :class:`ReferenceManager`):

- start-up: the profile cached by the previous run is applied at once, then MLflow is asked
  (retried with the shared backoff until it answers, counted in
  ``driftloop_retries_total{operation="reference_load"}``; consuming starts anyway, since
  joins and the labelled log need no reference);
- ``model-events``: a ``ModelPromoted`` for our model asks for an immediate alias check
  (:func:`promotions_subscriber`: the shared :class:`~driftloop_service.ModelEventsSubscriber`,
  group-less from the end, so every instance sees every event, and rewound when the broker's
  log was reset). The event is only a hint: the reference follows the alias, and an event
  whose version is not the alias's once checked (forged, or overtaken) is logged and counted
  as ``driftloop_model_events_ignored_total{reason="not_champion"}``;
- a periodic alias check, the safety net for a missed event (broker restarted, topic
  recreated), and :meth:`ReferenceWatcher.request_check` (the loop calls it when a replica
  already serves a newer version). A requested check also cuts a start-up wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from driftloop_contracts import EventError, InvalidReason, ModelPromoted, PromotionIgnored
from driftloop_service import (
    Backoff,
    DeadLetterPublisher,
    ModelEventsConsumer,
    ModelEventsSubscriber,
    RetryHook,
    RetryStopped,
    retrying,
    wait_or_stop,
)

from .errors import ReferenceUnavailable
from .metrics import ConsumerMetrics
from .reference import LoadedReference, ReferenceManager
from .settings import DriftConsumerSettings

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
        on_retry: RetryHook | None = None,
        on_ignored: Callable[[PromotionIgnored], None] | None = None,
    ) -> None:
        """``apply`` switches the consumer to a reference (under the loop's lock);
        ``on_retry`` counts the start-up load's retries; ``on_ignored`` counts announced
        versions the alias did not confirm."""
        self.references = references
        self._on_ignored = on_ignored
        #: Versions announced by events since the last successful alias check.
        self._announced: list[str] = []
        self.settings = settings
        self._stopping = stopping
        self._apply = apply
        self._on_retry = on_retry
        #: Set by :meth:`request_check` and by shutdown: ends any wait of the watcher.
        self._wake = asyncio.Event()
        self._backoff = Backoff(1.0, settings.reference_retry_max_seconds)
        #: Set once consuming may start: a reference is applied, or MLflow failed once.
        self.ready = asyncio.Event()

    def request_check(self, announced: str | None = None) -> None:
        """Re-read the champion alias now instead of at the next periodic check;
        ``announced`` is the version a ModelPromoted named, compared with the alias then."""
        if announced is not None:
            self._announced.append(announced)
        self._wake.set()

    def _judge_announced(self) -> None:
        """After a successful alias check: count announced versions that are not the alias's."""
        current = self.references.current
        for version in self._announced:
            if current is None or version != current.version:
                log.warning(
                    "model_event_ignored",
                    reason=str(PromotionIgnored.NOT_CHAMPION),
                    announced=version,
                    champion=current.version if current else None,
                )
                if self._on_ignored is not None:
                    self._on_ignored(PromotionIgnored.NOT_CHAMPION)
        self._announced.clear()

    async def run(self) -> None:
        """Keep the reference on the champion until shutdown: start-up load, then checks.

        A reference cached by the previous run is applied at once: windows only take events
        labelled with the reference's version, so a stale cache cannot mis-measure anything,
        and MLflow's answer (when it comes) replaces it if the champion moved meanwhile.
        """
        relay = asyncio.create_task(self._wake_on_stop(), name="reference-wake-on-stop")
        try:
            cached = self.references.load_cached()
            if cached is not None:
                log.info("reference_from_cache", model_version=cached.version)
                await self._switch(cached)
            await self._load_at_start()
            await self._check_periodically()
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    async def _wake_on_stop(self) -> None:
        await self._stopping.wait()
        self._wake.set()

    async def _load_at_start(self) -> None:
        """Ask MLflow until it answers; a requested check tries again at once."""
        while not self._stopping.is_set():
            policy = retrying(
                backoff=self._backoff,
                retry_on=ReferenceUnavailable,
                stopping=self._wake,
                on_retry=self._unavailable,
            )
            try:
                loaded: LoadedReference | None = await policy(self.references.load_champion)
            except RetryStopped:  # a check was requested, or shutdown
                self._wake.clear()
                continue
            if loaded is not None:
                await self._switch(loaded)
            self._judge_announced()
            self.ready.set()
            return

    def _unavailable(self, attempt: int, error: BaseException, delay: float) -> None:
        if self._on_retry is not None:
            self._on_retry(attempt, error, delay)
        log.warning(
            "reference_unavailable", attempt=attempt, error=str(error), retry_in_s=round(delay, 2)
        )
        self.ready.set()  # consume anyway: joins and the log need no reference

    async def _check_periodically(self) -> None:
        while not self._stopping.is_set():
            await wait_or_stop(self._wake, self.settings.reference_check_interval_seconds)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                loaded = await self.references.load_champion()
            except ReferenceUnavailable as exc:
                log.warning("reference_check_failed", error=str(exc))
                await wait_or_stop(self._stopping, 1.0)
                continue
            if loaded is not None:
                await self._switch(loaded)
            self._judge_announced()

    async def _switch(self, loaded: LoadedReference) -> None:
        await self._apply(loaded)
        self.ready.set()


# --- the model-events subscription ---------------------------------------------------------


def promotions_subscriber(
    consumer_factory: Callable[[], ModelEventsConsumer],
    *,
    model_name: str,
    topic: str,
    metrics: ConsumerMetrics,
    on_promoted: Callable[[str], None],
    dead_letters: DeadLetterPublisher | None = None,
) -> ModelEventsSubscriber:
    """The shared ``model-events`` subscriber, calling ``on_promoted(announced_version)`` for
    each promotion of ``model_name``.

    Counted like the data topics: valid events in ``driftloop_events_consumed_total``, bad
    records by reason in ``driftloop_events_invalid_total`` (an event for another model as
    ``reason="unknown_model"``), reconnects in ``driftloop_retries_total``. With ``dead_letters`` (the designated
    writer), bad records are also copied to ``model-events.dlq``.
    """

    def promoted(event: ModelPromoted) -> None:
        metrics.events_consumed.labels(topic).inc()
        if event.model_name != model_name:
            metrics.events_invalid.labels(topic, InvalidReason.UNKNOWN_MODEL).inc()
            return
        log.info("model_promoted_received", version=event.version, reason=event.reason)
        on_promoted(event.version)

    def invalid(event_topic: str, error: EventError) -> None:
        metrics.events_invalid.labels(event_topic, error.reason).inc()

    return ModelEventsSubscriber(
        consumer_factory,
        promoted,
        on_invalid=invalid,
        dead_letters=dead_letters,
        dead_letter_client=f"drift-consumer:{topic}",
        on_retry=metrics.retries.hook("model_events_consumer"),
    )
