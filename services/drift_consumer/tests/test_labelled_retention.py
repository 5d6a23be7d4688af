"""Labelled-log retention: whole hour partitions go once they ended ``keep_days`` ago, never
one a lookback can still read, and a concurrent prune by another consumer is harmless."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftloop_contracts import part_file_name, partition_dir
from driftloop_drift_consumer import labelled_retention
from driftloop_drift_consumer.labelled_retention import expired_partitions, prune, run_retention
from driftloop_drift_consumer.settings import DriftConsumerSettings

NOW = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)


def write_part(root: Path, at: datetime) -> Path:
    directory = root / str(partition_dir(at))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / part_file_name(0, 1, 2)
    path.write_bytes(b"parquet")
    return path


def test_partitions_that_ended_before_the_cutoff_are_deleted_and_no_others(
    tmp_path: Path,
) -> None:
    old = write_part(tmp_path, datetime(2026, 11, 29, 9, 10, tzinfo=UTC))  # ended 09:00+1h < cutoff
    edge = write_part(tmp_path, datetime(2026, 11, 29, 10, 5, tzinfo=UTC))  # ends 11:00 > 10:30
    recent = write_part(tmp_path, datetime(2026, 12, 6, 10, 0, tzinfo=UTC))

    removed = prune(tmp_path, keep_days=7, now=NOW)

    assert removed == [old.parent]
    assert not old.parent.exists()
    assert edge.exists() and recent.exists()
    assert old.parent.parent.exists()  # date=2026-11-29 still holds hour=10


def test_an_emptied_date_directory_goes_too(tmp_path: Path) -> None:
    a = write_part(tmp_path, datetime(2026, 11, 1, 3, tzinfo=UTC))
    b = write_part(tmp_path, datetime(2026, 11, 1, 4, tzinfo=UTC))
    assert sorted(prune(tmp_path, keep_days=30, now=NOW)) == sorted([a.parent, b.parent])
    assert list(tmp_path.iterdir()) == []


def test_unknown_entries_and_a_missing_root_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "date=2020-01-01").mkdir()
    (tmp_path / "date=2020-01-01" / "scratch").mkdir()
    assert prune(tmp_path, keep_days=1, now=NOW) == []
    assert (tmp_path / "date=2020-01-01" / "scratch").exists()
    assert expired_partitions(tmp_path / "absent", 1, NOW) == []


def test_a_partition_pruned_by_another_consumer_meanwhile_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = write_part(tmp_path, datetime(2026, 11, 1, 3, tzinfo=UTC))
    b = write_part(tmp_path, datetime(2026, 11, 1, 4, tzinfo=UTC))
    listed = expired_partitions(tmp_path, 30, NOW)
    shutil.rmtree(a.parent)  # the other consumer got there between listing and deleting
    monkeypatch.setattr(labelled_retention, "expired_partitions", lambda *_: listed)
    assert prune(tmp_path, keep_days=30, now=NOW) == [b.parent]


async def test_the_task_prunes_at_start_and_stops_when_asked(tmp_path: Path) -> None:
    old = write_part(tmp_path, datetime(2020, 1, 1, 0, tzinfo=UTC))
    stopping = asyncio.Event()
    task = asyncio.create_task(run_retention(tmp_path, 1, stopping, interval_s=3600))
    deadline = asyncio.get_running_loop().time() + 10
    while old.exists():
        assert asyncio.get_running_loop().time() < deadline, "partition not pruned"
        await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(task, 5)


def test_retention_must_cover_the_restart_scan() -> None:
    with pytest.raises(ValidationError, match="LABELLED_RETENTION_DAYS"):
        DriftConsumerSettings(labelled_retention_days=1, labelled_scan_hours=48)
    assert DriftConsumerSettings(labelled_retention_days=0).labelled_retention_days == 0
    assert DriftConsumerSettings().labelled_retention_days * 24 >= 48
