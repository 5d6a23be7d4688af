"""Fixtures for the training package's unit tests: no network, an MLflow store on SQLite.

Creating an MLflow SQLite schema runs its migrations (seconds), so one migrated database is
made per session and each test gets a copy with its own artifact directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
os.environ.setdefault(
    "SCIKIT_LEARN_DATA", str(REPO_ROOT.parent / "shared" / "data" / "scikit_learn_data")
)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from driftloop_contracts import EXPERIMENT_NAME, FEATURE_NAMES, MODEL_NAME, TARGET_NAME  # noqa: E402
from driftloop_training.data import load_base_data, split_base, write_labelled_part  # noqa: E402
from driftloop_training.settings import TrainingSettings  # noqa: E402
from driftloop_training.train import ModelParams  # noqa: E402

#: Small, fast models for unit tests (the real defaults are exercised by integration tests).
FAST = ModelParams(max_iter=60, early_stopping=False)


@pytest.fixture(scope="session")
def base_data() -> pd.DataFrame:
    return load_base_data(download_if_missing=False)


@pytest.fixture(scope="session")
def base_split(base_data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_base(base_data, holdout_share=0.2, seed=42)


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # runs migrations
    return path


@pytest.fixture
def settings(tmp_path: Path, _template_db: Path) -> Iterator[TrainingSettings]:
    """Settings pointing at a fresh MLflow SQLite store and empty log/work dirs under tmp_path."""
    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copy(_template_db, db)
    uri = f"sqlite:///{db}"
    MlflowClient(tracking_uri=uri).create_experiment(
        EXPERIMENT_NAME, artifact_location=(tmp_path / "artifacts").as_uri()
    )
    yield TrainingSettings(
        mlflow_tracking_uri=uri,
        kafka_bootstrap="127.0.0.1:1",  # nothing listens: a test that publishes must fake it
        labelled_log_dir=tmp_path / "labelled",
        work_dir=tmp_path / "work",
    )


def _labelled_rows(
    rows: pd.DataFrame,
    *,
    start: datetime,
    span: timedelta,
    model_version: str = "1",
    price_factor: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Labelled-log rows for ``rows`` (features + target in 100k USD), evenly spread in time."""
    n = len(rows)
    labelled_at = [start + span * (i / max(n, 1)) for i in range(n)]
    actual = rows[TARGET_NAME].to_numpy() * 100_000.0
    if price_factor is not None:
        actual = actual * price_factor(rows)
    return pd.DataFrame(
        {
            "request_id": [str(uuid.uuid4()) for _ in range(n)],
            "predicted_at": [t - timedelta(seconds=30) for t in labelled_at],
            "labelled_at": labelled_at,
            "model_name": MODEL_NAME,
            "model_version": model_version,
            **{name: rows[name].to_numpy() for name in FEATURE_NAMES},
            "prediction": rows[TARGET_NAME].to_numpy() * 100_000.0,
            "actual": actual,
        }
    )


def _write_log(root: Path, frame: pd.DataFrame) -> list[Path]:
    """Write ``frame`` as one part file per hour, like the drift consumer does."""
    hours = pd.to_datetime(frame["labelled_at"], utc=True).dt.floor("h")
    return [
        write_labelled_part(root, part, partition=0, first_offset=i * 100_000)
        for i, (_, part) in enumerate(frame.groupby(hours, sort=True))
    ]


def _hour(h: int) -> datetime:
    """A fixed UTC hour on a fixed day, so tests never depend on the clock."""
    return datetime(2026, 1, 5, h, tzinfo=UTC)


@pytest.fixture
def labelled_rows() -> Callable[..., pd.DataFrame]:
    """Factory: labelled-log rows for base-data rows, spread over a time span."""
    return _labelled_rows


@pytest.fixture
def write_log() -> Callable[[Path, pd.DataFrame], list[Path]]:
    """Writes a labelled frame as hourly part files in the drift consumer's layout."""
    return _write_log


@pytest.fixture
def hour() -> Callable[[int], datetime]:
    return _hour


@pytest.fixture
def fast() -> ModelParams:
    return FAST
