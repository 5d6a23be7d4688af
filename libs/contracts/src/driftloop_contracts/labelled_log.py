"""Layout of the labelled-data log: joined prediction + feedback rows, in hourly Parquet partitions.

The drift consumer writes it and the retraining DAG reads it. A file is named by the feedback
topic partition and the offset range it covers and is written atomically (temp file + rename),
so replaying a batch after a crash rewrites the same file instead of adding a duplicate.

    <root>/date=2026-11-23/hour=14/part-p<partition>-o<first_offset>-<last_offset>.parquet

Rules a reader may rely on:

- every row of a file lies in the file's hour partition (by ``labelled_at``, UTC): a writer
  whose batch crosses an hour writes consecutive offset ranges, one file each, never one range
  split over two directories (a crash between the two would leave a gap that looks complete);
- one row per ``request_id`` across the whole log: the first label of a request is kept, later
  ones are not written (readers still drop duplicates, keeping the earliest ``labelled_at``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from .features import FEATURE_NAMES

#: Columns, in order. Values of ``prediction`` and ``actual`` are USD.
LABELLED_LOG_COLUMNS: tuple[str, ...] = (
    "request_id",
    "predicted_at",
    "labelled_at",
    "model_name",
    "model_version",
    *FEATURE_NAMES,
    "prediction",
    "actual",
)


def partition_dir(labelled_at: datetime) -> PurePosixPath:
    """Hour partition (UTC) that a row labelled at ``labelled_at`` belongs to."""
    return PurePosixPath(f"date={labelled_at:%Y-%m-%d}") / f"hour={labelled_at:%H}"


def part_file_name(partition: int, first_offset: int, last_offset: int) -> str:
    return f"part-p{partition}-o{first_offset}-{last_offset}.parquet"
