"""Scores are in USD and match their textbook definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import HOLDOUT_MAE_METRIC, HOLDOUT_R2_METRIC, HOLDOUT_RMSE_METRIC
from driftloop_training.evaluate import score_model, score_usd
from driftloop_training.train import ModelParams, fit_model, predict_usd


def test_known_values() -> None:
    s = score_usd(np.array([100.0, 200.0, 300.0]), np.array([110.0, 190.0, 330.0]))
    assert s.rmse_usd == pytest.approx(np.sqrt((100 + 100 + 900) / 3))
    assert s.mae_usd == pytest.approx(50 / 3)
    assert s.r2 == pytest.approx(1 - 1100 / 20000)
    assert s.n == 3


def test_constant_target_has_zero_r2_not_nan() -> None:
    assert score_usd(np.array([5.0, 5.0]), np.array([5.0, 6.0])).r2 == 0.0


def test_metric_names_are_the_contract_ones() -> None:
    metrics = score_usd(np.array([1.0, 2.0]), np.array([1.0, 2.0])).holdout_metrics()
    assert set(metrics) == {HOLDOUT_RMSE_METRIC, HOLDOUT_MAE_METRIC, HOLDOUT_R2_METRIC}


def test_model_scores_are_in_usd(
    base_split: tuple[pd.DataFrame, pd.DataFrame], fast: ModelParams
) -> None:
    train, holdout = base_split
    model = fit_model(train.head(3000), params=fast)
    scores = score_model(model, holdout.head(1000))
    assert 30_000 < scores.rmse_usd < 90_000  # 100k-unit RMSE would be < 1
    assert scores.r2 > 0.6
    assert predict_usd(model, holdout.head(3)).min() > 1_000
