"""partition_state.py: what is held per partition, the commit rule, and what survives a
rebalance or a restart (only the replay guards)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from aiokafka.structs import TopicPartition

from driftloop_drift_consumer.decoding import DecodedFeedback, DecodedPrediction
from driftloop_drift_consumer.partition_state import PartitionState
from driftloop_drift_consumer.windows import WindowManager, WindowPolicy

from .conftest import T0, FakeConsumer, FakeLog, Record, ReferenceData, prediction_event

P0 = TopicPartition("predictions", 0)
F0 = TopicPartition("feedback", 0)


def state(reference: ReferenceData | None = None, events: int = 10) -> PartitionState:
    windows = WindowManager(
        WindowPolicy(events, 0.0, events), reference.compiled if reference else None
    )
    return PartitionState(windows, predictions_topic="predictions", feedback_topic="feedback")


def predictions(
    reference: ReferenceData, offsets: range, version: str = "1"
) -> list[DecodedPrediction]:
    out = []
    for i in offsets:
        row = tuple(float(v) for v in reference.values[i])
        event = prediction_event(f"r{i}", row, version=version, ts=T0 + timedelta(seconds=i))
        out.append(DecodedPrediction(i, event, row))
    return out


def records(tp: TopicPartition, offsets: Iterable[int]) -> list[Record]:
    return [Record(tp.topic, tp.partition, o, b"") for o in offsets]


def test_a_replay_is_counted_once() -> None:
    s = state()
    assert s.read(P0, records(P0, range(0, 5))) == 5
    assert s.next_offset[P0] == 5
    s.reset()  # the consumer restarts and reads again from 0
    assert s.read(P0, records(P0, range(0, 8))) == 3
    s.assign(P0, committed=None, logged_through=None)  # a new group: counting starts again
    assert s.read(P0, records(P0, range(0, 2))) == 2


def test_predictions_commit_up_to_the_open_window(reference: ReferenceData) -> None:
    s = state(reference)
    s.read(P0, records(P0, range(0, 25)))
    update = s.add_predictions(0, predictions(reference, range(0, 25)))
    assert [(w.first_offset, w.last_offset) for w in update.closed] == [(0, 9), (10, 19)]
    assert s.offsets_to_commit({P0}) == {P0: 20}
    s.mark_committed({P0: 20})
    assert s.offsets_to_commit({P0}) == {}  # nothing new
    assert s.offsets_to_commit({P0}, only=set()) == {}


def test_feedback_commits_up_to_the_first_unflushed_record() -> None:
    s = state()
    s.read(F0, records(F0, range(0, 3)))
    s.add_feedback(0, [DecodedFeedback(0, None), DecodedFeedback(1, None)], now=0.0)
    s.buffers[0].add_skipped(2, 0.0)
    assert s.offsets_to_commit({F0}) == {F0: 0}  # decided but not flushed yet
    s.buffers[0].take()
    assert s.offsets_to_commit({F0}) == {F0: 3}


def test_predictions_of_other_versions_are_not_windowed(reference: ReferenceData) -> None:
    s = state(reference)
    update = s.add_predictions(0, predictions(reference, range(0, 4), version="0"))
    assert (update.closed, update.other_version, update.newer_version_seen) == ([], 4, False)
    update = s.add_predictions(0, predictions(reference, range(4, 6), version="2"))
    assert update.other_version == 2 and update.newer_version_seen
    assert state().add_predictions(0, predictions(reference, range(0, 3))).no_reference == 3


def test_a_replayed_window_is_counted_once(reference: ReferenceData) -> None:
    s = state(reference)
    (window,) = s.add_predictions(0, predictions(reference, range(0, 10))).closed
    assert s.first_count(window)
    s.reset()
    (again,) = s.add_predictions(0, predictions(reference, range(0, 10))).closed
    assert not s.first_count(again)


def test_forget_drops_a_partition_and_assign_starts_it_clean(reference: ReferenceData) -> None:
    s = state(reference)
    s.read(P0, records(P0, range(0, 5)))
    s.add_predictions(0, predictions(reference, range(0, 5)))
    s.read(F0, records(F0, range(0, 1)))
    s.add_feedback(0, [DecodedFeedback(0, None)], now=0.0)
    s.forget({P0, F0})
    assert s.next_offset == {} and s.buffers == {}
    assert s.windows.open_window(0) is None
    s.assign(F0, committed=40, logged_through=44)
    assert s.committed[F0] == 40 and s.buffers[0].logged_through == 44


def test_feedback_waits_while_the_predictions_partition_is_behind(
    reference: ReferenceData,
) -> None:
    log = FakeLog()
    for _ in range(10):
        log.append("predictions", 0, b"")
    consumer = FakeConsumer(log, [P0])
    s = state(reference)
    s.read(P0, records(P0, range(0, 5)))
    s.advance_watermark(0, predictions(reference, range(0, 5)))
    settled = s.predictions_settled(0, consumer)
    assert settled(T0 + timedelta(seconds=4))  # read past that time
    assert not settled(T0 + timedelta(seconds=5))  # behind: it may still come
    s.read(P0, records(P0, range(5, 10)))
    assert s.predictions_settled(0, consumer)(T0 + timedelta(days=1))  # caught up
    assert s.predictions_settled(1, consumer)(T0 + timedelta(days=1))  # not ours


# --- gaps: a fetch that skipped an offset (Tansu stores a batch after it reserved its offset) ---


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gap_state(clock: Clock) -> PartitionState:
    windows = WindowManager(WindowPolicy(10, 0.0, 10), None)
    return PartitionState(
        windows,
        predictions_topic="predictions",
        feedback_topic="feedback",
        gap_patience_s=5.0,
        clock=clock,
    )


def test_a_fetch_without_gaps_is_taken_whole() -> None:
    s = gap_state(Clock())
    s.assign(F0, committed=3, logged_through=None)
    check = s.gap_free(F0, records(F0, range(3, 8)))
    assert [r.offset for r in check.records] == [3, 4, 5, 6, 7]
    assert check.refetch_from is None and not check.new_gap and not check.accepted_gap


def test_a_skipped_offset_stops_the_fetch_there_and_is_read_again() -> None:
    clock = Clock()
    s = gap_state(clock)
    s.read(F0, records(F0, range(0, 4)))  # next offset: 4
    fetched = records(F0, [4, 5, 7, 8])  # 6 acknowledged but not yet stored
    check = s.gap_free(F0, fetched)
    assert [r.offset for r in check.records] == [4, 5]
    assert check.refetch_from == 6 and check.new_gap
    s.read(F0, check.records)
    clock.now += 1.0
    again = s.gap_free(F0, records(F0, [7, 8]))  # still missing: wait, counted once
    assert again.records == [] and again.refetch_from == 6 and not again.new_gap
    stored = s.gap_free(F0, records(F0, range(6, 9)))  # stored now: read on
    assert [r.offset for r in stored.records] == [6, 7, 8] and stored.refetch_from is None


def test_a_gap_outlasting_the_patience_is_read_past_and_reported() -> None:
    clock = Clock()
    s = gap_state(clock)
    s.assign(P0, committed=10, logged_through=None)
    assert s.gap_free(P0, records(P0, [11, 12])).refetch_from == 10
    clock.now += 4.9
    assert s.gap_free(P0, records(P0, [11, 12])).refetch_from == 10
    clock.now += 0.2
    past = s.gap_free(P0, records(P0, [11, 12]))
    assert past.accepted_gap and [r.offset for r in past.records] == [11, 12]
    s.read(P0, past.records)
    assert s.gap_free(P0, records(P0, [13])).records  # and the partition reads on


def test_without_a_known_position_the_fetch_itself_must_be_contiguous() -> None:
    s = gap_state(Clock())
    check = s.gap_free(P0, records(P0, [5, 6]))  # new group: starts wherever the log starts
    assert [r.offset for r in check.records] == [5, 6] and check.refetch_from is None
    other = gap_state(Clock())
    check = other.gap_free(P0, records(P0, [0, 1, 3]))
    assert [r.offset for r in check.records] == [0, 1] and check.refetch_from == 2
