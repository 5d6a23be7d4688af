"""Scoring in the API's unit: RMSE, MAE and R² of predictions against actuals, in USD.

Everything a human compares (MLflow metrics, version tags, the promotion gate, the drift
consumer's online RMSE ratio) uses these USD figures, so they are comparable across models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop_contracts import (
    HOLDOUT_MAE_METRIC,
    HOLDOUT_R2_METRIC,
    HOLDOUT_RMSE_METRIC,
    TARGET_NAME,
    TARGET_SCALE_USD,
)

from .train import predict_usd


@dataclass(frozen=True)
class Scores:
    rmse_usd: float
    mae_usd: float
    r2: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def holdout_metrics(self) -> dict[str, float]:
        """The figures under the metric names every model version carries."""
        return {
            HOLDOUT_RMSE_METRIC: self.rmse_usd,
            HOLDOUT_MAE_METRIC: self.mae_usd,
            HOLDOUT_R2_METRIC: self.r2,
        }


def score_usd(actual_usd: np.ndarray, predicted_usd: np.ndarray) -> Scores:
    """RMSE, MAE and R² of USD predictions. R² is 0 for a constant target (no variance)."""
    actual = np.asarray(actual_usd, dtype="float64")
    predicted = np.asarray(predicted_usd, dtype="float64")
    if actual.shape != predicted.shape or actual.ndim != 1:
        raise ValueError(f"shape mismatch: actual {actual.shape}, predicted {predicted.shape}")
    if len(actual) == 0:
        raise ValueError("cannot score zero rows")
    err = predicted - actual
    rmse = float(np.sqrt(np.mean(err**2)))
    mae = float(np.mean(np.abs(err)))
    total = float(np.sum((actual - actual.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / total if total > 0 else 0.0
    return Scores(rmse_usd=rmse, mae_usd=mae, r2=r2, n=len(actual))


def score_model(model: Any, frame: pd.DataFrame) -> Scores:
    """Score ``model`` on ``frame`` (features + target in 100,000 USD), in USD."""
    actual = frame[TARGET_NAME].to_numpy(dtype="float64") * TARGET_SCALE_USD
    return score_usd(actual, predict_usd(model, frame))
