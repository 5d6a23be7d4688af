"""Settling after an incident: the profile and holdout come from rows predicted since the
alert began; too few of them and the DAG waits (bounded) instead of profiling a mix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop_training import registry, retrain
from driftloop_training.regime import check_regime, count_regime_rows
from driftloop_training.retrain import RetrainParams
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import ModelParams

N_BEFORE = 900
N_AFTER = 400


@pytest.fixture
def incident(hour: Callable[[int], datetime]) -> datetime:
    return hour(11)


@pytest.fixture
def two_regimes(
    settings: TrainingSettings,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[[Path, pd.DataFrame], list[Path]],
    incident: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows before the incident (old regime) and after it (incomes x1.5: a covariate shift)."""
    rows = base_split[1].sample(n=N_BEFORE + N_AFTER, random_state=5).reset_index(drop=True)
    before = labelled_rows(
        rows.iloc[:N_BEFORE], start=incident - timedelta(minutes=50), span=timedelta(minutes=49)
    )
    shifted = rows.iloc[N_BEFORE:].copy()
    shifted["median_income_in_block"] *= 1.5
    # predicted_at = labelled_at - 30 s: start 31 s in, so every one is predicted after onset
    after = labelled_rows(
        shifted.reset_index(drop=True),
        start=incident + timedelta(seconds=31),
        span=timedelta(minutes=20),
    )
    # a late label: predicted before the incident, labelled after it -> old regime
    late = labelled_rows(
        rows.iloc[:1], start=incident + timedelta(seconds=10), span=timedelta(seconds=1)
    )
    write_log(settings.labelled_log_dir, pd.concat([before, late, after], ignore_index=True))
    return before, after


def test_rows_are_counted_by_prediction_time(
    settings: TrainingSettings, two_regimes: tuple[pd.DataFrame, pd.DataFrame], incident: datetime
) -> None:
    end = incident + timedelta(hours=1)
    assert count_regime_rows(settings.labelled_log_dir, incident_start=incident, end=end) == N_AFTER


def test_enough_rows_is_done_and_the_window_ends_at_the_look(
    settings: TrainingSettings, two_regimes: tuple[pd.DataFrame, pd.DataFrame], incident: datetime
) -> None:
    now = incident + timedelta(minutes=25)
    check = check_regime(
        settings.labelled_log_dir,
        incident_start=incident,
        now=now,
        triggered_at=incident + timedelta(seconds=20),
        min_regime_rows=N_AFTER,
        wait_seconds=600,
    )
    assert check.done and check.regime_rows == N_AFTER and check.window_end == now


def test_too_few_waits_until_the_deadline_then_gives_up(
    settings: TrainingSettings, two_regimes: tuple[pd.DataFrame, pd.DataFrame], incident: datetime
) -> None:
    triggered = incident + timedelta(seconds=20)

    def look(after_s: float, **kw: object) -> str:
        check = check_regime(
            settings.labelled_log_dir,
            incident_start=incident,
            now=triggered + timedelta(seconds=after_s),
            triggered_at=triggered,
            min_regime_rows=N_AFTER + 1,
            wait_seconds=600,
            **kw,  # type: ignore[arg-type]
        )
        return f"{check.status}: {check.reason}"

    assert look(60).startswith("wait: ")
    assert look(599).startswith("wait: ")
    gave_up = look(600)
    assert gave_up.startswith("give_up: skipped: only ") and "would mix regimes" in gave_up
    # a pinned window cannot grow: no waiting
    pinned = look(60, pinned_end=incident + timedelta(hours=1))
    assert pinned.startswith("give_up: ") and "pinned" in pinned


def test_no_incident_start_needs_no_wait(settings: TrainingSettings, incident: datetime) -> None:
    check = check_regime(
        settings.labelled_log_dir,
        incident_start=None,
        now=incident + timedelta(minutes=5),
        triggered_at=incident,
        min_regime_rows=300,
        wait_seconds=600,
    )
    assert check.done and check.window_end == incident


def test_collect_profiles_and_holds_out_only_the_incidents_regime(
    settings: TrainingSettings,
    two_regimes: tuple[pd.DataFrame, pd.DataFrame],
    incident: datetime,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
    fast: ModelParams,
) -> None:
    _, after = two_regimes
    params = RetrainParams(lookback_hours=2, min_labelled_rows=300, starts_at=incident)
    end = incident + timedelta(hours=1)
    collected = retrain.collect(
        settings, run_key="r", window_end=end, params=params, base=base_split[0]
    )
    assert collected.ready, collected.reason
    assert collected.regime_rows == N_AFTER and collected.incident_start == incident
    assert collected.labelled_rows == N_BEFORE + 1 + N_AFTER
    assert collected.profile_path is not None
    profile_rows = pd.read_parquet(collected.profile_path)
    np.testing.assert_allclose(
        np.sort(profile_rows["median_income_in_block"]),
        np.sort(after["median_income_in_block"]),
    )
    holdout = pd.read_parquet(collected.holdout_path or "")
    n_holdout = int(np.ceil(N_AFTER * params.holdout_share))
    assert len(holdout) == collected.holdout_rows == n_holdout
    newest = after.sort_values("labelled_at").tail(n_holdout)
    np.testing.assert_allclose(holdout["median_income_in_block"], newest["median_income_in_block"])
    # the model still trains on everything else: the old regime and the older new rows
    assert collected.recent_train_rows == N_BEFORE + 1 + N_AFTER - n_holdout

    trained = retrain.train(settings, collected, params=params, model_params=fast)
    profile = registry.load_profile_for_run(settings.mlflow_tracking_uri, trained.run_id)
    assert profile.n_rows == N_AFTER


def test_collect_skips_with_too_few_regime_rows(
    settings: TrainingSettings, two_regimes: tuple[pd.DataFrame, pd.DataFrame], incident: datetime
) -> None:
    params = RetrainParams(
        lookback_hours=2, min_labelled_rows=300, starts_at=incident, min_regime_rows=N_AFTER + 1
    )
    collected = retrain.collect(
        settings, run_key="r", window_end=incident + timedelta(hours=1), params=params
    )
    assert not collected.ready
    assert collected.reason.startswith(f"skipped: only {N_AFTER} labelled rows predicted since")
    assert collected.profile_path is None
