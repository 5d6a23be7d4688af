"""windows.MergedWindows: time-aligned windows whose counts add across partitions."""

from __future__ import annotations

import itertools

import numpy as np

from driftloop_drift_consumer.drift import compute_statistics
from driftloop_drift_consumer.windows import (
    MERGED_PARTITION,
    ClosedWindow,
    EventBatch,
    MergedWindows,
)

from .conftest import ReferenceData

SLOT_S = 1.0
SLOT_US = 1_000_000


def stream(reference: ReferenceData, partitions: int, n: int, seed: int = 0, late: bool = True):
    """``n`` events at 400/s round-robin over ``partitions``; per partition (offsets,
    timestamps, values), with a little timestamp disorder (late events) if ``late``."""
    rng = np.random.default_rng(seed)
    values = reference.values[rng.integers(0, len(reference.values), n)]
    jitter = rng.integers(-3_000, 3_000, n) if late else 0
    ts = 10 * SLOT_US + SLOT_US // 2 + np.arange(n) * 2_500 + jitter
    out = {}
    for p in range(partitions):
        mine = np.arange(p, n, partitions)
        out[p] = (np.arange(len(mine), dtype=np.int64), ts[mine].astype(np.int64), values[mine])
    return out


def feed(mw: MergedWindows, parts, chunk: int, order: list[int]) -> None:
    longest = max(len(o) for o, _, _ in parts.values())
    for lo in range(0, longest, chunk):
        for p in order:
            o, t, v = parts[p]
            if lo < len(o):
                mw.add(p, EventBatch(o[lo : lo + chunk], t[lo : lo + chunk], v[lo : lo + chunk]))


def drain(mw: MergedWindows, owned: list[int], now_us: int) -> list[ClosedWindow]:
    return mw.ready(owned, now_us, caught_up=lambda p: True)


def key(w: ClosedWindow):
    return (w.first_offset, w.last_offset, w.n, w.time_ns, w.parts)


def test_merged_window_equals_the_concatenation_of_its_partials(
    reference: ReferenceData,
) -> None:
    parts = stream(reference, 4, 4_000)
    mw = MergedWindows(SLOT_S, 200, reference.compiled)
    feed(mw, parts, 50, [0, 1, 2, 3])
    closed = drain(mw, [0, 1, 2, 3], now_us=100 * SLOT_US)
    assert closed and all(w.partition == MERGED_PARTITION for w in closed)
    assert sum(w.n for w in closed) == 4_000  # the end: idle partitions close their last slot
    for w in closed:
        assert w.n >= 200
        assert {s.partition for s in w.parts} == {0, 1, 2, 3}
        rows = [parts[s.partition][2][s.first_offset : s.last_offset + 1] for s in w.parts]
        expected = compute_statistics(reference.compiled, np.concatenate(rows))
        np.testing.assert_allclose(w.statistics.psi, expected.psi, atol=1e-12)
        np.testing.assert_allclose(np.sort(w.values, axis=0), np.sort(np.concatenate(rows), axis=0))
    # every event once: per partition, the partials chain from offset 0 to the end
    for p in range(4):
        mine = sorted(
            (s.first_offset, s.last_offset) for w in closed for s in w.parts if s.partition == p
        )
        assert mine[0][0] == 0 and mine[-1][1] == 999
        assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(mine))


def test_a_window_fills_at_the_consumer_rate_not_a_partitions(reference: ReferenceData) -> None:
    # 400 events/s in 1 s slots: with 8 partitions a window still closes every slot, with
    # the same events as with 1
    sizes = {}
    for partitions in (1, 8):
        mw = MergedWindows(SLOT_S, 200, reference.compiled)
        feed(mw, stream(reference, partitions, 2_400, late=False), 25, list(range(partitions)))
        closed = mw.ready(list(range(partitions)), 0, caught_up=lambda p: False)
        assert [w.last_offset - w.first_offset for w in closed] == [0] * len(closed)
        sizes[partitions] = [w.n for w in closed]
    assert sizes[1] == sizes[8] and len(sizes[1]) == 6, sizes


