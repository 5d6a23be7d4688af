"""The consumer loop: predictions + feedback in one consumer group, at-least-once, idempotent.

::

    while not stopping:
        batches = await consumer.getmany(timeout_ms=500)        # no lock held here
        async with lock:                                        # the rebalance listener waits
            decode (bad record: count by reason, log topic/partition/offset, hold its
                    dead letter, skip)
            store predictions in the join store                 # Redis, retried
            windows.add(...) -> closed windows                  # pure
            (SHARED_WINDOWS: publish finished slot partials,    # Redis, retried
             merge the group's windows if we hold the lease;   # shared_merge.py
             commits never pass an unpublished partial)
            feedback -> buffers, join waiting records           # Redis, retried
            flush due labelled rows                             # Parquet, retried
            write windows + online error to InfluxDB            # retried
            update Prometheus; offer the newest window to the report process
            publish the held dead letters to <topic>.dlq          # acked or given up
            commit: predictions up to each open window's start, feedback up to the first
                    unflushed record

The parts: :mod:`.decoding` (pure), :class:`~.partition_state.PartitionState` (offsets,
watermarks, windows, feedback buffers; no I/O), :class:`~.labelled_rows.LabelledRows` (feedback
join -> labelled log -> online error), :class:`~.sinks.facade.Sinks` (every write, and the
retry), :class:`~.dead_letters.DeadLetters`, :class:`~.committer.Committer`, :class:`~.rebalance.DriftRebalanceListener` (revoke and
assign) and :class:`~.reference_watcher.ReferenceWatcher` (the champion's profile).

A sink that keeps failing is retried with capped exponential backoff *before* the commit, so
its outage pauses commits (and consumption) instead of losing data (see :mod:`.sinks.facade`).
If the outage outlasts ``max_poll_interval_ms`` the group moves our partitions elsewhere and
the uncommitted work is replayed; every sink is idempotent (see :mod:`.windows`,
:mod:`.sinks.influx`, :mod:`.sinks.labelled_log`), so a replay overwrites rather than
duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

import structlog
from aiokafka.structs import TopicPartition

from driftloop_contracts.thresholds import ThresholdSet
from driftloop_service import (
    Backoff,
    DeadLetterPublisher,
    ModelEventsConsumer,
    RetryStopped,
    release_freed_memory,
    retrying,
)

from .committer import Committer
from .dead_letters import DeadLetters
from .decoding import (
    DecodedFeedback,
    DecodedPrediction,
    EventClock,
    RawRecord,
    decode_feedback,
    decode_predictions,
)
from .drift import DriftDecision, ReferenceThresholds, decide
from .feedback_join import JoinStore, StoredPrediction
from .kafka_consumer import ConsumerFactory, DataConsumer
from .labelled_rows import LabelledRows
from .metrics import ConsumerMetrics
from .partition_state import PartitionState
from .rebalance import DriftRebalanceListener
from .reference import LoadedReference, ReferenceManager
from .reference_watcher import ReferenceWatcher, promotions_subscriber
from .reports import ReportScheduler
from .sequential import cached_design, calibrated_design
from .settings import DriftConsumerSettings
from .shared_merge import SharedMerge
from .shared_store import SharedStore
from .shared_windows import SharedWindows
from .sinks.facade import Sinks
from .sinks.influx import InfluxSink, window_lines
from .sinks.labelled_log import LabelledLogWriter
from .status import LoopStatus
from .watch_store import WatchStore
from .windows import ClosedWindow, MergedWindows, WindowManager

log = structlog.get_logger(__name__)

#: Waits before recreating a consumer that failed to start or whose batch failed: 0.5 s
#: doubling up to 10 s. Not reset by a session that worked: a batch that keeps failing is
#: retried ever more slowly.
RESTART_BACKOFF = Backoff(0.5, 10.0)
#: Waits between fetches while the broker is away: 0.5 s doubling up to 10 s, from 0.5 s
#: again after every successful fetch.
FETCH_BACKOFF = Backoff(0.5, 10.0)


class DriftLoop:
    """Owns the data consumer and wires its parts; also runs the reference watcher and the
    model-events subscription (as tasks the app starts)."""

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
        model_events_factory: Callable[[], ModelEventsConsumer] | None,
        dead_letters: DeadLetterPublisher | None = None,
        watch_store: WatchStore | None = None,
        shared_store: SharedStore | None = None,
    ) -> None:
        """``dead_letters=None``: bad records are counted and skipped, not dead-lettered;
        ``watch_store``: where the post-promotion watch's rows go (:mod:`.watch_store`);
        ``shared_store``: where the group's slot partials meet (``SHARED_WINDOWS`` on)."""
        self.settings = settings
        self.metrics = metrics
        self.references = references
        self.thresholds = ThresholdSet()
        self.applied = ReferenceThresholds(self.thresholds)
        self.stopping = asyncio.Event()
        self.status = LoopStatus()
        self._consumer_factory = consumer_factory
        #: Held around processing + committing a batch and by the rebalance listener; never
        #: around ``getmany``.
        self._lock = asyncio.Lock()
        self._abandoned = False
        #: Wall time when the last fetch began: the shared windows' idle rule compares slots
        #: with it, not with the time after a slow batch (the high watermarks are as old).
        self._fetched_at: float | None = None
        #: Detector calibrations in flight (kept referenced until done).
        self._calibrations: set[asyncio.Task[None]] = set()
        self._count_restart = metrics.retries.hook("consumer_restart")
        self._count_fetch_retry = metrics.retries.hook("kafka_fetch")
        shared = (
            SharedWindows(
                settings.merge_window_seconds,
                idle_grace_seconds=settings.merge_idle_grace_seconds,
            )
            if settings.shared_windows and shared_store is not None
            else None
        )
        self.state = PartitionState(
            windows,
            predictions_topic=settings.predictions_topic,
            feedback_topic=settings.feedback_topic,
            gap_patience_s=settings.fetch_gap_patience_seconds,
            merged=(
                MergedWindows(
                    settings.merge_window_seconds,
                    settings.min_window_events,
                    idle_grace_seconds=settings.merge_idle_grace_seconds,
                    ks_method=settings.ks_method,
                )
                if settings.merge_window_seconds > 0 and shared is None
                else None
            ),
            shared=shared,
        )
        self.sinks = Sinks(
            settings,
            metrics=metrics,
            join_store=join_store,
            labelled=labelled,
            influx=influx,
            reports=reports,
            stopping=self.stopping,
            failing=self.status.failing_sinks,
            watch=watch_store,
        )
        self.shared = (
            SharedMerge(
                shared,
                shared_store,
                sinks=self.sinks,
                metrics=metrics,
                min_events=settings.min_window_events,
                lease_seconds=settings.shared_lease_seconds,
                late_seconds=settings.shared_late_seconds,
                ks_method=settings.ks_method,
            )
            if shared is not None and shared_store is not None
            else None
        )
        self.labelled_rows = LabelledRows(
            settings, state=self.state, sinks=self.sinks, references=references
        )
        self.dead_letters = DeadLetters(
            dead_letters, consumer=f"drift-consumer-{settings.instance_id}", stopping=self.stopping
        )
        if dead_letters is not None:
            metrics.start_dead_letter_series(
                [settings.predictions_topic, settings.feedback_topic]
                + ([settings.model_events_topic] if settings.model_events_dead_letters else [])
            )
        self._future_skew = timedelta(seconds=settings.max_event_future_skew_seconds)
        self.committer = Committer(
            self.state, metrics=metrics, status=self.status, dead_letters=self.dead_letters
        )
        self.watcher = ReferenceWatcher(
            references,
            settings=settings,
            stopping=self.stopping,
            apply=self.apply_reference,
            on_retry=metrics.retries.hook("reference_load"),
            on_ignored=lambda reason: metrics.model_events_ignored.labels(reason).inc(),
        )
        self.model_events = (
            promotions_subscriber(
                model_events_factory,
                model_name=settings.model_name,
                topic=settings.model_events_topic,
                metrics=metrics,
                on_promoted=self.watcher.request_check,
                dead_letters=dead_letters if settings.model_events_dead_letters else None,
            )
            if model_events_factory is not None
            else None
        )

    # --- thresholds and reference --------------------------------------------------------

    def set_thresholds(self, thresholds: ThresholdSet) -> None:
        self.thresholds = thresholds
        self._apply_thresholds()

    def _apply_thresholds(self) -> None:
        """Widen the configured thresholds for the current reference (drift.ReferenceThresholds)
        and export what is applied: the alert rules compare with the gauges."""
        current = self.references.current
        self.applied = ReferenceThresholds.of(
            self.thresholds, current.compiled if current else None
        )
        self.metrics.set_thresholds(self.thresholds, self.applied)

    def request_reference_check(self) -> None:
        self.watcher.request_check()

    @property
    def reference_version(self) -> str | None:
        current = self.references.current
        return current.version if current else None

    async def apply_reference(self, loaded: LoadedReference) -> None:
        """Switch windows, metrics and online error to ``loaded`` between two batches. The
        sequential detector follows once its threshold is calibrated (a few seconds of numpy,
        off the event loop, once per profile): windows and readiness never wait for it."""
        design = cached_design(loaded.compiled, **self._detector_params())
        async with self._lock:
            previous = self.references.current
            self.state.switch_reference(loaded.compiled, design)
            self.references.accept(loaded)
            self.metrics.set_reference(loaded.version, loaded.profile.profile_id)
            self.labelled_rows.keep_only(loaded.version)
            self._apply_thresholds()
        log.info(
            "reference_switched",
            model_version=loaded.version,
            previous=previous.version if previous else None,
            profile_id=loaded.profile.profile_id,
        )
        if design is None and self.settings.sequential_ert_events > 0:
            task = asyncio.create_task(self._calibrate_detector(loaded))
            self._calibrations.add(task)
            task.add_done_callback(self._calibrations.discard)

    def _detector_params(self) -> dict[str, float]:
        return {
            "shift_sd": self.settings.sequential_shift_sd,
            "ert": self.settings.sequential_ert_events,
            "alert_ert": self.settings.sequential_alert_ert_events,
        }

    async def _calibrate_detector(self, loaded: LoadedReference) -> None:
        """Calibrate the detector for ``loaded`` in a thread; install it if ``loaded`` is
        still the reference (events read meanwhile are not fed to it)."""
        try:
            design = await asyncio.to_thread(
                calibrated_design, loaded.compiled, **self._detector_params()
            )
        except Exception as exc:  # never takes the consumer down: windows still decide
            log.error("sequential_calibration_failed", error=repr(exc))
            return
        finally:  # its temporaries (~100 MiB) stay resident in glibc's arenas otherwise
            await asyncio.to_thread(release_freed_memory)
        async with self._lock:
            current = self.references.current
            if current is not None and current.compiled is loaded.compiled:
                self.state.install_detector(design)
        log.info(
            "sequential_detector_calibrated",
            threshold=design.threshold,
            ert=design.ert,
            alert_threshold=design.alert_threshold,
            alert_ert=design.alert_ert,
            alert_exponent=round(design.alert_exponent, 3),
        )

    async def reference_task(self) -> None:
        """Keep the reference on the champion (see :class:`ReferenceWatcher`)."""
        await self.watcher.run()

    async def model_events_task(self) -> None:
        """Read ``model-events`` (broadcast) and ask for an alias check on a promotion."""
        if self.model_events is not None:
            await self.model_events.run(self.stopping)

    # --- the data consumer ----------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :attr:`stopping` is set (then flush what is finished and commit).

        A consumer that fails to start, or an unexpected error in a batch, drops all
        in-memory state and recreates the consumer without committing (the uncommitted
        records are simply replayed), after the shared capped backoff
        (:data:`RESTART_BACKOFF`, ``driftloop_retries_total{operation="consumer_restart"}``).
        """
        with contextlib.suppress(TimeoutError):  # joins and the log work without a reference
            await asyncio.wait_for(self.watcher.ready.wait(), 30.0)
        policy = retrying(
            backoff=RESTART_BACKOFF, stopping=self.stopping, on_retry=self._restarting
        )
        with contextlib.suppress(RetryStopped):
            async for attempt in policy:
                with attempt:
                    await self._session()

    def _restarting(self, attempt: int, error: BaseException, delay: float) -> None:
        self._count_restart(attempt, error, delay)
        log.warning("consumer_restarting", attempt=attempt, retry_in_s=round(delay, 2))

    async def _session(self) -> None:
        """One consumer from start to stop: consume until :attr:`stopping`, then commit what
        is written. Raises (for :meth:`run` to restart it) when it fails to start or a batch
        fails; a failed batch leaves everything uncommitted."""
        consumer = self._consumer_factory()
        self._abandoned = False
        try:
            consumer.subscribe(
                [self.settings.predictions_topic, self.settings.feedback_topic],
                listener=DriftRebalanceListener(
                    consumer,
                    lock=self._lock,
                    state=self.state,
                    labelled_rows=self.labelled_rows,
                    sinks=self.sinks,
                    committer=self.committer,
                    status=self.status,
                ),
            )
            await consumer.start()
        except Exception as exc:
            self.status.last_error = f"kafka: {exc}"
            log.warning("consumer_start_failed", error=str(exc))
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
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
            raise
        finally:
            self.status.consumer_started = False
            if not self._abandoned:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._final_commit(consumer), 10.0)
            with contextlib.suppress(Exception):
                await consumer.stop()
            self.state.reset()
            self.dead_letters.reset()
            self.status.assigned = []

    async def _consume(self, consumer: DataConsumer) -> None:
        while not self.stopping.is_set():
            try:
                batches = await self._fetch(consumer)
            except RetryStopped:
                return  # stopped while the broker was away: the final commit follows
            try:
                async with self._lock:
                    await self.step(consumer, batches)
            except RetryStopped:
                # Stopping cut a sink retry short: the batch's closed windows were not
                # written, so commit nothing.
                self._abandoned = True
                log.info("batch_abandoned_on_shutdown")
                return

    async def _fetch(self, consumer: DataConsumer) -> Mapping[TopicPartition, Sequence[RawRecord]]:
        """The next fetch; while the broker is away (aiokafka reconnects on its own) the
        fetch is retried with the shared backoff, which starts over after every success."""
        policy = retrying(
            backoff=FETCH_BACKOFF, stopping=self.stopping, on_retry=self._fetch_failed
        )
        batches: Mapping[TopicPartition, Sequence[RawRecord]] = {}
        async for attempt in policy:
            with attempt:
                self._fetched_at = time.time()
                batches = await consumer.getmany(
                    timeout_ms=self.settings.poll_timeout_ms,
                    max_records=self.settings.max_poll_records,
                )
        return batches

    def _fetch_failed(self, attempt: int, error: BaseException, delay: float) -> None:
        self._count_fetch_retry(attempt, error, delay)
        self.status.last_error = f"kafka: {error}"
        log.warning("getmany_failed", error=str(error), retry_in_s=round(delay, 2))

    async def step(
        self, consumer: DataConsumer, batches: Mapping[TopicPartition, Sequence[RawRecord]]
    ) -> None:
        """Process one fetch and commit what is safely written. Holds the lock (caller)."""
        now = time.monotonic()
        predictions, feedback = self._read(consumer, batches)

        # 1. predictions into the join store before anything can commit past them
        stored = [
            StoredPrediction.from_event(p.event, p.row[:-1])
            for decoded in predictions.values()
            for p in decoded
        ]
        await self.sinks.store_predictions(stored)

        # 2. windows (pure; shared ones first read their partitions' progress)
        if self.shared is not None:
            await self.shared.load(self.state.owned_predictions(consumer))
        closed: list[ClosedWindow] = []
        for partition, decoded in predictions.items():
            update = self.state.add_predictions(partition, decoded)
            if update.no_reference:
                self.metrics.events_ignored.labels("no_reference").inc(update.no_reference)
            if update.other_version:
                self.metrics.events_ignored.labels("other_model_version").inc(update.other_version)
            if update.newer_version_seen:
                self.request_reference_check()  # a replica already serves a newer champion
            closed += update.closed
        closed += self.state.merged_ready(consumer)
        shared_decisions = await self._share(consumer)
        detector = self.state.detector
        alerted_before = detector.alert_at if detector is not None else 0
        alarm = self.state.detect()  # the fetch's events of every partition, in event time
        if detector is not None and predictions:
            self.metrics.record_detector(detector, alarm)
            if detector.alert_at and not alerted_before:
                log.warning(
                    "sequential_drift_alert_level",
                    model_version=detector.model_version,
                    events=detector.alert_at,
                    alert_threshold=detector.design.alert_threshold,
                )
            if alarm:
                log.warning(
                    "sequential_drift_alarm",
                    model_version=detector.model_version,
                    events=detector.alarm_at,
                    series=[
                        n
                        for n, v in zip(detector.design.names, detector.per_series(), strict=True)
                        if v > detector.design.threshold
                    ],
                )

        # 3. feedback into its buffers, then join what is waiting
        for partition, records in feedback.items():
            self.state.add_feedback(partition, records, now)
        await self.labelled_rows.resolve_waiting(now, consumer)

        # 4. labelled rows (and with them the online error)
        lines = await self.labelled_rows.flush(now, force=False)

        # 5. InfluxDB, then Prometheus and the report
        decisions = [(w, decide(w.statistics, self.applied)) for w in closed]
        for window, decision in decisions:
            lines += window_lines(window, decision)
        await self.sinks.write_points(lines)
        decisions += shared_decisions  # written and closed by _share already
        current = self.references.current
        for window, decision in decisions:
            champion = current is None or window.model_version == current.version
            if champion and self.state.first_count(window):
                self.sinks.record_window(window, decision)
            if current is not None and window.model_version == current.version:
                self.sinks.offer_report(window, current)

        # 6. dead letters of the batch's bad records, acknowledged (or given up) before
        # 7. the commit, which never passes one still held
        await self.dead_letters.publish()
        await self.committer.commit(consumer)

    async def _share(self, consumer: DataConsumer) -> list[tuple[ClosedWindow, DriftDecision]]:
        """Windows merged across the group (:mod:`.shared_merge`): publish this instance's
        finished partials, then merge what every partition has passed if we hold the lease."""
        if self.shared is None:
            return []
        now_us = round((self._fetched_at or time.time()) * 1e6)
        await self.shared.publish(now_us, lambda p: self.state.caught_up(consumer, p))
        topic_partitions = None
        with contextlib.suppress(Exception):  # metadata not loaded yet: merge next time
            known = consumer.partitions_for_topic(self.settings.predictions_topic)  # type: ignore[attr-defined]
            topic_partitions = set(known) if known else None
        return await self.shared.aggregate(
            topic_partitions, now_us, lambda stats: decide(stats, self.applied)
        )

    def _without_gaps(
        self, consumer: DataConsumer, tp: TopicPartition, records: Sequence[RawRecord]
    ) -> Sequence[RawRecord]:
        """The records before an offset the fetch skipped; the partition is read again from
        there (see :meth:`PartitionState.gap_free` for why a fetch can skip one)."""
        check = self.state.gap_free(tp, records)
        if check.refetch_from is not None:
            consumer.seek(tp, check.refetch_from)
            if check.new_gap:
                self.metrics.fetch_gaps.labels(tp.topic, "refetched").inc()
                log.info(
                    "fetch_skipped_offset_refetching",
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=check.refetch_from,
                )
        if check.accepted_gap:
            self.metrics.fetch_gaps.labels(tp.topic, "lost").inc()
            log.error(
                "fetch_gap_accepted_records_lost",
                topic=tp.topic,
                partition=tp.partition,
                patience_s=self.settings.fetch_gap_patience_seconds,
            )
        return check.records

    def _read(
        self, consumer: DataConsumer, batches: Mapping[TopicPartition, Sequence[RawRecord]]
    ) -> tuple[dict[int, list[DecodedPrediction]], dict[int, list[DecodedFeedback]]]:
        """Decode a fetch per partition; count what is read, the lag and what is skipped."""
        assigned = consumer.assignment()
        clock = EventClock.current(self._future_skew)
        predictions: dict[int, list[DecodedPrediction]] = {}
        feedback: dict[int, list[DecodedFeedback]] = {}
        for tp, records in batches.items():
            if tp not in assigned or not records:
                continue  # revoked while the batch was in flight: the new owner replays it
            records = self._without_gaps(consumer, tp, records)
            if not records:
                continue
            fresh = self.state.read(tp, records)
            if fresh:
                self.metrics.events_consumed.labels(tp.topic).inc(fresh)
            with contextlib.suppress(Exception):
                high = consumer.highwater(tp)
                if high is not None:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(
                        max(0, high - self.state.next_offset[tp])
                    )
            if tp.topic == self.settings.predictions_topic:
                valid, invalid = decode_predictions(
                    records, model_name=self.settings.model_name, clock=clock
                )
                predictions[tp.partition] = valid
                self.state.advance_watermark(tp.partition, valid)
            elif tp.topic == self.settings.feedback_topic:
                feedback[tp.partition], invalid = decode_feedback(records, clock=clock)
            else:
                continue
            for skipped in invalid:
                self.sinks.skip(tp, skipped)
                self.dead_letters.hold(tp, skipped)
        return predictions, feedback

    async def _final_commit(self, consumer: DataConsumer) -> None:
        """At shutdown: write what is finished (once), then commit it. If a write fails,
        commit nothing: rows taken for a part file that was not written must be replayed."""
        async with self._lock:
            try:
                lines = await self.labelled_rows.flush(time.monotonic(), force=True)
                await self.sinks.write_points_once(lines)
            except RetryStopped:
                log.warning("final_flush_failed_nothing_committed")
                return
            await self.committer.commit(consumer)
