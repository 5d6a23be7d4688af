"""Settings come from DRIFTLOOP_TRAINING_* variables and fail naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop_contracts import SettingsError
from driftloop_training.settings import TrainingSettings, load_training_settings


def test_defaults_follow_the_default_port_plan() -> None:
    s = TrainingSettings()
    assert s.mlflow_tracking_uri == "http://127.0.0.1:18050"
    assert s.kafka_bootstrap == "127.0.0.1:18092"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLOOP_TRAINING_MLFLOW_TRACKING_URI", "http://127.0.0.1:28050")
    monkeypatch.setenv("DRIFTLOOP_TRAINING_LABELLED_LOG_DIR", str(tmp_path))
    s = load_training_settings()
    assert s.mlflow_tracking_uri == "http://127.0.0.1:28050"
    assert s.labelled_log_dir == tmp_path


def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_TRAINING_BASE_HOLDOUT_SHARE", "2")
    with pytest.raises(SettingsError, match="DRIFTLOOP_TRAINING_BASE_HOLDOUT_SHARE"):
        load_training_settings()
