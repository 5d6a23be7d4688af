"""One labelled row per request, first label wins: across duplicate feedback, a crash and the
replay that follows (loop.py against the fakes of test_loop)."""

from __future__ import annotations

from pathlib import Path

from driftloop_contracts import FEEDBACK_TOPIC, InvalidReason

from .conftest import ReferenceData, until
from .test_loop import Harness, committed, metric, start, stop


async def test_a_request_labelled_twice_keeps_its_first_label_across_a_crash(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    ids = h.predictions(600)
    h.feedback(ids, actual=lambda i: 100_000.0 + i)
    # the same requests labelled again (another client, a retry past the API): later offsets
    h.feedback(ids[:200], actual=lambda i: -1.0, partition_of=lambda i: (i + 1) % 2)
    first = h.make_loop()
    tasks = await start(first)
    await until(lambda: len(h.labelled()) >= 200)
    for c in h.consumers:
        c.fail_commits = True  # files written and labels claimed, offsets not committed ...
    await until(lambda: len(h.labelled()) >= 400)
    await stop(first, tasks, kill=True)  # ... and the process dies
    await until(h.writes_finished)

    second = h.make_loop()
    tasks = await start(second)
    end = {p: h.end(FEEDBACK_TOPIC, p) for p in (0, 1)}
    await until(lambda: all(committed(h, FEEDBACK_TOPIC, p) == end[p] for p in (0, 1)))
    log = h.labelled()
    assert len(log) == 600 and log["request_id"].is_unique
    assert sorted(log["request_id"]) == sorted(ids)
    actual = log.set_index("request_id")["actual"]
    assert all(actual[rid] == 100_000.0 + i for i, rid in enumerate(ids))
    # the second process replayed from the last commit: every duplicate it read was counted
    duplicates = metric(
        second,
        "driftloop_events_invalid_total",
        topic=FEEDBACK_TOPIC,
        reason=InvalidReason.DUPLICATE_LABEL,
    )
    assert 0 < duplicates <= 200
    await stop(second, tasks)


async def test_duplicates_are_counted_once_each_without_a_crash(
    tmp_path: Path, reference: ReferenceData
) -> None:
    h = Harness(tmp_path, reference)
    ids = h.predictions(100)
    h.feedback(ids, actual=lambda i: 1.0)
    h.feedback(ids[:30], actual=lambda i: 2.0)
    loop = h.make_loop()
    tasks = await start(loop)
    end = {p: h.end(FEEDBACK_TOPIC, p) for p in (0, 1)}
    await until(lambda: all(committed(h, FEEDBACK_TOPIC, p) == end[p] for p in (0, 1)))
    log = h.labelled()
    assert len(log) == 100 and log["request_id"].is_unique and set(log["actual"]) == {1.0}
    assert metric(loop, "driftloop_labelled_rows_total") == 100
    assert (
        metric(
            loop,
            "driftloop_events_invalid_total",
            topic=FEEDBACK_TOPIC,
            reason=InvalidReason.DUPLICATE_LABEL,
        )
        == 30
    )
    await stop(loop, tasks)
