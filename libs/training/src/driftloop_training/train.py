"""The model: a scikit-learn Pipeline around HistGradientBoostingRegressor.

It is fitted on a DataFrame whose columns are :data:`FEATURE_NAMES` (so predict never warns
about feature names) and predicts in the data's unit, 100,000 USD; :func:`predict_usd` is the
one place that converts to the API's USD.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop_contracts import FEATURE_NAMES, TARGET_NAME, TARGET_SCALE_USD

from .errors import DataError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

REGRESSOR_STEP = "regressor"


@dataclass(frozen=True)
class ModelParams:
    """Hyper-parameters; logged to MLflow as run params (prefixed ``model.``)."""

    learning_rate: float = 0.1
    max_iter: int = 400
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    early_stopping: bool = True
    validation_fraction: float = 0.1
    n_iter_no_change: int = 20
    random_state: int = 42

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_pipeline(params: ModelParams | None = None) -> Pipeline:
    """An unfitted pipeline. Tree models need no scaling, so it is one step for now; the
    Pipeline wrapper keeps the logged artifact's shape stable if preprocessing is added."""
    # Imported here: scikit-learn takes seconds to import, and the DAG's light tasks
    # (announce, skipped steps) import this module without fitting anything.
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    p = params or ModelParams()
    regressor = HistGradientBoostingRegressor(**p.as_dict())
    return Pipeline([(REGRESSOR_STEP, regressor)])


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns of ``frame``, in contract order."""
    missing = [c for c in FEATURE_NAMES if c not in frame.columns]
    if missing:
        raise DataError(f"frame lacks feature columns {missing}")
    return frame.loc[:, list(FEATURE_NAMES)].astype("float64")


def fit_model(
    frame: pd.DataFrame,
    *,
    sample_weight: np.ndarray | None = None,
    params: ModelParams | None = None,
) -> Pipeline:
    """Fit on ``frame`` (features + :data:`TARGET_NAME` in 100,000 USD)."""
    if TARGET_NAME not in frame.columns:
        raise DataError(f"frame lacks the target column {TARGET_NAME!r}")
    if len(frame) < 20:
        raise DataError(f"cannot train on {len(frame)} rows")
    pipeline = build_pipeline(params)
    fit_kwargs: dict[str, Any] = {}
    if sample_weight is not None:
        fit_kwargs[f"{REGRESSOR_STEP}__sample_weight"] = np.asarray(sample_weight, dtype="float64")
    pipeline.fit(features_of(frame), frame[TARGET_NAME].to_numpy(dtype="float64"), **fit_kwargs)
    return pipeline


def predict_usd(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Predictions in USD for the feature columns of ``frame``."""
    return np.asarray(model.predict(features_of(frame)), dtype="float64") * TARGET_SCALE_USD
