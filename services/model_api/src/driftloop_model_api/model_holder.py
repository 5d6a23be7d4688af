"""The model being served, and its atomic swap.

A request reads :attr:`ModelHolder.current` once and keeps that :class:`LoadedModel` for its
whole life, so a swap never changes the model under a request in flight: the old one finishes
its work and is garbage-collected when the last request lets go of it. The swap itself is one
reference assignment on the event loop, so there is no moment without a model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEATURE_BY_NAME,
    FEATURE_NAMES,
    SOURCE_TO_FEATURE,
    TARGET_SCALE_USD,
)

from .errors import ModelLoadError, ModelNotReady

# We hand the estimator a numpy array whose columns we ordered against ``feature_names_in_``
# at load time (see :func:`column_order`), which is the check this warning stands for; a
# DataFrame per request would cost ~0.3 ms of a ~0.6 ms prediction.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class Predictor(Protocol):
    """Anything with scikit-learn's ``predict`` over a 2-D array in model units."""

    def predict(self, X: Any) -> Any: ...


def column_order(estimator: Any) -> list[int]:
    """Index into the API's feature order for each column the estimator was fitted on.

    Accepts models fitted on the API names or on scikit-learn's source names (``MedInc``...);
    a model fitted on anything else is refused here, at load time, instead of mispredicting.
    """
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None:
        return list(range(len(FEATURE_NAMES)))
    order: list[int] = []
    for column in (str(c) for c in fitted):
        name = column if column in FEATURE_BY_NAME else SOURCE_TO_FEATURE.get(column)
        if name is None:
            raise ModelLoadError(f"model expects an unknown column {column!r}")
        order.append(FEATURE_NAMES.index(name))
    if sorted(order) != list(range(len(FEATURE_NAMES))):
        raise ModelLoadError(f"model columns {list(fitted)} do not cover the eight features")
    return order


@dataclass(frozen=True)
class LoadedModel:
    """One model version ready to predict, with what ``GET /model`` reports about it."""

    name: str
    version: str
    run_id: str
    loaded_at: datetime
    profile_id: str | None
    estimator: Predictor
    columns: tuple[int, ...]

    @classmethod
    def build(
        cls,
        *,
        name: str,
        version: str,
        run_id: str,
        loaded_at: datetime,
        profile_id: str | None,
        estimator: Predictor,
    ) -> LoadedModel:
        """Check the estimator against the schema and warm it up (first call is slow)."""
        columns = tuple(column_order(estimator))
        model = cls(
            name=name,
            version=version,
            run_id=run_id,
            loaded_at=loaded_at,
            profile_id=profile_id,
            estimator=estimator,
            columns=columns,
        )
        try:
            model.predict_usd([[EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]])
        except Exception as exc:
            raise ModelLoadError(f"version {version} fails a smoke prediction: {exc}") from exc
        return model

    def predict_usd(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Predictions in USD for rows in API feature order."""
        X = np.asarray(rows, dtype=np.float64)[:, self.columns]
        raw = np.asarray(self.estimator.predict(X), dtype=np.float64).reshape(-1)
        return (raw * TARGET_SCALE_USD).tolist()


class ModelHolder:
    """Holds the current :class:`LoadedModel`; swapping is atomic from a request's view."""

    def __init__(self) -> None:
        self._current: LoadedModel | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def require(self) -> LoadedModel:
        """The current model, or :class:`ModelNotReady` (503) before the first load."""
        model = self._current
        if model is None:
            raise ModelNotReady()
        return model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` from now on; returns the previous one (still used by in-flight work)."""
        previous, self._current = self._current, model
        return previous
