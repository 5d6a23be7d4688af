"""The labelled-data log writer: hourly Parquet partitions, atomic, idempotent by offsets.

Layout and names come from :mod:`driftloop_contracts.labelled_log`::

    <root>/date=YYYY-MM-DD/hour=HH/part-p<partition>-o<first>-<last>.parquet

A flush of feedback offsets ``first..last`` of one partition writes exactly one file, in the
hour partition its rows fall in (by ``labelled_at``, the feedback time; the buffer splits a
flush at the hour, see :meth:`~..feedback_join.FeedbackBuffer.take`), to a hidden temp name,
fsynced, then renamed: a reader sees a whole file or none, and a file's existence proves that
all of its offsets are logged. A flush whose records were all skipped still writes a zero-row
file (in the hour it is written), so a partition's files chain offset to offset.

After a crash, files may exist for offsets that were never committed. :meth:`logged_through`
finds them: starting at the committed offset, it follows the chain of part files
``first = previous last + 1`` and returns the last offset covered; the consumer skips those
offsets on replay. Requiring the chain to start at the committed offset keeps files of an
older broker epoch (Tansu restarts from offset 0) from being mistaken for ours.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from driftloop_contracts import LABELLED_LOG_COLUMNS, part_file_name, partition_dir

from ..errors import LabelledLogError
from ..feedback_join import Flush, LabelledRow

_PART_RE = re.compile(r"^part-p(?P<p>\d+)-o(?P<first>\d+)-(?P<last>\d+)\.parquet$")
#: Offsets a chain may skip between files (Kafka offsets can have small gaps).
CHAIN_GAP = 16
_TIMESTAMP_COLUMNS = ("predicted_at", "labelled_at")
_STRING_COLUMNS = ("request_id", "model_name", "model_version")


def rows_frame(rows: list[LabelledRow]) -> pd.DataFrame:
    """Rows as a frame with the log's columns and stable dtypes (also when empty)."""
    frame = pd.DataFrame([r.as_record() for r in rows], columns=list(LABELLED_LOG_COLUMNS))
    for col in LABELLED_LOG_COLUMNS:
        if col in _TIMESTAMP_COLUMNS:
            frame[col] = pd.to_datetime(frame[col], utc=True)
        elif col in _STRING_COLUMNS:
            frame[col] = frame[col].astype("string")
        else:
            frame[col] = frame[col].astype("float64")
    return frame


class LabelledLogWriter:
    """Writes :class:`Flush` batches under ``root`` (blocking: call it in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, flush: Flush, *, now: datetime | None = None) -> list[Path]:
        """Write the flush's one part file (none for an ``already_logged`` flush)."""
        if flush.already_logged:
            return []
        name = part_file_name(flush.partition, flush.first_offset, flush.last_offset)
        hours = {partition_dir(row.labelled_at) for row in flush.rows}
        if len(hours) > 1:  # a bug upstream: two files per flush is what could leave a gap
            raise ValueError(f"{name}: rows of {len(hours)} hour partitions in one part file")
        rel = hours.pop() if hours else partition_dir(now or datetime.now(UTC))
        directory = self.root / str(rel)
        path = directory / name
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".{name}.{os.getpid()}.tmp"
            rows_frame(flush.rows).to_parquet(tmp, index=False)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(directory)
        except OSError as exc:
            raise LabelledLogError(f"could not write labelled log file {name}: {exc}") from exc
        return [path]

    def part_ranges(
        self, partition: int, *, hours: int, now: datetime | None = None
    ) -> list[tuple[int, int]]:
        """Offset ranges of the partition's part files in the last ``hours`` hour partitions."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        ranges: set[tuple[int, int]] = set()
        for i in range(hours + 2):
            directory = self.root / str(partition_dir(hour - timedelta(hours=i)))
            if not directory.is_dir():
                continue
            for path in directory.glob(f"part-p{partition}-o*-*.parquet"):
                m = _PART_RE.match(path.name)
                if m and int(m["p"]) == partition:
                    ranges.add((int(m["first"]), int(m["last"])))
        return sorted(ranges)

    def logged_through(
        self, partition: int, committed: int | None, *, hours: int, now: datetime | None = None
    ) -> int | None:
        """Last offset already in the log beyond the committed one, or ``None``."""
        if committed is None:
            return None
        expect = committed
        through: int | None = None
        for first, last in self.part_ranges(partition, hours=hours, now=now):
            if last < expect:
                continue
            if first > expect + CHAIN_GAP:
                break
            through = last if through is None else max(through, last)
            expect = through + 1
        return through


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