def test_replay_with_other_boundaries_and_interleaving_rebuilds_the_same_windows(
    reference: ReferenceData,
) -> None:
    parts = stream(reference, 4, 3_000, seed=3)
    a = MergedWindows(SLOT_S, 300, reference.compiled)
    feed(a, parts, 40, [0, 1, 2, 3])
    b = MergedWindows(SLOT_S, 300, reference.compiled)
    feed(b, parts, 97, [3, 1, 0, 2])
    now = 100 * SLOT_US
    assert [key(w) for w in drain(a, [0, 1, 2, 3], now)] == [
        key(w) for w in drain(b, [0, 1, 2, 3], now)
    ]


def test_small_slots_carry_into_the_next_until_min_events(reference: ReferenceData) -> None:
    mw = MergedWindows(0.25, 200, reference.compiled)  # ~100 events per slot
    feed(mw, stream(reference, 2, 2_000), 50, [0, 1])
    closed = drain(mw, [0, 1], now_us=100 * SLOT_US)
    assert all(w.n >= 200 for w in closed[:-1])
    assert all(w.last_offset > w.first_offset for w in closed[:-1])  # spans several slots


def test_commit_holds_unwritten_partials_and_a_moved_partition_is_counted_once(
    reference: ReferenceData,
) -> None:
    parts = stream(reference, 4, 4_000, seed=5)
    a = MergedWindows(SLOT_S, 200, reference.compiled)
    half = {p: (o[:500], t[:500], v[:500]) for p, (o, t, v) in parts.items()}
    feed(a, half, 50, [0, 1, 2, 3])
    written = a.ready([0, 1, 2, 3], 0, caught_up=lambda p: False)
    done = {p: max((s.last_offset for w in written for s in w.parts if s.partition == p),
                   default=-1) for p in range(4)}  # fmt: skip
    for p in range(4):  # the commit never passes an event that is not in a written window
        assert a.commit_offset(p, 500) == done[p] + 1
    # partitions 2 and 3 move to instance b, which replays them from the commit
    a.drop([2, 3])
    b = MergedWindows(SLOT_S, 200, reference.compiled)
    rest_a = {p: tuple(x[500:] for x in parts[p]) for p in (0, 1)}  # a reads on
    rest_b = {p: tuple(x[done[p] + 1 :] for x in parts[p]) for p in (2, 3)}
    feed(a, rest_a, 50, [0, 1])
    feed(b, rest_b, 50, [2, 3])
    now = 100 * SLOT_US
    written += drain(a, [0, 1], now) + drain(b, [2, 3], now)
    counted = {p: sorted(o for w in written for s in w.parts if s.partition == p
                         for o in range(s.first_offset, s.last_offset + 1)) for p in range(4)}  # fmt: skip
    # each event in exactly one written window, or at/after the commit (the open window)
    for p, owner in ((0, a), (1, a), (2, b), (3, b)):
        held = owner.commit_offset(p, 1_000)
        assert counted[p] == list(range(held)), (p, len(counted[p]), held)
    assert sum(w.n for w in written) == sum(len(c) for c in counted.values())


def test_a_partition_behind_holds_the_slot_an_idle_one_does_not(
    reference: ReferenceData,
) -> None:
    parts = stream(reference, 2, 1_000)
    mw = MergedWindows(SLOT_S, 100, reference.compiled, idle_grace_seconds=2.0)
    feed(mw, {0: parts[0]}, 100, [0])
    # partition 1 has not been read (behind): nothing closes
    assert mw.ready([0, 1], 10**12, caught_up=lambda p: p == 0) == []
    # partition 1 caught up and silent: slots close once the wall clock passed them + grace
    last = int(parts[0][1].max())
    assert mw.ready([0, 1], last, caught_up=lambda p: True) == []  # within the grace
    closed = mw.ready([0, 1], last + 3 * SLOT_US, caught_up=lambda p: True)
    assert sum(w.n for w in closed) == 500
