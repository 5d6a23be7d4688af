"""The partition-delay bench's arithmetic (bench/partition_delay.py), on made-up streams and
windows: no broker, no consumer.

What is pinned: a window's span in the merged stream (per-partition offsets through the
produced offsets, merged slots through the event times), refused when the window's event
count disagrees with what was produced; a trial's delay is the shifted events up to the last
event of the earliest-ending declaring window past the onset, a window from the previous trial
never counts, a declaration only after the shift ended is a miss; false windows are counted
among the windows of holdout rows only; the summary's quantiles are order statistics in which
a miss is infinite.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.partition_delay import (
    MERGED,
    Outcome,
    Span,
    Trial,
    covered,
    index_by_partition,
    layout,
    outcomes,
    partition_window_span,
    slot_window_span,
    summarize,
)


@pytest.mark.parametrize("partitions", [1, 4, 8])
def test_layout_separates_trials_by_more_than_a_partition_window(partitions: int) -> None:
    rng = np.random.default_rng(3)
    trials, total = layout(partitions, 30, rng, window_events=200)
    span = 200 * partitions
    assert trials[0].start == 0
    phases = set()
    for prev, t in zip([None, *trials], trials, strict=False):
        if prev is not None:
            assert t.start == prev.end  # contiguous: holdout follows the previous shift
        assert span + 300 <= t.onset - t.start < span + 300 + 200
        assert t.end - t.onset == span + span // 2 + 400
        phases.add(t.onset - t.start)
    assert len(phases) > 10  # the onset moves within the open windows
    assert total == trials[-1].end + span + 300  # a tail closes every partition's window
    with pytest.raises(ValueError):
        layout(0, 3, rng)


def test_index_by_partition_maps_offsets_to_stream_positions() -> None:
    partition_of = np.array([0, 1, 1, 0, 2, 1])
    offset_of = np.array([0, 0, 1, 1, 0, 2])
    index = index_by_partition(partition_of, offset_of)
    assert {p: v.tolist() for p, v in index.items()} == {0: [0, 3], 1: [1, 2, 5], 2: [4]}
    assert partition_window_span(index, 1, 1, 2, events=2) == (2, 5)
    with pytest.raises(ValueError, match="says 3 events"):
        partition_window_span(index, 1, 0, 1, events=3)


@pytest.mark.parametrize(
    "offset_of",
    [
        [0, 0, 2, 1, 1, 3],  # partition 0 acknowledged 0, 2, 1, 3: reordered sends
        [0, 0, 1, 3, 1, 4],  # partition 0 skipped offset 2: a lost send
        [1, 0, 2, 3, 1, 4],  # partition 0 does not start at 0: not a fresh topic
    ],
)
def test_index_by_partition_refuses_reordered_or_missing_offsets(offset_of: list[int]) -> None:
    partition_of = np.array([0, 1, 0, 0, 1, 0])
    with pytest.raises(ValueError, match="partition 0"):
        index_by_partition(partition_of, np.array(offset_of))


def test_slot_window_span_is_every_event_of_its_slots() -> None:
    slot_of = np.array([10, 10, 11, 13, 13, 13, 14])
    assert slot_window_span(slot_of, 10, 11, events=3) == (0, 2)
    assert slot_window_span(slot_of, 12, 13, events=3) == (3, 5)  # slot 12 is empty
    with pytest.raises(ValueError, match="3 events were produced"):
        slot_window_span(slot_of, 13, 13, events=4)


def test_delay_is_shifted_events_to_the_end_of_the_first_declaring_window() -> None:
    trial = Trial(start=100, onset=500, end=1_000)
    spans = [
        Span(100, 299, False),  # clean
        Span(300, 499, True),  # clean, declared: a false window, not a detection
        Span(450, 649, False),  # mixed, not declared
        Span(700, 899, True),  # declared, ends last
        Span(520, 719, True),  # declared, ends first among those past the onset
    ]
    (out,) = outcomes(spans, [trial])
    assert out == Outcome(delay=719 - 500 + 1, clean_windows=2, false_windows=1, straddling=0)


def test_a_window_from_the_previous_trial_never_counts_and_marks_a_straddle() -> None:
    first, second = Trial(0, 400, 800), Trial(800, 1_300, 1_800)
    spans = [
        Span(350, 550, True),  # detects the first trial
        Span(780, 900, True),  # holds the first trial's shift: ignored by the second
        Span(1_000, 1_200, False),  # clean window of the second
        Span(1_250, 1_400, True),
    ]
    a, b = outcomes(spans, [first, second])
    assert a.delay == 550 - 400 + 1
    assert b == Outcome(delay=1_400 - 1_300 + 1, clean_windows=1, false_windows=0, straddling=0)
    straddle = Span(790, 1_350, True)
    (c,) = outcomes([*spans, straddle], [second])
    assert (c.straddling, c.delay) == (1, 1_400 - 1_300 + 1)  # the straddler never detects


def test_a_declaration_only_after_the_shift_ended_is_a_miss() -> None:
    (out,) = outcomes([Span(0, 99, False), Span(100, 700, True)], [Trial(0, 200, 600)])
    assert out.delay is None


def test_summary_uses_order_statistics_and_counts_a_miss_as_infinite() -> None:
    results = [Outcome(d, 3, 0, 0) for d in (10, 20, 30, 40, None)]
    results.append(Outcome(1, 2, 1, 1))  # dropped: a straddling window
    s = summarize(results)
    assert (s.trials, s.dropped, s.missed) == (5, 1, 1)
    assert s.median == 30  # the 3rd of 5, not an interpolation
    assert math.isinf(s.p90)  # the miss is the slowest trial
    assert (s.false_windows, s.clean_windows) == (0, 15)
    assert summarize([Outcome(d, 0, 0, 0) for d in range(1, 11)]).p90 == 9


def test_covered_waits_for_every_partition_or_the_merged_windows() -> None:
    spans = [(0, Span(0, 50, False)), (1, Span(1, 120, False)), (0, Span(60, 110, False))]
    assert covered(spans, [0, 1], merged=False, need=100)
    assert not covered(spans, [0, 1, 2], merged=False, need=100)
    assert not covered(spans, [0, 1], merged=False, need=115)
    assert not covered(spans, [0, 1], merged=True, need=10)
    assert covered([(MERGED, Span(0, 10, False))], [0, 1], merged=True, need=10)


def test_per_partition_windows_end_to_end_on_a_simulated_consumer() -> None:
    """Two partitions, windows of 4 events per partition that declare drift when at least 3
    of their events are shifted: the delay is where the first such window's last event is."""
    rng = np.random.default_rng(0)
    partition_of = rng.integers(0, 2, 60)
    offset_of = np.zeros(60, dtype=np.int64)
    for p in (0, 1):
        idx = np.flatnonzero(partition_of == p)
        offset_of[idx] = np.arange(len(idx))
    trial = Trial(0, 30, 60)
    shifted = np.arange(60) >= trial.onset
    index = index_by_partition(partition_of, offset_of)
    spans = []
    expected = math.inf
    for p, positions in index.items():
        for lo in range(0, len(positions) - 3, 4):
            first, last = partition_window_span(index, p, lo, lo + 3, events=4)
            declared = int(shifted[positions[lo : lo + 4]].sum()) >= 3
            spans.append(Span(first, last, declared))
            if declared and last >= trial.onset:
                expected = min(expected, last - trial.onset + 1)
    (out,) = outcomes(spans, [trial])
    assert out.delay == expected
    assert out.false_windows == 0
