"""The feedback join through a Redis outage (loop.py against fakes; the real Redis stopped and
started is tests/integration/test_redis_outage.py).

While Redis is down the batch in hand is retried (counted, ``ready`` false with the reason) and
nothing is committed; afterwards every prediction is counted once, every committed prediction
has its join key, and every feedback event is joined exactly once.
"""

from __future__ import annotations

from pathlib import Path

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC
from driftloop_drift_consumer.feedback_join import JOIN_KEY_PREFIX, StoredPrediction

from .conftest import ReferenceData, until
from .test_loop import Harness, committed, metric, start, stop


async def test_redis_outage_pauses_the_join_and_loses_no_label(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    h.redis.fail = True
    ids = h.predictions(600)  # a window (200) closes per partition: commits move
    h.feedback(ids, actual=lambda i: 100_000.0 + i)
    loop = h.make_loop()
    tasks = await start(loop)

    await until(lambda: metric(loop, "driftloop_sink_failures_total", sink="redis") >= 3)
    for partition in (0, 1):
        assert committed(h, PREDICTIONS_TOPIC, partition) in (None, 0)
        assert committed(h, FEEDBACK_TOPIC, partition) in (None, 0)
    assert h.labelled().empty
    assert metric(loop, "driftloop_sink_up", sink="redis") == 0
    assert "redis" in loop.status.failing_sinks  # what /health/ready reports as the reason
    assert metric(loop, "driftloop_retries_total", operation="sink_redis") >= 3

    h.redis.fail = False
    await until(
        lambda: (
            committed(h, FEEDBACK_TOPIC, 0) == 300
            and committed(h, FEEDBACK_TOPIC, 1) == 300
            and len(h.labelled()) == 600
        )
    )
    log = h.labelled()
    assert sorted(log["request_id"]) == sorted(ids)  # each exactly once
    assert dict(zip(log["request_id"], log["actual"], strict=True)) == {
        rid: 100_000.0 + i for i, rid in enumerate(ids)
    }
    assert metric(loop, "driftloop_labelled_rows_total") == 600
    assert metric(loop, "driftloop_events_consumed_total", topic=PREDICTIONS_TOPIC) == 600
    assert metric(loop, "driftloop_events_consumed_total", topic=FEEDBACK_TOPIC) == 600
    assert metric(loop, "driftloop_sink_up", sink="redis") == 1
    assert not loop.status.failing_sinks
    # No prediction was committed without its join key.
    for partition in (0, 1):
        upto = committed(h, PREDICTIONS_TOPIC, partition) or 0
        assert upto >= 200
        for offset in range(upto):
            rid = ids[2 * offset + partition]
            stored = h.redis.kv[JOIN_KEY_PREFIX + rid]
            assert StoredPrediction.from_json(stored).request_id == rid
    await stop(loop, tasks)
