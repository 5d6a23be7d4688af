"""One facade over every write the consumer makes: the join store (Redis), the labelled-data
log (Parquet), InfluxDB, Prometheus and the report scheduler.

Retry policy: a write that must succeed before offsets are committed (join store, labelled
log, InfluxDB during a batch) is retried until it succeeds by the shared policy
(:func:`driftloop_service.retrying`: capped exponential backoff from
``SINK_RETRY_INITIAL_SECONDS`` to ``SINK_RETRY_MAX_SECONDS``, counted in
``driftloop_retries_total{operation="sink_<name>"}``), so an outage pauses commits (and
consumption) instead of losing data. While a sink fails it shows as ``driftloop_sink_up{sink}=0``,
``driftloop_sink_failures_total{sink}`` and an entry in ``LoopStatus.failing_sinks``
(``/health/ready`` answers 503); recovery needs nothing by hand. Shutdown cuts the wait short
and ends the retry with :class:`driftloop_service.RetryStopped`: the caller abandons the batch
and commits nothing. Every sink is idempotent, so a replay overwrites rather than duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aiokafka.structs import TopicPartition

from driftloop_service import Backoff, retrying

from ..decoding import Invalid
from ..drift import DriftDecision
from ..errors import SinkError
from ..feedback_join import Flush, JoinStore, LabelledRow, StoredPrediction
from ..metrics import ConsumerMetrics
from ..reference import LoadedReference
from ..reports import ReportScheduler
from ..settings import DriftConsumerSettings
from ..watch import watch_rows
from ..watch_store import WatchStore
from ..windows import ClosedWindow
from .influx import InfluxSink
from .labelled_log import LabelledLogWriter

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Sinks:
    """The consumer's writes, each named for what it writes; retried ones say so."""

    def __init__(
        self,
        settings: DriftConsumerSettings,
        *,
        metrics: ConsumerMetrics,
        join_store: JoinStore,
        labelled: LabelledLogWriter,
        influx: InfluxSink | None,
        reports: ReportScheduler | None,
        stopping: asyncio.Event,
        failing: dict[str, str],
        watch: WatchStore | None = None,
    ) -> None:
        """``failing`` is the dict ``/health/ready`` reads (sink name -> last error);
        ``watch``: where rows with a shadow prediction go (``None``: nowhere)."""
        self.settings = settings
        self.metrics = metrics
        self.join_store = join_store
        self.labelled = labelled
        self.influx = influx
        self.reports = reports
        self.watch = watch
        self._stopping = stopping
        self._failing = failing
        self._backoff = Backoff(
            settings.sink_retry_initial_seconds, settings.sink_retry_max_seconds
        )

    # --- Redis: the join store ----------------------------------------------------------

    async def store_predictions(self, predictions: list[StoredPrediction]) -> None:
        """Predictions wait in Redis for their feedback (retried)."""
        if predictions:
            await self._until_ok("redis", lambda: self.join_store.put(predictions))

    async def find_predictions(self, request_ids: list[str]) -> dict[str, StoredPrediction]:
        """The stored predictions of these requests, where present (retried)."""
        return await self._until_ok("redis", lambda: self.join_store.get_many(request_ids))

    async def claim_labels(self, claims: list[tuple[str, str]]) -> dict[str, str]:
        """Which feedback record labels each request (first claim wins; retried)."""
        if not claims:
            return {}
        return await self._until_ok("redis", lambda: self.join_store.claim_labels(claims))

    async def record_watch(self, rows: list[LabelledRow]) -> None:
        """Both models' errors of rows with a shadow prediction (retried; idempotent per
        request, see :mod:`..watch_store`). Written before the rows' part file, so a crash in
        between replays them into the same fields instead of losing them."""
        watch = self.watch
        pairs = watch_rows(rows) if watch is not None else {}
        if watch is not None and pairs:
            await self._until_ok("redis", lambda: watch.add(pairs))

    # --- the labelled-data log ----------------------------------------------------------

    async def write_labelled(self, flush: Flush) -> None:
        """One part file, retried; counts the rows."""
        await self._until_ok("labelled_log", lambda: asyncio.to_thread(self.labelled.write, flush))
        self.metrics.labelled_rows.inc(len(flush.rows))

    async def logged_through(self, partition: int, committed: int | None) -> int | None:
        """Last feedback offset already in the log beyond ``committed`` (part files written
        but not committed before a crash or a rebalance)."""
        return await asyncio.to_thread(
            self.labelled.logged_through,
            partition,
            committed,
            hours=self.settings.labelled_scan_hours,
        )

    # --- InfluxDB -----------------------------------------------------------------------

    async def write_points(self, lines: list[str]) -> None:
        """Line-protocol points, retried until InfluxDB takes them (no-op when disabled)."""
        influx = self.influx
        if lines and influx is not None:
            await self._until_ok("influxdb", lambda: influx.write(lines))

    async def write_points_once(self, lines: list[str]) -> None:
        """Points written once, without the retry (on revoke and at shutdown: a failure
        leaves the offsets uncommitted and the next owner replays them)."""
        if lines and self.influx is not None:
            await self.influx.write(lines)

    # --- Prometheus, logs and reports ---------------------------------------------------

    def skip(self, tp: TopicPartition, invalid: Invalid) -> None:
        """Count and log a record that is skipped."""
        self.metrics.events_invalid.labels(tp.topic, invalid.reason).inc()
        log.warning(
            "invalid_event",
            topic=tp.topic,
            partition=tp.partition,
            offset=invalid.offset,
            reason=invalid.reason,
            error=invalid.error[:300],
        )

    def record_window(self, window: ClosedWindow, decision: DriftDecision) -> None:
        """A champion window closed (counted once): gauges, counters, and a log on drift."""
        self.metrics.record_window(window, decision)
        if decision.any_drift:
            log.info(
                "drift_declared",
                model_version=window.model_version,
                partition=window.partition,
                first_offset=window.first_offset,
                crossed={k: v for k, v in decision.crossed.items() if v},
                drift_share=decision.drift_share,
            )

    def offer_report(self, window: ClosedWindow, reference: LoadedReference) -> None:
        """The newest champion window, for the next Evidently report (if reports are on)."""
        if self.reports is not None:
            self.reports.offer(window, reference)

    # --- retry --------------------------------------------------------------------------

    async def retried(self, sink: str, op: Callable[[], Awaitable[T]]) -> T:
        """Any other write or read that must succeed before the commit (e.g. the shared
        windows' Redis, :mod:`..shared_merge`), with this class's retry and counters."""
        return await self._until_ok(sink, op)

    async def _until_ok(self, sink: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` until it succeeds, backing off; raise ``RetryStopped`` on shutdown."""
        count_retry = self.metrics.retries.hook(f"sink_{sink}")

        def failed(attempt: int, error: BaseException, delay: float) -> None:
            count_retry(attempt, error, delay)
            self.metrics.sink_failures.labels(sink).inc()
            self.metrics.set_sink_ok(sink, False)
            if sink not in self._failing:
                log.warning("sink_failing", sink=sink, error=str(error))
            self._failing[sink] = str(error)

        policy = retrying(
            backoff=self._backoff, retry_on=SinkError, stopping=self._stopping, on_retry=failed
        )
        async for attempt in policy:  # ``op`` returns an awaitable: not a coroutine function
            with attempt:
                result = await op()
        if self._failing.pop(sink, None) is not None:
            log.info("sink_recovered", sink=sink)
        self.metrics.set_sink_ok(sink, True)
        return result
