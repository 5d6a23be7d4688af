"""The labelled-rows pipeline: feedback joins its prediction, joined rows go to the labelled-data
log, and the log's new rows update the online error.

::

    feedback records -> per-partition buffers        (PartitionState.add_feedback)
    waiting records  -> joined from Redis            (resolve_waiting; or given up on once the
                                                      predictions partition is past their time)
    decided prefix   -> part file, then online error (flush; InfluxDB lines returned)

Only the champion's online error is exported (alerts follow the champion); the error of
other versions is kept until the reference moves past them. See :mod:`.feedback_join` for the
exactly-once argument.
"""

from __future__ import annotations

import time

import structlog
from aiokafka.structs import TopicPartition

from driftloop_contracts import InvalidReason

from .decoding import Invalid
from .feedback_join import LabelledRow, OnlineError
from .kafka_consumer import DataConsumer
from .partition_state import PartitionState
from .reference import ReferenceManager
from .settings import DriftConsumerSettings
from .sinks.facade import Sinks
from .sinks.influx import online_error_line

log = structlog.get_logger(__name__)


class LabelledRows:
    """Joins, flushes and measures the feedback of the partitions in :class:`PartitionState`."""

    def __init__(
        self,
        settings: DriftConsumerSettings,
        *,
        state: PartitionState,
        sinks: Sinks,
        references: ReferenceManager,
    ) -> None:
        self.settings = settings
        self.state = state
        self.sinks = sinks
        self.references = references
        self.online = OnlineError(settings.online_error_rows)
        #: (the detector in alert, when this consumer first saw it so): bounds the fast flush.
        self._incident: tuple[object, float] | None = None

    def flush_interval(self, now: float) -> float:
        """How old a partition's oldest joined row may get before it is flushed: shorter
        while the champion's sequential detector is in alert (settings, "incident")."""
        detector = self.state.detector
        if detector is None or not detector.in_alert:
            self._incident = None
            return self.settings.labelled_flush_seconds
        if self._incident is None or self._incident[0] is not detector:
            self._incident = (detector, now)
            log.info(
                "labelled_incident_flush",
                model_version=detector.model_version,
                flush_seconds=self.settings.labelled_incident_flush_seconds,
                for_seconds=self.settings.labelled_incident_max_seconds,
            )
        if now - self._incident[1] <= self.settings.labelled_incident_max_seconds:
            return min(
                self.settings.labelled_incident_flush_seconds, self.settings.labelled_flush_seconds
            )
        return self.settings.labelled_flush_seconds

    async def resolve_waiting(self, now: float, consumer: DataConsumer) -> None:
        """Join waiting feedback whose prediction is in the store (one row per request: the
        first record to claim it; later ones are counted as ``duplicate_label``); give up on
        feedback whose prediction can no longer arrive (counted as ``unmatched_feedback``)."""
        buffers = self.state.buffers
        waiting = sorted({rid for b in buffers.values() for rid in b.waiting_ids()})
        if waiting:
            found = await self.sinks.find_predictions(waiting)
            claims = [c for b in buffers.values() for c in b.label_claims(found)]
            owners = await self.sinks.claim_labels(claims)
            for buffer in buffers.values():
                tp = TopicPartition(self.state.feedback_topic, buffer.partition)
                for offset in buffer.resolve(found, owners).duplicates:
                    self.sinks.skip(
                        tp,
                        Invalid(
                            offset,
                            InvalidReason.DUPLICATE_LABEL,
                            "request already labelled (first label wins)",
                        ),
                    )
        for buffer in buffers.values():
            settled = self.state.predictions_settled(buffer.partition, consumer)
            for offset in buffer.expire(now, self.settings.feedback_wait_seconds, settled):
                self.sinks.skip(
                    TopicPartition(self.state.feedback_topic, buffer.partition),
                    Invalid(
                        offset,
                        InvalidReason.UNMATCHED_FEEDBACK,
                        "no prediction for this request_id",
                    ),
                )

    async def flush(
        self, now: float, *, force: bool, partitions: set[int] | None = None
    ) -> list[str]:
        """Write due part files (all of them if ``force``); returns InfluxDB lines for the
        online error they changed."""
        fresh_rows: list[LabelledRow] = []
        interval = self.flush_interval(now)
        for partition, buffer in self.state.buffers.items():
            if partitions is not None and partition not in partitions:
                continue
            rows, oldest = buffer.ready()
            if oldest is None:
                continue
            due = force or rows >= self.settings.labelled_flush_rows or now - oldest >= interval
            if not due:
                continue
            for flush in buffer.take():
                if flush.already_logged:
                    continue
                await self.sinks.record_watch(flush.rows)
                await self.sinks.write_labelled(flush)
                fresh_rows += flush.rows
        return self._update_online_error(fresh_rows)

    def keep_only(self, version: str) -> None:
        """The reference moved to ``version``: forget every other version's online error."""
        for other in self.online.versions():
            if other != version:
                self.online.forget(other)

    def _update_online_error(self, rows: list[LabelledRow]) -> list[str]:
        if not rows:
            return []
        by_version: dict[str, list[float]] = {}
        for row in rows:
            by_version.setdefault(row.model_version, []).append(row.error)
        current = self.references.current
        lines = []
        now_ns = time.time_ns()
        for version, errors in by_version.items():
            self.online.add(version, errors)
            if current is not None and version != current.version:
                continue  # only the champion's error is exported (alerts follow the champion)
            summary = self.online.summary(version)
            if summary is None:
                continue
            baseline = self.references.baseline_rmse(version)
            ratio = summary.rmse / baseline if baseline else None
            self.sinks.metrics.set_online_error(version, summary, ratio)
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
