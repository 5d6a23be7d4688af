"""windows.py: tumbling windows that a replay rebuilds identically, and additive state."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop_drift_consumer.drift import compute_statistics
from driftloop_drift_consumer.windows import EventBatch, WindowManager, WindowPolicy

from .conftest import ReferenceData, make_reference


def batch(values: np.ndarray, first_offset: int = 0, t0_us: int = 0, step_us: int = 1000):
    n = len(values)
    return EventBatch(
        offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
        timestamps_us=t0_us + np.arange(n, dtype=np.int64) * step_us,
        values=values,
    )


def sample(reference: ReferenceData, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return reference.values[rng.integers(0, len(reference.values), n)]


def test_count_windows_close_at_size(reference: ReferenceData) -> None:
    wm = WindowManager(WindowPolicy(events=200, min_events=200), reference.compiled)
    values = sample(reference, 450)
    closed = wm.add(3, batch(values, first_offset=1000))
    assert [(w.first_offset, w.last_offset, w.n) for w in closed] == [
        (1000, 1199, 200),
        (1200, 1399, 200),
    ]
    assert wm.open_first_offset(3) == 1400
    assert wm.commit_offset(3, next_offset=1450) == 1400
    assert wm.commit_offset(4, next_offset=77) == 77  # nothing open there
    w = closed[0]
    expected = compute_statistics(reference.compiled, values[:200])
    np.testing.assert_array_equal(w.statistics.ks, expected.ks)
    np.testing.assert_array_equal(w.statistics.psi, expected.psi)
    assert w.partition == 3 and w.model_version == "1"


def test_replay_with_other_batch_boundaries_rebuilds_the_same_windows(
    reference: ReferenceData,
) -> None:
    values = sample(reference, 1000)
    whole = batch(values, first_offset=0, t0_us=10**15)

    def run(cuts: list[int]) -> list[tuple[int, int, int, tuple[float, ...]]]:
        wm = WindowManager(
            WindowPolicy(events=200, seconds=0.15, min_events=120), reference.compiled
        )
        out = []
        for a, b in zip([0, *cuts], [*cuts, len(values)], strict=True):
            part = EventBatch(whole.offsets[a:b], whole.timestamps_us[a:b], values[a:b])
            out += [
                (w.first_offset, w.last_offset, w.time_ns, tuple(w.statistics.psi))
                for w in wm.add(0, part)
            ]
        return out

    one = run([])
    assert one == run([37, 38, 500, 999])
    assert one == run(list(range(7, 1000, 13)))
    assert len(one) >= 5


def test_time_rule_needs_min_events(reference: ReferenceData) -> None:
    wm = WindowManager(WindowPolicy(events=1000, seconds=1.0, min_events=200), reference.compiled)
    values = sample(reference, 600)
    # 10 ms apart: 1 s of event time after 100 events, but min_events holds it to 200
    closed = wm.add(0, batch(values, step_us=10_000))
    assert [w.n for w in closed] == [200, 200]
    # 600 events within 0.6 s: neither rule fires, the window keeps filling
    wm2 = WindowManager(WindowPolicy(events=1000, seconds=1.0, min_events=200), reference.compiled)
    assert wm2.add(0, batch(values, step_us=1_000)) == []
    open_window = wm2.open_window(0)
    assert open_window is not None and open_window.count == 600


def test_switch_discards_open_windows_and_drop_forgets_partitions(
    reference: ReferenceData,
) -> None:
    wm = WindowManager(WindowPolicy(), reference.compiled)
    wm.add(0, batch(sample(reference, 150)))
    wm.add(1, batch(sample(reference, 50)))
    wm.drop([1])
    assert wm.open_first_offset(1) is None and wm.open_first_offset(0) == 0
    other = make_reference(seed=1, n=4000, version="2")
    wm.switch(other.compiled)
    assert wm.open_first_offset(0) is None
    closed = wm.add(0, batch(sample(other, 200), first_offset=150))
    assert closed[0].model_version == "2" and closed[0].first_offset == 150


def test_no_reference_means_no_windows(reference: ReferenceData) -> None:
    wm = WindowManager(WindowPolicy())
    assert wm.add(0, batch(sample(reference, 500))) == []
    assert wm.commit_offset(0, 500) == 500


def test_merge_is_additive_and_equals_the_concatenation(reference: ReferenceData) -> None:
    """Windows of two partitions (or two instances) merge into one: counts add, values
    concatenate, and the statistics equal those of the concatenated events."""
    wm = WindowManager(WindowPolicy(events=300, min_events=300), reference.compiled)
    a, b = sample(reference, 120, seed=2), sample(reference, 90, seed=3)
    wm.add(0, batch(a, first_offset=10))
    wm.add(1, batch(b, first_offset=500))
    wa, wb = wm.open_window(0), wm.open_window(1)
    assert wa is not None and wb is not None
    merged = wa.merge(wb)
    assert merged.count == 210
    assert merged.segments == {0: (10, 129), 1: (500, 589)}
    both = np.concatenate([a, b])
    np.testing.assert_array_equal(merged.bin_counts, reference.compiled.bin_counts(both))
    s1 = compute_statistics(reference.compiled, merged.values(), merged.bin_counts)
    s2 = compute_statistics(reference.compiled, both)
    np.testing.assert_allclose(s1.ks, s2.ks)
    np.testing.assert_allclose(s1.psi, s2.psi)
    with pytest.raises(ValueError, match="one model version"):
        other = make_reference(seed=1, n=2000, version="9")
        wm2 = WindowManager(WindowPolicy(events=300, min_events=300), other.compiled)
        wm2.add(0, batch(sample(other, 10)))
        opened = wm2.open_window(0)
        assert opened is not None
        merged.merge(opened)


def test_time_ns_is_distinct_per_window_and_stable(reference: ReferenceData) -> None:
    wm = WindowManager(WindowPolicy(events=200, min_events=200), reference.compiled)
    values = sample(reference, 400)
    same_time = EventBatch(np.arange(400, dtype=np.int64), np.full(400, 10**15, np.int64), values)
    w1, w2 = wm.add(0, same_time)
    assert w1.time_ns != w2.time_ns
    assert w1.time_ns // 1000 == 10**15


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        WindowPolicy(events=100, min_events=200)
