"""The consumer loop: predictions + feedback in one consumer group, at-least-once, idempotent.

::

    while not stopping:
        batches = await consumer.getmany(timeout_ms=500)        # no lock held here
        async with lock:                                        # the rebalance listener waits
            decode (bad record: count by reason, log topic/partition/offset, skip)
            store predictions in the join store                 # Redis, retried
            windows.add(...) -> closed windows                  # pure
            feedback -> buffers, join waiting records           # Redis, retried
            flush due labelled rows                             # Parquet, retried
            write windows + online error to InfluxDB            # retried
            update Prometheus; offer the newest window to the report process
            commit: predictions up to each open window's start, feedback up to the first
                    unflushed record

A sink that keeps failing is retried with capped exponential backoff *before* the commit, so
its outage pauses commits (and consumption) instead of losing data; it shows as
``driftloop_sink_up{sink}=0``, ``driftloop_sink_failures_total`` and a 503 on
``/health/ready``, and recovery needs nothing by hand. If the outage outlasts
``max_poll_interval_ms`` the group moves our partitions elsewhere and the uncommitted work is
replayed; every sink is idempotent (see :mod:`.windows`, :mod:`.sinks.influx`,
:mod:`.sinks.labelled_log`), so a replay overwrites rather than duplicates.

``model-events`` is read by a separate group-less consumer (a broadcast) that asks the
reference task to re-read the champion alias; the alias is also re-read periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import structlog
from aiokafka.structs import TopicPartition

from driftloop_contracts import (
    FEEDBACK_TOPIC,
    MODEL_EVENTS_TOPIC,
    PREDICTIONS_TOPIC,
    EventError,
    FeedbackEvent,
    ModelPromoted,
    PredictionEvent,
    decode_event,
)
from driftloop_contracts.thresholds import ThresholdSet

from .drift import decide
from .errors import ReferenceUnavailable, SinkError
from .feedback_join import (
    FeedbackBuffer,
    Flush,
    JoinStore,
    LabelledRow,
    OnlineError,
    StoredPrediction,
)
from .reference import LoadedReference, ReferenceManager
from .reports import ReportScheduler
from .settings import DriftConsumerSettings
from .sinks.influx import InfluxSink, online_error_line, window_lines
from .sinks.labelled_log import LabelledLogWriter
from .sinks.prometheus import ConsumerMetrics
from .windows import ClosedWindow, EventBatch, WindowManager

log = structlog.get_logger(__name__)

T = TypeVar("T")
ConsumerFactory = Callable[[], Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class _Stopping(Exception):
    """Raised inside a retry when shutdown was requested: abandon the batch, commit nothing."""


def data_consumer_factory(settings: DriftConsumerSettings) -> ConsumerFactory:
    """The group consumer over predictions + feedback (manual commits)."""

    def make() -> Any:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        return AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            # Range, not aiokafka's default round robin: partition p of predictions and of
            # feedback (co-partitioned by request_id) must land on the same instance.
            partition_assignment_strategy=(RangePartitionAssignor,),
            group_id=settings.consumer_group,
            client_id=f"driftloop-drift-consumer-{settings.instance_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            max_poll_records=settings.max_poll_records,
            request_timeout_ms=max(settings.kafka_session_timeout_ms + 5_000, 40_000),
            metadata_max_age_ms=10_000,
        )

    return make


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // _US


@dataclass
class LoopStatus:
    """What ``/health/ready`` reports."""

    consumer_started: bool = False
    assigned: list[str] = field(default_factory=list)
    failing_sinks: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None


class DriftLoop:
    """Owns the data consumer, the model-events consumer and the reference/threshold state."""

    def __init__(
        self,
        settings: DriftConsumerSettings,
        *,
        metrics: ConsumerMetrics,
        windows: WindowManager,
        references: ReferenceManager,
        join_store: JoinStore,
        labelled: LabelledLogWriter,
        influx: InfluxSink | None,
        reports: ReportScheduler | None,
        consumer_factory: ConsumerFactory,
        model_events_factory: ConsumerFactory | None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.windows = windows
        self.references = references
        self.join_store = join_store
        self.labelled = labelled
        self.influx = influx
        self.reports = reports
        self._consumer_factory = consumer_factory
        self._model_events_factory = model_events_factory
        self.thresholds = ThresholdSet()
        self.stopping = asyncio.Event()
        self.status = LoopStatus()
        self._lock = asyncio.Lock()
        self._consumer: Any = None
        self._buffers: dict[int, FeedbackBuffer] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._counted_through: dict[TopicPartition, int] = {}
        #: Latest prediction event time read per partition (for feedback that waits).
        self._watermark: dict[int, datetime] = {}
        self._windows_counted: dict[tuple[str, int], int] = {}
        self._online = OnlineError(settings.online_error_rows)
        self._reference_check = asyncio.Event()
        self._reference_ready = asyncio.Event()
        self._abandoned = False
        #: Actual topic names (settings); events are decoded by the contracts' canonical ones.
        self._predictions_topic = settings.predictions_topic
        self._feedback_topic = settings.feedback_topic

    # --- thresholds and reference --------------------------------------------------------

    def set_thresholds(self, thresholds: ThresholdSet) -> None:
        self.thresholds = thresholds
        self.metrics.set_thresholds(thresholds)

    def request_reference_check(self) -> None:
        self._reference_check.set()

    async def apply_reference(self, loaded: LoadedReference) -> None:
        async with self._lock:
            previous = self.references.current
            self.windows.switch(loaded.compiled)
            self.references.accept(loaded)
            self.metrics.set_reference(loaded.version, loaded.profile.profile_id)
            for version in self._online.versions():
                if version != loaded.version:
                    self._online.forget(version)
            self._reference_ready.set()
        log.info(
            "reference_switched",
            model_version=loaded.version,
            previous=previous.version if previous else None,
            profile_id=loaded.profile.profile_id,
        )

    async def reference_task(self) -> None:
        """Keep the reference on the champion: start-up load, events, periodic check.

        A reference cached by the previous run is applied at once: windows only take events
        labelled with the reference's version, so a stale cache cannot mis-measure anything,
        and MLflow's answer (when it comes) replaces it if the champion moved meanwhile.
        """
        cached = self.references.load_cached()
        if cached is not None:
            log.info("reference_from_cache", model_version=cached.version)
            await self.apply_reference(cached)
        attempt = 0
        while not self.stopping.is_set():
            try:
                loaded = await self.references.load_champion()
                if loaded is not None:
                    await self.apply_reference(loaded)
                self._reference_ready.set()
                break
            except ReferenceUnavailable as exc:
                attempt += 1
                delay = min(self.settings.reference_retry_max_seconds, 0.5 * 2 ** min(attempt, 6))
                log.warning(
                    "reference_unavailable", attempt=attempt, error=str(exc), retry_in_s=delay
                )
                self._reference_ready.set()  # consume anyway: joins and the log need no reference
                await self._wait(delay, also=self._reference_check)
                self._reference_check.clear()
        while not self.stopping.is_set():
            await self._wait(
                self.settings.reference_check_interval_seconds, also=self._reference_check
            )
            self._reference_check.clear()
            if self.stopping.is_set():
                break
            try:
                loaded = await self.references.load_champion()
            except ReferenceUnavailable as exc:
                log.warning("reference_check_failed", error=str(exc))
                await self._wait(1.0)
                continue
            if loaded is not None:
                await self.apply_reference(loaded)

    async def model_events_task(self) -> None:
        """Read ``model-events`` (broadcast) and ask for an alias check on a promotion."""
        if self._model_events_factory is None:
            return
        delay = 0.5
        while not self.stopping.is_set():
            consumer = self._model_events_factory()
            try:
                await consumer.start()
                delay = 0.5
                while not self.stopping.is_set():
                    batches = await consumer.getmany(timeout_ms=500)
                    for tp, records in batches.items():
                        for record in records:
                            self._on_model_event(tp, record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model_events_consumer_failed", error=str(exc), retry_in_s=delay)
                await self._wait(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def _on_model_event(self, tp: TopicPartition, record: Any) -> None:
        try:
            event = decode_event(MODEL_EVENTS_TOPIC, record.value)
        except EventError as exc:
            self.metrics.events_invalid.labels(tp.topic, exc.reason).inc()
            log.warning(
                "invalid_event",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                reason=exc.reason,
                error=str(exc),
            )
            return
        self.metrics.events_consumed.labels(tp.topic).inc()
        assert isinstance(event, ModelPromoted)
        if event.model_name != self.settings.model_name:
            self.metrics.events_invalid.labels(tp.topic, "unknown_model").inc()
            return
        log.info("model_promoted_received", version=event.version, reason=event.reason)
        self.request_reference_check()

    # --- the data consumer ----------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :attr:`stopping` is set (then flush what is finished and commit).

        An unexpected error in a batch drops all in-memory state and recreates the consumer
        without committing, so the uncommitted records are simply replayed.
        """
        from .rebalance import DriftRebalanceListener

        with contextlib.suppress(TimeoutError):  # joins and the log work without a reference
            await asyncio.wait_for(self._reference_ready.wait(), 30.0)
        delay = 0.5
        while not self.stopping.is_set():
            consumer = self._consumer_factory()
            self._consumer = consumer  # the listener may run before start() returns
            self._abandoned = False
            try:
                consumer.subscribe(
                    [self._predictions_topic, self._feedback_topic],
                    listener=DriftRebalanceListener(self),
                )
                await consumer.start()
            except Exception as exc:
                self.status.last_error = f"kafka: {exc}"
                log.warning("consumer_start_failed", error=str(exc), retry_in_s=delay)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                self._consumer = None
                await self._wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.status.consumer_started = True
            try:
                await self._consume(consumer)
            except asyncio.CancelledError:
                self._abandoned = True
                raise
            except Exception as exc:
                self._abandoned = True
                self.status.last_error = f"loop: {exc!r}"
                log.exception("batch_failed_restarting_consumer", error=repr(exc))
            finally:
                self.status.consumer_started = False
                if not self._abandoned:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._final_commit(consumer), 10.0)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                self._consumer = None
                self._reset_state()
            if not self.stopping.is_set():
                await self._wait(delay)
                delay = min(delay * 2, 10.0)

    def _reset_state(self) -> None:
        self.windows.drop(self.windows.open_partitions())
        self._buffers.clear()
        self._next_offset.clear()
        self._committed.clear()
        self.status.assigned = []

    async def _consume(self, consumer: Any) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                batches = await consumer.getmany(
                    timeout_ms=self.settings.poll_timeout_ms,
                    max_records=self.settings.max_poll_records,
                )
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone: aiokafka reconnects; we back off
                self.status.last_error = f"kafka: {exc}"
                log.warning("getmany_failed", error=str(exc), retry_in_s=backoff)
                await self._wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            try:
                async with self._lock:
                    await self.step(consumer, batches)
            except _Stopping:
                self._abandoned = True  # closed windows were not written: commit nothing
                log.info("batch_abandoned_on_shutdown")
                return

    async def step(self, consumer: Any, batches: dict[TopicPartition, list[Any]]) -> None:
        """Process one fetch and commit what is safely written. Holds the lock (caller)."""
        assigned = consumer.assignment()
        now = time.monotonic()
        predictions: dict[int, list[tuple[int, PredictionEvent, tuple[float, ...]]]] = {}
        feedback: dict[int, list[tuple[int, FeedbackEvent | None]]] = {}
        for tp, records in batches.items():
            if tp not in assigned or not records:
                continue  # revoked while the batch was in flight: the new owner replays it
            self._count_consumed(tp, records)
            self._next_offset[tp] = records[-1].offset + 1
            with contextlib.suppress(Exception):
                high = consumer.highwater(tp)
                if high is not None:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(
                        max(0, high - self._next_offset[tp])
                    )
            if tp.topic == self._predictions_topic:
                predictions[tp.partition] = decoded = self._decode_predictions(tp, records)
                if decoded:
                    latest = max(e.timestamp for _, e, _ in decoded)
                    previous = self._watermark.get(tp.partition)
                    self._watermark[tp.partition] = (
                        latest if previous is None else max(previous, latest)
                    )
            elif tp.topic == self._feedback_topic:
                feedback[tp.partition] = self._decode_feedback(tp, records)

        # 1. predictions into the join store before anything can commit past them
        stored = [
            StoredPrediction.from_event(e, row[:-1])
            for evs in predictions.values()
            for _, e, row in evs
        ]
        if stored:
            await self._until_ok("redis", lambda: self.join_store.put(stored))

        # 2. windows (pure)
        closed: list[ClosedWindow] = []
        for partition, events in predictions.items():
            closed += self._window_events(partition, events)

        # 3. feedback into its buffers, then join what is waiting
        for partition, records in feedback.items():
            buffer = self._buffer(partition)
            for offset, event in records:
                if event is None:
                    buffer.add_skipped(offset, now)
                else:
                    buffer.add(offset, event, now)
        await self._resolve_waiting(now)

        # 4. labelled rows (and with them the online error)
        lines: list[str] = []
        lines += await self._flush_labelled(now, force=False)

        # 5. InfluxDB, then Prometheus
        decisions = [(w, decide(w.statistics, self.thresholds)) for w in closed]
        for window, decision in decisions:
            lines += window_lines(window, decision)
        if lines and self.influx is not None:
            influx = self.influx
            await self._until_ok("influxdb", lambda: influx.write(lines))
        current = self.references.current
        for window, decision in decisions:
            self._record_window(window, decision)
            if (
                self.reports is not None
                and current is not None
                and window.model_version == current.version
            ):
                self.reports.offer(window, current)

        # 6. commit
        await self._commit(consumer)

    # --- pieces of a step -----------------------------------------------------------------

    def _count_consumed(self, tp: TopicPartition, records: list[Any]) -> None:
        through = self._counted_through.get(tp, -1)
        fresh = sum(1 for r in records if r.offset > through)
        if fresh:
            self.metrics.events_consumed.labels(tp.topic).inc(fresh)
            self._counted_through[tp] = max(through, records[-1].offset)

    def _invalid(self, tp: TopicPartition, offset: int, reason: str, error: str) -> None:
        self.metrics.events_invalid.labels(tp.topic, reason).inc()
        log.warning(
            "invalid_event",
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            reason=reason,
            error=error[:300],
        )

    def _decode_predictions(
        self, tp: TopicPartition, records: list[Any]
    ) -> list[tuple[int, PredictionEvent, tuple[float, ...]]]:
        """Valid predictions of our model with their ``(features..., prediction)`` row."""
        out = []
        for record in records:
            try:
                event = decode_event(PREDICTIONS_TOPIC, record.value)
            except EventError as exc:
                self._invalid(tp, record.offset, exc.reason, str(exc))
                continue
            if event.model_name != self.settings.model_name:
                self._invalid(tp, record.offset, "unknown_model", event.model_name)
                continue
            try:
                row = (*event.feature_row(), event.prediction)
            except KeyError as exc:
                self._invalid(tp, record.offset, "missing_feature", str(exc))
                continue
            if not all(math.isfinite(v) for v in row):
                self._invalid(tp, record.offset, "non_finite", "NaN or infinite value")
                continue
            out.append((record.offset, event, row))
        return out

    def _decode_feedback(
        self, tp: TopicPartition, records: list[Any]
    ) -> list[tuple[int, FeedbackEvent | None]]:
        out: list[tuple[int, FeedbackEvent | None]] = []
        for record in records:
            try:
                out.append((record.offset, decode_event(FEEDBACK_TOPIC, record.value)))
            except EventError as exc:
                self._invalid(tp, record.offset, exc.reason, str(exc))
                out.append((record.offset, None))
        return out

    def _window_events(
        self, partition: int, events: list[tuple[int, PredictionEvent, tuple[float, ...]]]
    ) -> list[ClosedWindow]:
        ref = self.windows.reference
        if ref is None:
            if events:
                self.metrics.events_ignored.labels("no_reference").inc(len(events))
            return []
        mine = [x for x in events if x[1].model_version == ref.model_version]
        other = len(events) - len(mine)
        if other:
            self.metrics.events_ignored.labels("other_model_version").inc(other)
            if any(_newer(e.model_version, ref.model_version) for _, e, _ in events):
                self.request_reference_check()  # a replica already serves a newer champion
        if not mine:
            return []
        n = len(mine)
        batch = EventBatch(
            offsets=np.fromiter((o for o, _, _ in mine), dtype=np.int64, count=n),
            timestamps_us=np.fromiter((_us(e.timestamp) for _, e, _ in mine), np.int64, n),
            values=np.array([row for _, _, row in mine], dtype="float64"),
        )
        return self.windows.add(partition, batch)

    def _buffer(self, partition: int) -> FeedbackBuffer:
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._buffers[partition] = FeedbackBuffer(partition)
        return buffer

    async def _resolve_waiting(self, now: float) -> None:
        waiting = sorted({rid for b in self._buffers.values() for rid in b.waiting_ids()})
        if waiting:
            found = await self._until_ok("redis", lambda: self.join_store.get_many(waiting))
            for buffer in self._buffers.values():
                buffer.resolve(found)
        for buffer in self._buffers.values():
            settled = self._predictions_settled(buffer.partition)
            for offset in buffer.expire(now, self.settings.feedback_wait_seconds, settled):
                self._invalid(
                    TopicPartition(self._feedback_topic, buffer.partition),
                    offset,
                    "unmatched_feedback",
                    "no prediction for this request_id",
                )

    def _predictions_settled(self, partition: int) -> Callable[[datetime], bool]:
        """Whether a prediction made before a given time can still show up in the
        co-partitioned predictions partition (False while we are behind it)."""
        consumer = self._consumer
        tp = TopicPartition(self._predictions_topic, partition)
        if consumer is None or tp not in consumer.assignment():
            return lambda _ts: True  # not ours (should not happen with range assignment)
        high = None
        with contextlib.suppress(Exception):
            high = consumer.highwater(tp)
        position = self._next_offset.get(tp)
        caught_up = high is None or (position is not None and position >= high)
        watermark = self._watermark.get(partition)
        return lambda ts: caught_up or (watermark is not None and watermark >= ts)

    async def _flush_labelled(
        self, now: float, *, force: bool, partitions: set[int] | None = None
    ) -> list[str]:
        """Write due part files; returns InfluxDB lines for the online error they changed."""
        fresh_rows: list[LabelledRow] = []
        for partition, buffer in self._buffers.items():
            if partitions is not None and partition not in partitions:
                continue
            rows, oldest = buffer.ready()
            if oldest is None:
                continue
            due = (
                force
                or rows >= self.settings.labelled_flush_rows
                or now - oldest >= self.settings.labelled_flush_seconds
            )
            if not due:
                continue
            for flush in buffer.take():
                if flush.already_logged:
                    continue
                await self._until_ok("labelled_log", lambda f=flush: self._write_flush(f))
                fresh_rows += flush.rows
                self.metrics.labelled_rows.inc(len(flush.rows))
        return await self._update_online_error(fresh_rows)

    async def _write_flush(self, flush: Flush) -> None:
        await asyncio.to_thread(self.labelled.write, flush)

    async def _update_online_error(self, rows: list[LabelledRow]) -> list[str]:
        if not rows:
            return []
        by_version: dict[str, list[float]] = {}
        for row in rows:
            by_version.setdefault(row.model_version, []).append(row.error)
        current = self.references.current
        lines = []
        now_ns = time.time_ns()
        for version, errors in by_version.items():
            self._online.add(version, errors)
            if current is not None and version != current.version:
                continue  # only the champion's error is exported (alerts follow the champion)
            summary = self._online.summary(version)
            if summary is None:
                continue
            baseline = self.references.baseline_rmse(version)
            ratio = summary.rmse / baseline if baseline else None
            self.metrics.set_online_error(version, summary, ratio)
            lines.append(
                online_error_line(
                    version,
                    rmse=summary.rmse,
                    mae=summary.mae,
                    bias=summary.bias,
                    ratio=ratio,
                    rows=summary.n,
                    time_ns=now_ns,
                )
            )
        return lines

    def _record_window(self, window: ClosedWindow, decision: Any) -> None:
        current = self.references.current
        if current is not None and window.model_version != current.version:
            return
        key = (window.model_version, window.partition)
        if self._windows_counted.get(key, -1) >= window.last_offset:
            return  # a replayed window: InfluxDB overwrote it; count it once
        self._windows_counted[key] = window.last_offset
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

    def _commit_offsets(
        self, consumer: Any, only: set[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        offsets: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            if only is not None and tp not in only:
                continue
            next_offset = self._next_offset.get(tp)
            if next_offset is None:
                continue
            if tp.topic == self._predictions_topic:
                offset = self.windows.commit_offset(tp.partition, next_offset)
            else:
                buffer = self._buffers.get(tp.partition)
                offset = buffer.commit_offset(next_offset) if buffer else next_offset
            if offset > self._committed.get(tp, -1):
                offsets[tp] = offset
        return offsets

    async def _commit(self, consumer: Any, only: set[TopicPartition] | None = None) -> None:
        offsets = self._commit_offsets(consumer, only)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # membership changed or broker away: the next commit covers it
            self.status.last_error = f"commit: {exc}"
            log.warning(
                "commit_failed",
                error=str(exc),
                offsets={f"{tp.topic}-{tp.partition}": o for tp, o in offsets.items()},
            )
            return
        self._committed.update(offsets)
        self.metrics.last_commit.set(time.time())

    async def _final_commit(self, consumer: Any) -> None:
        async with self._lock:
            with contextlib.suppress(_Stopping):
                lines = await self._flush_labelled(time.monotonic(), force=True)
                if lines and self.influx is not None:
                    await self.influx.write(lines)
            await self._commit(consumer)

    # --- rebalance ------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            consumer = self._consumer
            feedback_parts = {tp.partition for tp in revoked if tp.topic == self._feedback_topic}
            if consumer is not None:
                try:
                    lines = await self._flush_labelled(
                        time.monotonic(), force=True, partitions=feedback_parts
                    )
                    if lines and self.influx is not None:
                        await self.influx.write(lines)
                    await self._commit(consumer, only=revoked)
                except Exception as exc:  # not fatal: the new owner replays from the commit
                    log.warning("revoke_flush_failed", error=str(exc))
            self._forget(revoked)
            log.info(
                "partitions_revoked",
                partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked),
            )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            consumer = self._consumer
            self._forget(assigned)
            for tp in assigned:
                committed = None
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        committed = await consumer.committed(tp)
                if committed is None:
                    self._counted_through.pop(tp, None)  # new group or new broker epoch
                else:
                    self._committed[tp] = committed
                if tp.topic == self._feedback_topic:
                    through = await asyncio.to_thread(
                        self.labelled.logged_through,
                        tp.partition,
                        committed,
                        hours=self.settings.labelled_scan_hours,
                    )
                    self._buffers[tp.partition] = FeedbackBuffer(tp.partition, through)
                    if through is not None:
                        log.info(
                            "labelled_log_recovered",
                            partition=tp.partition,
                            committed=committed,
                            logged_through=through,
                        )
            self.status.assigned = sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)
            log.info("partitions_assigned", partitions=self.status.assigned)

    def _forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._next_offset.pop(tp, None)
            self._committed.pop(tp, None)
            if tp.topic == self._predictions_topic:
                self.windows.drop([tp.partition])
                self._watermark.pop(tp.partition, None)
            elif tp.topic == self._feedback_topic:
                self._buffers.pop(tp.partition, None)

    # --- helpers --------------------------------------------------------------------------

    async def _until_ok(self, sink: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` until it succeeds, backing off; raise :class:`_Stopping` on shutdown."""
        delay = self.settings.sink_retry_initial_seconds
        while True:
            try:
                result = await op()
            except SinkError as exc:
                self.metrics.sink_failures.labels(sink).inc()
                self.metrics.set_sink_ok(sink, False)
                if sink not in self.status.failing_sinks:
                    log.warning("sink_failing", sink=sink, error=str(exc))
                self.status.failing_sinks[sink] = str(exc)
                if self.stopping.is_set():
                    raise _Stopping from exc
                await self._wait(delay)
                if self.stopping.is_set():
                    raise _Stopping from exc
                delay = min(delay * 2, self.settings.sink_retry_max_seconds)
                continue
            if self.status.failing_sinks.pop(sink, None) is not None:
                log.info("sink_recovered", sink=sink)
            self.metrics.set_sink_ok(sink, True)
            return result

    async def _wait(self, seconds: float, also: asyncio.Event | None = None) -> None:
        """Sleep up to ``seconds``; wake early on shutdown (or when ``also`` is set)."""
        waiters = [asyncio.ensure_future(self.stopping.wait())]
        if also is not None:
            waiters.append(asyncio.ensure_future(also.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    @property
    def reference_version(self) -> str | None:
        current = self.references.current
        return current.version if current else None


def _newer(candidate: str, current: str) -> bool:
    try:
        return int(candidate) > int(current)
    except ValueError:
        return False
