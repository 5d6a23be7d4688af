"""feedback_join.py: join store, ordered buffers that flush contiguous prefixes, online error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftloop_drift_consumer.errors import JoinStoreError
from driftloop_drift_consumer.feedback_join import (
    JOIN_KEY_PREFIX,
    FeedbackBuffer,
    JoinStore,
    OnlineError,
    StoredPrediction,
)

from .conftest import FakeAsyncRedis, feedback_event, prediction_event

ROW = [3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0, 210_000.0]


def stored(rid: str, prediction: float = 210_000.0) -> StoredPrediction:
    return StoredPrediction.from_event(prediction_event(rid, [*ROW[:8], prediction]))


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
    rows = buf.resolve({"a": stored("a"), "c": stored("c")})
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
    buf.resolve({"a": stored("a"), "b": stored("b")})
    logged, fresh = buf.take()
    assert logged.already_logged and (logged.first_offset, logged.last_offset) == (10, 11)
    assert not fresh.already_logged and [r.request_id for r in fresh.rows] == ["b"]


def test_duplicate_feedback_gives_one_row_per_record() -> None:
    buf = FeedbackBuffer(partition=0)
    buf.add(0, feedback_event("a", 1.0), now=0.0)
    buf.add(1, feedback_event("a", 2.0), now=0.0)
    rows = buf.resolve({"a": stored("a")})
    assert [r.actual for r in rows] == [1.0, 2.0]


def test_labelled_row_columns_and_error_sign() -> None:
    buf = FeedbackBuffer(partition=0)
    buf.add(0, feedback_event("a", 200_000.0), now=0.0)
    (row,) = buf.resolve({"a": stored("a", 210_000.0)})
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
