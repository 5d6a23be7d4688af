"""What one instance holds per partition, in memory and without I/O: read and committed offsets,
the prediction watermark, the open windows and the feedback buffers.

Everything here can be rebuilt by reading a partition again from its committed offset, which
is what happens after a crash, a consumer restart or a rebalance (:meth:`PartitionState.forget`
and :meth:`PartitionState.reset` drop it). Two replay guards deliberately survive both, so a
replay is not counted twice in Prometheus: ``counted_through`` (records counted as consumed;
cleared only when the group has no commit for the partition, i.e. a new group or a broker
that restarted its log) and the last window counted per ``(model version, partition)``.

Commit rule (see :meth:`offsets_to_commit`): a predictions partition up to the first offset of
its open window, a feedback partition up to its first record not yet in the labelled log.

Gaps (see :meth:`gap_free`): our topics are neither compacted nor transactional, so a fetch
that jumps over an offset skipped a record. The local broker (Tansu 0.6, memory storage) does
this when two producers append to one partition at once: it reserves offsets before it stores
the batch, and a fetch in between returns the later batch without the earlier one. Reading on
past it would lose that record for good (and commit past it), so the partition is read again
from the missing offset; only a gap that outlasts ``gap_patience_s`` is accepted (an
Apache Kafka log may hold one legitimately, e.g. a transaction marker), and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from aiokafka.structs import TopicPartition

from .decoding import DecodedFeedback, DecodedPrediction, RawRecord
from .drift import CompiledReference
from .feedback_join import FeedbackBuffer
from .kafka_consumer import DataConsumer
from .sequential import CusumDesign, SequentialDetector
from .shared_windows import SharedWindows
from .windows import ClosedWindow, EventBatch, MergedWindows, WindowManager

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // _US


def _newer(candidate: str, current: str) -> bool:
    try:
        return int(candidate) > int(current)
    except ValueError:
        return False


@dataclass(frozen=True)
class WindowUpdate:
    """What adding one partition's predictions to the windows did."""

    closed: list[ClosedWindow]
    #: Valid predictions not windowed because no reference is loaded yet.
    no_reference: int = 0
    #: Valid predictions of another model version than the reference's.
    other_version: int = 0
    #: Some prediction came from a version newer than the reference (a replica already
    #: serves a new champion): worth an immediate alias check.
    newer_version_seen: bool = False


@dataclass(frozen=True)
class GapCheck:
    """What :meth:`PartitionState.gap_free` found in one partition's fetch."""

    #: The records to process now: all of them, or those before a gap.
    records: Sequence[RawRecord]
    #: Read the partition again from here (the first missing offset), or ``None``.
    refetch_from: int | None = None
    #: True the first time a gap is seen (count it once, however often it is re-read).
    new_gap: bool = False
    #: True when a gap outlasted the patience and is read past (the missing records are lost).
    accepted_gap: bool = False


