"""feedback_join.py: join store, ordered buffers that flush contiguous prefixes, online error."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftloop_drift_consumer.errors import JoinStoreError
from driftloop_drift_consumer.feedback_join import (
    JOIN_KEY_PREFIX,
    LABEL_KEY_PREFIX,
    FeedbackBuffer,
    JoinStore,
    OnlineError,
    Resolved,
    StoredPrediction,
)

from .conftest import FakeAsyncRedis, feedback_event, prediction_event

T14 = datetime(2026, 3, 1, 14, 59, 58, tzinfo=UTC)

ROW = [3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0, 210_000.0]


def stored(rid: str, prediction: float = 210_000.0) -> StoredPrediction:
    return StoredPrediction.from_event(prediction_event(rid, [*ROW[:8], prediction]))


def resolve(buf: FeedbackBuffer, found: dict[str, StoredPrediction]) -> Resolved:
    """Resolve with claims as Redis ``SET NX`` settles them for a fresh store: first wins."""
    owners: dict[str, str] = {}
    for rid, key in buf.label_claims(found):
        owners.setdefault(rid, key)
    return buf.resolve(found, owners)


async def test_join_store_round_trip_with_ttl() -> None:
    redis = FakeAsyncRedis()
    store = JoinStore(redis, ttl_seconds=600)
    await store.put([stored("a"), stored("b", 1.5)])
    assert redis.ttl[JOIN_KEY_PREFIX + "a"] == 600
    found = await store.get_many(["a", "b", "zz"])
    assert set(found) == {"a", "b"}
    assert found["b"].prediction == 1.5 and found["a"].features == tuple(ROW[:8])
    redis.state.fail = True
    with pytest.raises(JoinStoreError):
        await store.get_many(["a"])
    with pytest.raises(JoinStoreError):
        await store.put([stored("c")])


def test_buffer_flushes_only_a_contiguous_decided_prefix() -> None:
    buf = FeedbackBuffer(partition=2)
    buf.add(10, feedback_event("a", 1.0), now=0.0)
    buf.add_skipped(11, now=0.0)
    buf.add(12, feedback_event("b", 2.0), now=0.0)
    buf.add(13, feedback_event("c", 3.0), now=0.0)
    rows = resolve(buf, {"a": stored("a"), "c": stored("c")}).rows
    assert [r.request_id for r in rows] == ["a", "c"]
    assert buf.ready() == (1, 0.0)  # a, skipped; b still waits
    flushes = buf.take()
    assert [(f.first_offset, f.last_offset, len(f.rows)) for f in flushes] == [(10, 11, 1)]
    assert buf.commit_offset(next_offset=14) == 12
    assert buf.waiting_ids() == ["b"]
    # b never arrives: skipped after the wait, and the rest flushes
    assert buf.expire(now=5.0, wait_s=10.0) == []
    assert buf.expire(now=10.0, wait_s=10.0) == [12]
    (f,) = buf.take()
    assert (f.first_offset, f.last_offset, [r.request_id for r in f.rows]) == (12, 13, ["c"])
    assert buf.commit_offset(next_offset=14) == 14


def test_buffer_skips_offsets_already_in_the_log() -> None:
    buf = FeedbackBuffer(partition=0, logged_through=11)
    buf.add(10, feedback_event("a", 1.0), now=0.0)
    buf.add_skipped(11, now=0.0)
    buf.add(12, feedback_event("b", 2.0), now=0.0)
    assert buf.waiting_ids() == ["b"]
    resolve(buf, {"a": stored("a"), "b": stored("b")})
    logged, fresh = buf.take()
    assert logged.already_logged and (logged.first_offset, logged.last_offset) == (10, 11)
    assert not fresh.already_logged and [r.request_id for r in fresh.rows] == ["b"]


def test_duplicate_feedback_gives_one_row_the_first_label() -> None:
    buf = FeedbackBuffer(partition=0)
    buf.add(0, feedback_event("a", 1.0), now=0.0)
    buf.add(1, feedback_event("a", 2.0), now=0.0)
    assert buf.label_claims({"a": stored("a")}) == [("a", "0:0"), ("a", "0:1")]
    resolved = resolve(buf, {"a": stored("a")})
    assert [r.actual for r in resolved.rows] == [1.0] and resolved.duplicates == [1]
    (f,) = buf.take()
    assert (f.first_offset, f.last_offset, [r.actual for r in f.rows]) == (0, 1, [1.0])


async def test_label_claims_first_wins_and_a_replay_keeps_its_own_claim() -> None:
    redis = FakeAsyncRedis()
    store = JoinStore(redis, ttl_seconds=600)
    assert await store.claim_labels([("a", "0:5"), ("b", "0:6"), ("a", "0:7")]) == {
        "a": "0:5",
        "b": "0:6",
    }
    assert redis.ttl[LABEL_KEY_PREFIX + "a"] == 600
    # a replay of offset 5 (after a crash) owns it still; a later label for "a" does not
    assert await store.claim_labels([("a", "0:5")]) == {"a": "0:5"}
    assert await store.claim_labels([("a", "1:9")]) == {"a": "0:5"}
    buf = FeedbackBuffer(partition=1)
    buf.add(9, feedback_event("a", 3.0), now=0.0)
    found = {"a": stored("a")}
    resolved = buf.resolve(found, await store.claim_labels(buf.label_claims(found)))
    assert resolved.rows == [] and resolved.duplicates == [9]
    redis.state.fail = True
    with pytest.raises(JoinStoreError):
        await store.claim_labels([("c", "0:1")])


def test_a_flush_across_an_hour_is_one_file_per_hour_in_offset_order() -> None:
    buf = FeedbackBuffer(partition=3)
    times = [T14, T14 + timedelta(seconds=1), T14 + timedelta(seconds=3), T14]
    buf.add_skipped(99, now=0.0)  # before any row: stays with the first part
    for i, ts in enumerate(times):
        buf.add(100 + i, feedback_event(f"r{i}", 1.0, ts=ts), now=0.0)
    buf.add_skipped(104, now=0.0)  # after a row: stays with that row's part
    resolve(buf, {f"r{i}": stored(f"r{i}") for i in range(4)})
    flushes = buf.take()
    assert [(f.first_offset, f.last_offset) for f in flushes] == [(99, 101), (102, 102), (103, 104)]
    assert [[r.request_id for r in f.rows] for f in flushes] == [["r0", "r1"], ["r2"], ["r3"]]
    assert [{r.labelled_at.hour for r in f.rows} for f in flushes] == [{14}, {15}, {14}]


def test_labelled_row_columns_and_error_sign() -> None:
    buf = FeedbackBuffer(partition=0)
    buf.add(0, feedback_event("a", 200_000.0), now=0.0)
    (row,) = resolve(buf, {"a": stored("a", 210_000.0)}).rows
    record = row.as_record()
    assert record["prediction"] == 210_000.0 and record["actual"] == 200_000.0
    assert row.error == 10_000.0  # positive: over-prediction
    assert list(record)[:5] == [
        "request_id",
        "predicted_at",
        "labelled_at",
        "model_name",
        "model_version",
    ]


def test_online_error_equals_direct_computation_over_the_rolling_window() -> None:
    rng = np.random.default_rng(0)
    errors = rng.normal(1000, 5000, 1500)
    online = OnlineError(rows=1000)
    online.add("1", errors[:700])
    online.add("1", errors[700:])
    online.add("2", [1.0, -1.0])
    s = online.summary("1")
    assert s is not None and s.n == 1000
    tail = errors[-1000:]
    assert s.rmse == pytest.approx(math.sqrt(np.mean(tail**2)), rel=1e-12)
    assert s.mae == pytest.approx(np.mean(np.abs(tail)), rel=1e-12)
    assert s.bias == pytest.approx(np.mean(tail), rel=1e-12)
    s2 = online.summary("2")
    assert s2 is not None and s2.bias == 0.0
    online.forget("2")
    assert online.summary("2") is None and online.versions() == ["1"]
