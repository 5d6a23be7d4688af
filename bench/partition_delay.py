"""Detection delay from the windows a real consumer wrote: the pure half of
``bench_partitions.py`` (no I/O, unit-tested in ``tests/test_partition_delay.py``).

The bench produces one stream per partition count: trials of holdout rows (the reference's
population) followed by a shifted segment, then a tail of holdout rows. Every event has a
*global index* (its position in the merged stream, which is also its event-time order) and
lands on a partition at some offset. A window written by the consumer is then a span of
global indices:

- a per-partition window (``partition`` >= 0, ``first_offset``/``last_offset`` are offsets of
  that partition) spans from the global index of its first offset to that of its last;
- a merged window (``partition`` -1, ``first_offset``/``last_offset`` are its first and last
  event-time slot) holds every event of those slots, a contiguous run of global indices.

A trial's **delay** is the number of shifted events up to and including the last event of the
first window (the one ending earliest in the stream) that declared drift and reaches past the
onset: for a per-partition window that is where it closed (its last event was read); a merged
window closes a little later, once every partition has read an event of a later slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: ``partition`` of a merged window in InfluxDB (``windows.MERGED_PARTITION``).
MERGED = -1


@dataclass(frozen=True)
class Trial:
    """One trial's span of the stream: holdout rows from ``start``, shifted ones from
    ``onset`` up to ``end`` (exclusive)."""

    start: int
    onset: int
    end: int


@dataclass(frozen=True)
class Span:
    """A written window as a span of global indices, with its decision."""

    first: int
    last: int
    declared: bool


@dataclass(frozen=True)
class Outcome:
    """What one trial measured."""

    #: Shifted events up to the first declaring window's last event; ``None``: no window
    #: declared drift before the shifted segment ended (a miss).
    delay: int | None
    #: Windows entirely inside the trial's holdout rows, and how many of them declared drift.
    clean_windows: int
    false_windows: int
    #: Windows reaching past the onset that began in the previous trial's rows: the layout
    #: failed to separate the trials (the bench drops such a trial).
    straddling: int


def layout(
    partitions: int,
    trials: int,
    rng: np.random.Generator,
    *,
    window_events: int = 200,
) -> tuple[list[Trial], int]:
    """Trials and the stream's total length (with its tail).

    Before each onset, enough holdout rows that every partition's window holding the previous
    trial's shifted rows has closed (a partition fills a window of ``window_events`` in about
    ``window_events * partitions`` stream events; +300 covers its spread), plus a random
    0..``window_events`` so the onset falls anywhere in the open windows. After it, enough
    shifted rows that per-partition windows detect surely (a fully shifted window is always
    declared; the slowest partition's first full window ends within about twice its span).
    The tail lets every partition close a window past the last shifted row.
    """
    if partitions < 1 or trials < 1:
        raise ValueError("partitions and trials must be >= 1")
    span = window_events * partitions
    out: list[Trial] = []
    pos = 0
    for _ in range(trials):
        onset = pos + span + 300 + int(rng.integers(0, window_events))
        end = onset + span + span // 2 + 400
        out.append(Trial(pos, onset, end))
        pos = end
    return out, pos + span + 300


def index_by_partition(partition_of: np.ndarray, offset_of: np.ndarray) -> dict[int, np.ndarray]:
    """Per partition, the global index of each offset (``result[p][offset]``).

    The bench writes to fresh topics, so each partition's offsets must be 0, 1, 2, ... in
    stream order; anything else (a reordered or lost send) raises, since the delays would be
    counted on the wrong events.
    """
    out: dict[int, np.ndarray] = {}
    for p in np.unique(partition_of):
        idx = np.flatnonzero(partition_of == p)
        offsets = offset_of[idx]
        if not np.array_equal(offsets, np.arange(len(idx))):
            raise ValueError(f"partition {p}: offsets are not 0..{len(idx) - 1} in stream order")
        out[int(p)] = idx
    return out


def partition_window_span(
    index: dict[int, np.ndarray], partition: int, first_offset: int, last_offset: int, events: int
) -> tuple[int, int]:
    """Global indices of a per-partition window's first and last event."""
    if last_offset - first_offset + 1 != events:
        raise ValueError(
            f"partition {partition}: window {first_offset}..{last_offset} says {events} events"
        )
    offsets = index[partition]
    return int(offsets[first_offset]), int(offsets[last_offset])


def slot_window_span(
    slot_of: np.ndarray, first_slot: int, last_slot: int, events: int
) -> tuple[int, int]:
    """Global indices of a merged window's first and last event: every event of its slots
    (``slot_of`` is each event's slot, non-decreasing along the stream)."""
    first = int(np.searchsorted(slot_of, first_slot, "left"))
    last = int(np.searchsorted(slot_of, last_slot, "right")) - 1
    if last - first + 1 != events:
        raise ValueError(
            f"merged window of slots {first_slot}..{last_slot}: {last - first + 1} events were "
            f"produced in them, the window says {events}"
        )
    return first, last


def covered(
    spans: Iterable[tuple[int, Span]], partitions: Iterable[int], merged: bool, need: int
) -> bool:
    """The group's windows reach past ``need`` (so every window before is written): the
    merged windows, or every partition's own windows."""
    reach: dict[int, int] = {}
    for p, span in spans:
        reach[p] = max(reach.get(p, -1), span.last)
    if merged:
        return reach.get(MERGED, -1) >= need
    return all(reach.get(p, -1) >= need for p in partitions)


def outcomes(spans: Iterable[Span], trials: Sequence[Trial]) -> list[Outcome]:
    """Per trial: its delay, its clean and false windows, and straddling windows."""
    ordered = sorted(spans, key=lambda s: s.last)
    out: list[Outcome] = []
    for t in trials:
        clean = [s for s in ordered if s.first >= t.start and s.last < t.onset]
        straddling = sum(1 for s in ordered if s.first < t.start and s.last >= t.onset)
        hit = next(
            (s for s in ordered if s.first >= t.start and s.last >= t.onset and s.declared),
            None,
        )
        delay = None if hit is None or hit.last >= t.end else hit.last - t.onset + 1
        out.append(Outcome(delay, len(clean), sum(1 for s in clean if s.declared), straddling))
    return out


@dataclass(frozen=True)
class Summary:
    """One row of the bench's table."""

    trials: int
    median: float
    p90: float
    missed: int
    false_windows: int
    clean_windows: int
    #: Trials dropped because a window straddled two trials (should be 0).
    dropped: int


def summarize(results: Sequence[Outcome]) -> Summary:
    """Median and p90 of the delays over the kept trials; a miss counts as an infinite delay
    (so a row with misses shows them in its quantiles, not only in ``missed``)."""
    kept = [r for r in results if r.straddling == 0]
    delays = np.array([math.inf if r.delay is None else r.delay for r in kept], dtype=float)
    if len(delays) == 0:
        median = p90 = math.nan
    else:
        # order statistics, not interpolation: an infinite delay must not turn into nan
        median = float(np.quantile(delays, 0.5, method="inverted_cdf"))
        p90 = float(np.quantile(delays, 0.9, method="inverted_cdf"))
    return Summary(
        trials=len(kept),
        median=median,
        p90=p90,
        missed=sum(1 for r in kept if r.delay is None),
        false_windows=sum(r.false_windows for r in kept),
        clean_windows=sum(r.clean_windows for r in kept),
        dropped=len(results) - len(kept),
    )
