"""A fetch that skips an offset (the local broker acknowledged the record but had not stored it
yet) is read again from that offset: the record is consumed and labelled once, nothing is
committed past it, and the gap is counted; only a gap that outlasts the patience is read past,
and counted as lost."""

from __future__ import annotations

from pathlib import Path

from aiokafka.structs import TopicPartition

from driftloop_contracts import FEEDBACK_TOPIC
from driftloop_drift_consumer.loop import DriftLoop

from .conftest import ReferenceData, until
from .test_loop import Harness, committed, metric, start, stop

F0 = TopicPartition(FEEDBACK_TOPIC, 0)


def consumed(loop: DriftLoop, topic: str) -> float:
    return metric(loop, "driftloop_events_consumed_total", topic=topic)


async def test_a_skipped_record_is_read_again_once_it_is_stored(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    ids = h.predictions(200)
    h.feedback(ids, actual=lambda i: 100_000.0 + i)
    late = h.log.records[F0][10]  # acknowledged, not stored yet
    h.log.unstored.add((F0, late.offset))
    loop = h.make_loop()
    tasks = await start(loop)
    await until(lambda: any(tp == F0 for c in h.consumers for tp, _ in c.seeks))
    assert (committed(h, FEEDBACK_TOPIC, 0) or 0) <= late.offset  # nothing committed past it
    assert consumed(loop, FEEDBACK_TOPIC) < 200
    h.log.unstored.clear()  # the broker stored it
    await until(lambda: consumed(loop, FEEDBACK_TOPIC) == 200 and len(h.labelled()) == 200)
    await until(lambda: committed(h, FEEDBACK_TOPIC, 0) == h.end(FEEDBACK_TOPIC, 0))
    labelled = h.labelled()
    assert labelled["request_id"].is_unique and set(labelled["request_id"]) == set(ids)
    refetched = metric(
        loop, "driftloop_fetch_gaps_total", topic=FEEDBACK_TOPIC, outcome="refetched"
    )
    assert refetched == 1
    assert metric(loop, "driftloop_fetch_gaps_total", topic=FEEDBACK_TOPIC, outcome="lost") == 0
    await stop(loop, tasks)


async def test_a_gap_that_never_fills_is_read_past_after_the_patience_and_counted_lost(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference, fetch_gap_patience_seconds=0.3)
    ids = h.predictions(200)
    h.feedback(ids, actual=lambda i: 100_000.0 + i)
    lost = h.log.records[F0][10]
    h.log.unstored.add((F0, lost.offset))
    loop = h.make_loop()
    tasks = await start(loop)
    await until(
        lambda: (
            metric(loop, "driftloop_fetch_gaps_total", topic=FEEDBACK_TOPIC, outcome="lost") == 1
        )
    )
    await until(lambda: len(h.labelled()) == 199)
    await until(lambda: committed(h, FEEDBACK_TOPIC, 0) == h.end(FEEDBACK_TOPIC, 0))
    assert consumed(loop, FEEDBACK_TOPIC) == 199
    await stop(loop, tasks)
