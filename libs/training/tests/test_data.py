"""Base data naming and the labelled-log reader: window, dedupe, lineage, bad input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import FEATURE_NAMES, TARGET_NAME
from driftloop_training.data import labelled_to_frame, read_labelled_log, split_base
from driftloop_training.errors import DataError


def test_base_data_has_contract_columns_and_units(base_data: pd.DataFrame) -> None:
    assert list(base_data.columns) == [*FEATURE_NAMES, TARGET_NAME]
    assert len(base_data) == 20640
    # MedHouseVal is in 100k USD: the documented mean is 2.0686
    assert base_data[TARGET_NAME].mean() == pytest.approx(2.068558, abs=1e-5)


def test_split_is_deterministic_and_disjoint(base_data: pd.DataFrame) -> None:
    a_train, a_hold = split_base(base_data, holdout_share=0.2, seed=1)
    _, b_hold = split_base(base_data, holdout_share=0.2, seed=1)
    pd.testing.assert_frame_equal(a_hold, b_hold)
    assert len(a_train) + len(a_hold) == len(base_data)
    assert len(a_hold) == round(0.2 * len(base_data))


def test_reads_only_the_window_and_reports_partitions(
    tmp_path: Path,
    base_data: pd.DataFrame,
    hour: Callable[[int], datetime],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[[Path, pd.DataFrame], list[Path]],
) -> None:
    rows = base_data.head(300)
    frame = labelled_rows(rows, start=hour(9), span=timedelta(hours=3))  # hours 9, 10, 11
    write_log(tmp_path, frame)
    got = read_labelled_log(tmp_path, start=hour(10), end=hour(11) + timedelta(minutes=30))
    assert got.partitions == ["date=2026-01-05/hour=10", "date=2026-01-05/hour=11"]
    assert (got.frame["labelled_at"] >= hour(10)).all()
    assert (got.frame["labelled_at"] < hour(11) + timedelta(minutes=30)).all()
    assert len(got.frame) == 150
    assert got.frame["labelled_at"].is_monotonic_increasing


def test_duplicate_request_keeps_its_first_label(
    tmp_path: Path,
    base_data: pd.DataFrame,
    hour: Callable[[int], datetime],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[[Path, pd.DataFrame], list[Path]],
) -> None:
    frame = labelled_rows(base_data.head(10), start=hour(9), span=timedelta(minutes=10))
    later = frame.iloc[[0, 1]].copy()
    later["labelled_at"] = [hour(9) + timedelta(minutes=30), hour(10) + timedelta(minutes=5)]
    later["actual"] = 123_456.0
    # the later labels are written first and in another file and hour: order on disk is no hint
    write_log(tmp_path, later)
    write_log(tmp_path, frame)
    got = read_labelled_log(tmp_path, start=hour(9), end=hour(11))
    assert len(got.frame) == 10 and got.frame["request_id"].is_unique
    assert got.duplicates_dropped == 2
    kept = got.frame.set_index("request_id").loc[frame.loc[[0, 1], "request_id"], "actual"]
    assert list(kept) == list(frame.loc[[0, 1], "actual"])


def test_non_finite_rows_are_dropped_and_counted(
    tmp_path: Path,
    base_data: pd.DataFrame,
    hour: Callable[[int], datetime],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[[Path, pd.DataFrame], list[Path]],
) -> None:
    frame = labelled_rows(base_data.head(10), start=hour(9), span=timedelta(minutes=10))
    frame.loc[3, "actual"] = np.nan
    frame.loc[4, FEATURE_NAMES[0]] = np.inf
    write_log(tmp_path, frame)
    got = read_labelled_log(tmp_path, start=hour(9), end=hour(10))
    assert len(got.frame) == 8
    assert got.invalid_dropped == 2


def test_empty_or_missing_log_gives_no_rows(
    tmp_path: Path, hour: Callable[[int], datetime]
) -> None:
    got = read_labelled_log(tmp_path / "nothing", start=hour(0), end=hour(5))
    assert got.frame.empty and got.partitions == []


def test_file_without_contract_columns_is_a_data_error(
    tmp_path: Path, hour: Callable[[int], datetime]
) -> None:
    part = tmp_path / "date=2026-01-05" / "hour=09"
    part.mkdir(parents=True)
    pd.DataFrame({"request_id": ["a"], "x": [1.0]}).to_parquet(part / "part-p0-o0-0.parquet")
    with pytest.raises(DataError, match="lacks columns"):
        read_labelled_log(tmp_path, start=hour(9), end=hour(10))


def test_temp_files_are_ignored(
    tmp_path: Path,
    base_data: pd.DataFrame,
    hour: Callable[[int], datetime],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[[Path, pd.DataFrame], list[Path]],
) -> None:
    frame = labelled_rows(base_data.head(5), start=hour(9), span=timedelta(minutes=5))
    (path,) = write_log(tmp_path, frame)
    (path.parent / f".{path.name}.tmp").write_bytes(b"half-written")
    assert len(read_labelled_log(tmp_path, start=hour(9), end=hour(10)).frame) == 5


def test_labelled_rows_convert_usd_to_model_units(
    base_data: pd.DataFrame,
    hour: Callable[[int], datetime],
    labelled_rows: Callable[..., pd.DataFrame],
) -> None:
    frame = labelled_rows(base_data.head(5), start=hour(9), span=timedelta(minutes=5))
    converted = labelled_to_frame(frame)
    np.testing.assert_allclose(converted[TARGET_NAME], base_data[TARGET_NAME].head(5))
    assert list(converted.columns) == [*FEATURE_NAMES, TARGET_NAME]