class PartitionState:
    """Per-partition state of the data consumer (one instance; the loop's lock guards it)."""

    def __init__(
        self,
        windows: WindowManager,
        *,
        predictions_topic: str,
        feedback_topic: str,
        gap_patience_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        merged: MergedWindows | None = None,
        shared: SharedWindows | None = None,
    ) -> None:
        """``merged``: decide on windows merged over the owned partitions (time-aligned
        slots) instead of ``windows``' per-partition ones; ``shared``: publish the slot
        partials for a merge across the whole group instead (:mod:`.shared_merge`)."""
        self.windows = windows
        self.merged = merged
        self.shared = shared
        self.gap_patience_s = gap_patience_s
        self._clock = clock
        #: Per partition: the offset missing from a fetch and when it was first missed.
        self._gaps: dict[TopicPartition, tuple[int, float]] = {}
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        #: Next offset to read per partition (the last record handed to us + 1).
        self.next_offset: dict[TopicPartition, int] = {}
        #: Last offset committed by us (or found committed on assignment).
        self.committed: dict[TopicPartition, int] = {}
        #: Feedback buffers per feedback partition.
        self.buffers: dict[int, FeedbackBuffer] = {}
        self._counted_through: dict[TopicPartition, int] = {}
        #: Latest prediction event time read per partition (for feedback that waits).
        self._watermark: dict[int, datetime] = {}
        self._windows_counted: dict[tuple[str, int], int] = {}
        #: The sequential detector of the reference's version (None: off or no reference).
        self.detector: SequentialDetector | None = None
        #: Per predictions partition, the last offset fed to a detector: a replay after a
        #: restart or a rebalance does not feed the same event twice (survives both, like
        #: ``_counted_through``).
        self._detected_through: dict[int, int] = {}
        #: ``(event times, bin indices)`` of this fetch's fresh events, for :meth:`detect`.
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    # --- reading ------------------------------------------------------------------------

    def gap_free(self, tp: TopicPartition, records: Sequence[RawRecord]) -> GapCheck:
        """The records of a fetch up to the first offset it skipped (see the module doc)."""
        if not records:
            self._gaps.pop(tp, None)
            return GapCheck(records)
        known = self.next_offset.get(tp, self.committed.get(tp))
        # A new group (nothing read or committed yet): the log starts where the fetch does.
        expected = known if known is not None else records[0].offset
        for i, record in enumerate(records):
            if record.offset > expected:
                missing_since = self._gaps.get(tp)
                now = self._clock()
                if missing_since is None or missing_since[0] != expected:
                    self._gaps[tp] = (expected, now)
                    return GapCheck(records[:i], refetch_from=expected, new_gap=True)
                if now - missing_since[1] < self.gap_patience_s:
                    return GapCheck(records[:i], refetch_from=expected)
                del self._gaps[tp]
                return GapCheck(records, accepted_gap=True)
            expected = max(expected, record.offset + 1)
        self._gaps.pop(tp, None)
        return GapCheck(records)

    def read(self, tp: TopicPartition, records: Sequence[RawRecord]) -> int:
        """Note that ``records`` were read; returns how many are read for the first time (a
        replay after a restart is counted once)."""
        through = self._counted_through.get(tp, -1)
        fresh = sum(1 for r in records if r.offset > through)
        if fresh:
            self._counted_through[tp] = max(through, records[-1].offset)
        self.next_offset[tp] = records[-1].offset + 1
        return fresh

    def advance_watermark(self, partition: int, predictions: list[DecodedPrediction]) -> None:
        """The predictions partition has been read up to these predictions' event time."""
        if not predictions:
            return
        latest = max(p.event.timestamp for p in predictions)
        previous = self._watermark.get(partition)
        self._watermark[partition] = latest if previous is None else max(previous, latest)

    def predictions_settled(
        self, partition: int, consumer: DataConsumer
    ) -> Callable[[datetime], bool]:
        """Whether a prediction made before a given time can still show up in the
        co-partitioned predictions partition (False while we are behind it). Reads only the
        consumer's assignment and high watermark (local metadata, no I/O)."""
        tp = TopicPartition(self.predictions_topic, partition)
        if consumer is None or tp not in consumer.assignment():
            return lambda _ts: True  # not ours (should not happen with range assignment)
        high = None
        try:
            high = consumer.highwater(tp)
        except Exception:
            high = None
        position = self.next_offset.get(tp)
        caught_up = high is None or (position is not None and position >= high)
        watermark = self._watermark.get(partition)
        return lambda ts: caught_up or (watermark is not None and watermark >= ts)

    # --- windows ------------------------------------------------------------------------

    def add_predictions(self, partition: int, predictions: list[DecodedPrediction]) -> WindowUpdate:
        """Window the predictions of the reference's model version; returns closed windows."""
        ref = self.windows.reference
        if ref is None:
            return WindowUpdate([], no_reference=len(predictions))
        mine = [p for p in predictions if p.event.model_version == ref.model_version]
        other = len(predictions) - len(mine)
        newer = other > 0 and any(
            _newer(p.event.model_version, ref.model_version) for p in predictions
        )
        if not mine:
            return WindowUpdate([], other_version=other, newer_version_seen=newer)
        n = len(mine)
        batch = EventBatch(
            offsets=np.fromiter((p.offset for p in mine), dtype=np.int64, count=n),
            timestamps_us=np.fromiter((_us(p.event.timestamp) for p in mine), np.int64, n),
            values=np.array([p.row for p in mine], dtype="float64"),
        )
        idx = ref.bin_index(batch.values)
        if self.shared is not None:
            self.shared.add(partition, batch, idx)
            closed: list[ClosedWindow] = []  # merged by the group (shared_merge)
        elif self.merged is not None:
            self.merged.add(partition, batch, idx)
            closed = []  # see merged_ready
        else:
            closed = self.windows.add(partition, batch, idx)
        self._queue_for_detector(partition, batch, idx)
        return WindowUpdate(closed, other_version=other, newer_version_seen=newer)

    def _queue_for_detector(self, partition: int, batch: EventBatch, idx: np.ndarray) -> None:
        """Hold the events not fed before for :meth:`detect` (replays are skipped)."""
        through = self._detected_through.get(partition, -1)
        fresh = batch.offsets > through
        if not fresh.any():
            return
        self._detected_through[partition] = int(batch.offsets[fresh][-1])
        if self.detector is not None:
            self._pending.append((batch.timestamps_us[fresh], idx[fresh]))

    def detect(self) -> bool:
        """Feed the fetch's events of every partition to the sequential detector as one
        stream in event-time order (a fetch reads partition after partition; in that order
        the pre-shift events of later partitions would dilute the evidence of a shift).
        True when a new alarm started."""
        pending, self._pending = self._pending, []
        if self.detector is None or not pending:
            return False
        ts = np.concatenate([t for t, _ in pending])
        idx = np.concatenate([i for _, i in pending])
        order = np.argsort(ts, kind="stable")
        return self.detector.update(idx[order]) is not None

    def merged_ready(
        self, consumer: DataConsumer, now_s: float | None = None
    ) -> list[ClosedWindow]:
        """Merged windows whose slots every owned predictions partition has passed (a
        partition that is caught up counts as past a slot once the wall clock is)."""
        if self.merged is None:
            return []
        now_us = round((time.time() if now_s is None else now_s) * 1e6)
        return self.merged.ready(
            self.owned_predictions(consumer), now_us, lambda p: self.caught_up(consumer, p)
        )

    def owned_predictions(self, consumer: DataConsumer) -> list[int]:
        """The predictions partitions assigned to this instance."""
        return sorted(
            tp.partition for tp in consumer.assignment() if tp.topic == self.predictions_topic
        )

    def caught_up(self, consumer: DataConsumer, partition: int) -> bool:
        """True when the predictions partition is read up to its high watermark (local
        metadata of the last fetch, no I/O)."""
        tp = TopicPartition(self.predictions_topic, partition)
        try:
            high = consumer.highwater(tp)
        except Exception:
            return False
        position = self.next_offset.get(tp, self.committed.get(tp))
        return high is not None and position is not None and position >= high

    def first_count(self, window: ClosedWindow) -> bool:
        """True the first time a window is seen (a replayed window is counted once: InfluxDB
        overwrote its points, Prometheus must not count it again)."""
        key = (window.model_version, window.partition)
        if self._windows_counted.get(key, -1) >= window.last_offset:
            return False
        self._windows_counted[key] = window.last_offset
        return True

    def switch_reference(
        self, reference: CompiledReference, design: CusumDesign | None = None
    ) -> None:
        """New baseline: open windows of the previous one are discarded (never written), and
        the sequential detector starts from zero on ``design`` (None: no detector)."""
        self.windows.switch(reference)
        if self.merged is not None:
            self.merged.switch(reference)
        if self.shared is not None:
            self.shared.switch(reference)
        self._pending = []
        self.detector = (
            SequentialDetector(design, reference.model_version) if design is not None else None
        )

    def install_detector(self, design: CusumDesign) -> None:
        """Start the sequential detector of the current reference (calibrated later)."""
        ref = self.windows.reference
        if ref is not None:
            self._pending = []
            self.detector = SequentialDetector(design, ref.model_version)

    # --- feedback -----------------------------------------------------------------------

    def buffer(self, partition: int) -> FeedbackBuffer:
        buffer = self.buffers.get(partition)
        if buffer is None:
            buffer = self.buffers[partition] = FeedbackBuffer(partition)
        return buffer

    def add_feedback(self, partition: int, records: list[DecodedFeedback], now: float) -> None:
        """Feedback into its partition's buffer, in offset order (invalid ones as skipped)."""
        buffer = self.buffer(partition)
        for record in records:
            if record.event is None:
                buffer.add_skipped(record.offset, now)
            else:
                buffer.add(record.offset, record.event, now)

    # --- commits and ownership ----------------------------------------------------------

    def offsets_to_commit(
        self, assignment: set[TopicPartition], only: set[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Offsets that are safe and new to commit, for the assigned partitions (or ``only``)."""
        offsets: dict[TopicPartition, int] = {}
        for tp in assignment:
            if only is not None and tp not in only:
                continue
            next_offset = self.next_offset.get(tp)
            if next_offset is None:
                continue
            if tp.topic == self.predictions_topic:
                windows: WindowManager | MergedWindows | SharedWindows = self.windows
                if self.shared is not None:
                    windows = self.shared
                elif self.merged is not None:
                    windows = self.merged
                offset = windows.commit_offset(tp.partition, next_offset)
            else:
                buffer = self.buffers.get(tp.partition)
                offset = buffer.commit_offset(next_offset) if buffer else next_offset
            if offset > self.committed.get(tp, -1):
                offsets[tp] = offset
        return offsets

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def assign(self, tp: TopicPartition, committed: int | None, logged_through: int | None) -> None:
        """Start clean on a partition we got; ``committed`` is the group's offset (``None``
        for a new group or a restarted broker log), ``logged_through`` the last feedback offset
        already in the labelled log beyond it."""
        if committed is None:
            self._counted_through.pop(tp, None)  # new group or new broker epoch
        else:
            self.committed[tp] = committed
        if tp.topic == self.feedback_topic:
            self.buffers[tp.partition] = FeedbackBuffer(tp.partition, logged_through)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Drop what we hold for partitions that move (their new owner replays them)."""
        for tp in tps:
            self._gaps.pop(tp, None)
            self.next_offset.pop(tp, None)
            self.committed.pop(tp, None)
            if tp.topic == self.predictions_topic:
                self.windows.drop([tp.partition])
                if self.merged is not None:
                    self.merged.drop([tp.partition])
                if self.shared is not None:
                    self.shared.drop([tp.partition])
                self._watermark.pop(tp.partition, None)
            elif tp.topic == self.feedback_topic:
                self.buffers.pop(tp.partition, None)

    def reset(self) -> None:
        """Drop everything uncommitted (the consumer restarts and replays from the commits)."""
        self.windows.drop(self.windows.open_partitions())
        if self.merged is not None:
            self.merged.drop(self.merged.partitions())
        if self.shared is not None:
            self.shared.drop(self.shared.partitions())
        self.buffers.clear()
        self.next_offset.clear()
        self.committed.clear()
        self._gaps.clear()
