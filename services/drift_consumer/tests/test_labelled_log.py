"""sinks/labelled_log.py: atomic hourly part files the training package reads back, and the
offset chain that makes a replay skip what a crashed run already wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from driftloop_contracts import LABELLED_LOG_COLUMNS
from driftloop_drift_consumer.feedback_join import (
    FeedbackBuffer,
    Flush,
    JoinStore,
    LabelledRow,
    StoredPrediction,
)
from driftloop_drift_consumer.sinks.labelled_log import LabelledLogWriter
from driftloop_training.data import read_labelled_log

from .conftest import FakeAsyncRedis, feedback_event, prediction_event

NOW = datetime(2026, 3, 1, 14, 30, tzinfo=UTC)


def stored(rid: str) -> StoredPrediction:
    return StoredPrediction.from_event(
        prediction_event(rid, [3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0, 110_000.0])
    )


def every_row(root: Path) -> pd.DataFrame:
    """Every row of every part file, duplicates included."""
    files = sorted(root.rglob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def row(rid: str, labelled_at: datetime, actual: float = 100_000.0) -> LabelledRow:
    return LabelledRow(
        rid,
        labelled_at - timedelta(minutes=5),
        labelled_at,
        "california-housing",
        "3",
        (3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0),
        110_000.0,
        actual,
    )


def test_a_flush_is_one_file_in_its_rows_hour_and_reads_back(tmp_path: Path) -> None:
    writer = LabelledLogWriter(tmp_path)
    later = NOW + timedelta(hours=1)
    paths = writer.write(Flush(1, 40, 49, [row("a", NOW), row("c", NOW)]), now=later)
    paths += writer.write(Flush(1, 50, 59, [row("b", later)]), now=later)
    rel = [str(p.relative_to(tmp_path)) for p in paths]
    assert rel == [
        "date=2026-03-01/hour=14/part-p1-o40-49.parquet",
        "date=2026-03-01/hour=15/part-p1-o50-59.parquet",
    ]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    log = read_labelled_log(tmp_path, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=2))
    assert sorted(log.frame["request_id"]) == ["a", "b", "c"]
    assert list(pd.read_parquet(paths[0]).columns) == list(LABELLED_LOG_COLUMNS)


def test_rows_of_two_hours_in_one_flush_are_refused(tmp_path: Path) -> None:
    writer = LabelledLogWriter(tmp_path)
    rows = [row("a", NOW), row("b", NOW + timedelta(hours=1))]
    with pytest.raises(ValueError, match="2 hour partitions"):
        writer.write(Flush(1, 40, 49, rows), now=NOW)
    assert not list(tmp_path.rglob("*.parquet"))


async def test_a_crash_between_the_files_of_an_hour_crossing_flush_loses_nothing(
    tmp_path: Path,
) -> None:
    """Feedback 0..9 labelled across 14:59:59 -> 15:00:00 is flushed; the process dies after
    the first file. The replay (nothing committed) finds the chain up to the first file only
    and writes the rest: every request exactly once. (Two files under one offset range, as an
    earlier layout wrote, would have made the replay skip hour 15's rows for good.)"""
    edge = datetime(2026, 3, 1, 14, 59, 59, tzinfo=UTC)
    times = [edge + timedelta(milliseconds=250 * i) for i in range(10)]  # 4 in 14h, 6 in 15h
    predictions = {f"r{i}": stored(f"r{i}") for i in range(10)}
    store = JoinStore(FakeAsyncRedis(), ttl_seconds=600)
    writer = LabelledLogWriter(tmp_path)

    async def run(logged_through: int | None) -> list[Flush]:
        buf = FeedbackBuffer(partition=0, logged_through=logged_through)
        for i, ts in enumerate(times):
            buf.add(i, feedback_event(f"r{i}", 1_000.0 * i, ts=ts), now=0.0)
        found = {rid: p for rid, p in predictions.items() if rid in buf.waiting_ids()}
        buf.resolve(found, await store.claim_labels(buf.label_claims(found)))
        return buf.take()

    first_run = await run(logged_through=None)
    assert [(f.first_offset, f.last_offset) for f in first_run] == [(0, 3), (4, 9)]
    writer.write(first_run[0], now=edge)  # ... and SIGKILL before the second file

    through = writer.logged_through(0, committed=0, hours=4, now=edge)
    assert through == 3
    replay = await run(logged_through=through)
    assert [(f.first_offset, f.last_offset, f.already_logged) for f in replay] == [
        (0, 3, True),
        (4, 9, False),
    ]
    for flush in replay:
        writer.write(flush, now=edge)

    raw = every_row(tmp_path)
    assert sorted(raw["request_id"]) == sorted(predictions)  # none lost, none twice
    assert raw["request_id"].is_unique
    assert writer.logged_through(0, committed=0, hours=4, now=edge) == 9
    log = read_labelled_log(
        tmp_path, start=edge - timedelta(hours=1), end=edge + timedelta(hours=1)
    )
    assert sorted(log.frame["request_id"]) == sorted(predictions)
    assert log.duplicates_dropped == 0


def test_a_flush_of_skipped_records_writes_an_empty_file(tmp_path: Path) -> None:
    writer = LabelledLogWriter(tmp_path)
    (path,) = writer.write(Flush(0, 5, 9, []), now=NOW)
    frame = pd.read_parquet(path)
    assert len(frame) == 0 and list(frame.columns) == list(LABELLED_LOG_COLUMNS)
    assert writer.write(Flush(0, 0, 4, [], already_logged=True)) == []


def test_rewriting_the_same_range_replaces_the_file(tmp_path: Path) -> None:
    writer = LabelledLogWriter(tmp_path)
    writer.write(Flush(0, 0, 1, [row("a", NOW), row("b", NOW)]), now=NOW)
    writer.write(Flush(0, 0, 1, [row("a", NOW), row("b", NOW)]), now=NOW)
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 1 and len(pd.read_parquet(files[0])) == 2


def test_logged_through_follows_the_chain_from_the_committed_offset(tmp_path: Path) -> None:
    writer = LabelledLogWriter(tmp_path)
    for first, last in [(0, 9), (10, 19), (20, 29), (30, 39)]:
        writer.write(Flush(2, first, last, [row(f"r{first}", NOW)]), now=NOW)
    writer.write(Flush(3, 0, 500, [row("other-partition", NOW)]), now=NOW)
    lt = lambda c: writer.logged_through(2, c, hours=4, now=NOW)  # noqa: E731
    assert lt(None) is None  # no commit: a new group or a new broker epoch
    assert lt(20) == 39  # written 20..39 but committed only up to 20
    assert lt(40) is None  # everything committed
    assert lt(5) == 39  # a commit inside a file (only possible across epochs) still chains
    # files of an older epoch far beyond the commit are not ours
    writer.write(Flush(2, 5000, 5100, [row("old", NOW)]), now=NOW)
    assert lt(40) is None
    assert lt(20) == 39


def test_chain_scan_is_limited_to_recent_hours(tmp_path: Path) -> None:
    writer = LabelledLogWriter(tmp_path)
    writer.write(Flush(0, 0, 9, [row("old", NOW - timedelta(hours=10))]), now=NOW)
    assert writer.logged_through(0, 0, hours=4, now=NOW) is None
    assert writer.logged_through(0, 0, hours=12, now=NOW) == 9
