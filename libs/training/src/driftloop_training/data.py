"""Data sources for training: the California housing base data and the labelled-data log.

Both end up as one frame shape: the :data:`FEATURE_NAMES` columns plus :data:`TARGET_NAME` in
the data's unit (100,000 USD), which is what :mod:`driftloop_training.train` fits on.
The log stores ``prediction`` and ``actual`` in USD (the API's unit); :func:`labelled_to_frame`
converts, so the unit change happens in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop_contracts import (
    FEATURE_NAMES,
    LABELLED_LOG_COLUMNS,
    SOURCE_TO_FEATURE,
    TARGET_NAME,
    TARGET_SCALE_USD,
    TARGET_SOURCE_COLUMN,
    partition_dir,
)

from .errors import DataError

#: Columns of every training/evaluation frame, in order.
FRAME_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, TARGET_NAME)
_PART_GLOB = "part-*.parquet"


def load_base_data(*, download_if_missing: bool = False) -> pd.DataFrame:
    """The California housing data with driftloop's column names; target in 100,000 USD.

    Offline machines point ``SCIKIT_LEARN_DATA`` at a directory holding scikit-learn's cache
    (``cal_housing_py3.pkz``) and keep ``download_if_missing=False``.
    """
    from sklearn.datasets import fetch_california_housing

    try:
        bunch = fetch_california_housing(as_frame=True, download_if_missing=download_if_missing)
    except OSError as exc:
        raise DataError(
            "California housing data not found; set SCIKIT_LEARN_DATA to a directory holding "
            f"cal_housing_py3.pkz or allow downloads ({exc})"
        ) from exc
    frame = bunch.frame.rename(columns={**SOURCE_TO_FEATURE, TARGET_SOURCE_COLUMN: TARGET_NAME})
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"California housing data lacks columns {missing}")
    return frame.loc[:, list(FRAME_COLUMNS)].astype("float64").reset_index(drop=True)


def split_base(
    frame: pd.DataFrame, *, holdout_share: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic (train, holdout) split of the base data.

    Bootstrap scores its champion on the holdout; retraining draws its base sample from the
    train part only, so every model's view of the base data is the same for a given seed.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    n_holdout = round(len(frame) * holdout_share)
    holdout = frame.iloc[np.sort(order[:n_holdout])].reset_index(drop=True)
    train = frame.iloc[np.sort(order[n_holdout:])].reset_index(drop=True)
    return train, holdout


@dataclass(frozen=True)
class LabelledLog:
    """Rows read from the labelled log over one window, deduplicated, plus their lineage."""

    frame: pd.DataFrame
    partitions: list[str] = field(default_factory=list)
    files: int = 0
    rows_read: int = 0
    duplicates_dropped: int = 0
    invalid_dropped: int = 0

    @property
    def first_labelled_at(self) -> datetime | None:
        return None if self.frame.empty else self.frame["labelled_at"].min().to_pydatetime()

    @property
    def last_labelled_at(self) -> datetime | None:
        return None if self.frame.empty else self.frame["labelled_at"].max().to_pydatetime()


def _hours(start: datetime, end: datetime) -> list[datetime]:
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def _read_part(path: Path) -> pd.DataFrame:
    try:
        part = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"labelled log file {path} is not readable Parquet: {exc}") from exc
    missing = [c for c in LABELLED_LOG_COLUMNS if c not in part.columns]
    if missing:
        raise DataError(f"labelled log file {path} lacks columns {missing}")
    return part.loc[:, list(LABELLED_LOG_COLUMNS)]


def read_labelled_log(root: Path, *, start: datetime, end: datetime) -> LabelledLog:
    """Labelled rows with ``start <= labelled_at < end``, one per ``request_id``.

    Only the hour partitions that overlap the window are opened (the layout is in
    :mod:`driftloop_contracts.labelled_log`). Files are read whole and filtered by timestamp,
    since a partition's edges need not align with the window. A request labelled twice (feedback
    sent again) keeps its first label (earliest ``labelled_at``), as the feedback API and the
    drift consumer do; the log should hold no such duplicate, this is defence in depth. Rows with a non-finite feature or actual are dropped
    and counted rather than failing the run: the log is written by a stream processor and one
    bad row should not block retraining.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    parts: list[pd.DataFrame] = []
    partitions: list[str] = []
    for hour in _hours(start, end):
        rel = partition_dir(hour)
        directory = root / str(rel)
        if not directory.is_dir():
            continue
        files = sorted(directory.glob(_PART_GLOB))
        if files:
            partitions.append(str(rel))
        parts.extend(_read_part(path) for path in files)

    if not parts:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in LABELLED_LOG_COLUMNS})
        for col in ("predicted_at", "labelled_at"):
            empty[col] = pd.Series(dtype="datetime64[ns, UTC]")
        return LabelledLog(frame=empty, partitions=partitions)

    frame = pd.concat(parts, ignore_index=True)
    rows_read = len(frame)
    for col in ("predicted_at", "labelled_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame = frame[(frame["labelled_at"] >= start) & (frame["labelled_at"] < end)]

    numeric = [*FEATURE_NAMES, "prediction", "actual"]
    values = frame[numeric].apply(pd.to_numeric, errors="coerce")
    finite = np.isfinite(values.to_numpy(dtype="float64")).all(axis=1)
    invalid = int((~finite).sum())
    frame = frame.assign(**{c: values[c] for c in numeric})[finite]

    before = len(frame)
    frame = (
        frame.sort_values(["labelled_at", "request_id"], kind="stable")
        .drop_duplicates("request_id", keep="first")
        .reset_index(drop=True)
    )
    return LabelledLog(
        frame=frame,
        partitions=partitions,
        files=len(parts),
        rows_read=rows_read,
        duplicates_dropped=before - len(frame),
        invalid_dropped=invalid,
    )


def labelled_to_frame(labelled: pd.DataFrame) -> pd.DataFrame:
    """Turn labelled-log rows into a training frame (target converted from USD to 100k USD)."""
    frame = labelled.loc[:, list(FEATURE_NAMES)].astype("float64").copy()
    frame[TARGET_NAME] = labelled["actual"].astype("float64") / TARGET_SCALE_USD
    return frame.reset_index(drop=True)


def write_labelled_part(
    root: Path, rows: pd.DataFrame, *, partition: int = 0, first_offset: int = 0
) -> Path:
    """Write rows to the log in the drift consumer's layout (one file per hour partition).

    Used by tests and demos to fabricate a log; the drift consumer has its own writer. All rows
    must fall in one hour, as a real part file does. Written to a temp name, then renamed.
    """
    from driftloop_contracts import part_file_name

    labelled_at = pd.to_datetime(rows["labelled_at"], utc=True)
    hours = labelled_at.dt.floor("h").drop_duplicates()
    if len(hours) != 1:
        raise ValueError("all rows of a part file must share one labelled_at hour")
    directory = root / str(partition_dir(hours.iloc[0].to_pydatetime()))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / part_file_name(partition, first_offset, first_offset + len(rows) - 1)
    tmp = path.with_name(f".{path.name}.tmp")
    rows.loc[:, list(LABELLED_LOG_COLUMNS)].to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
