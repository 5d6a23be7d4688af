"""Reference profiles: the drift baseline computed from a model's own training data.

A profile holds, for each feature and for the model's prediction (USD), the summary statistics,
named quantiles, quantile-bin edges with the reference share per bin (for PSI), and a sorted
sample (for KS and Wasserstein). It is logged next to the model, so the drift consumer always
compares live traffic with the data the serving model actually learned from.

Bin convention (the drift consumer must count the same way): the inner edges are the deciles of
the reference, de-duplicated, and the bins are ``(-inf, e0], (e0, e1], ..., (e_last, inf)``;
``numpy.searchsorted(edges, x, side="left")`` gives a value's bin index. Features with heavy
ties (e.g. a capped house age) can therefore have fewer than ten bins.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from driftloop_contracts import (
    FEATURE_NAMES,
    REFERENCE_SAMPLE_ROWS,
    ReferenceProfile,
    SeriesProfile,
)

from .errors import DataError

N_BINS = 10
SAMPLE_SIZE = REFERENCE_SAMPLE_ROWS
QUANTILES: dict[str, float] = {
    "p01": 0.01,
    "p05": 0.05,
    "p10": 0.10,
    "p25": 0.25,
    "p50": 0.50,
    "p75": 0.75,
    "p90": 0.90,
    "p95": 0.95,
    "p99": 0.99,
}


def bin_edges(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Inner quantile edges (deciles for ten bins), with ties collapsed."""
    levels = np.arange(1, n_bins) / n_bins
    return np.unique(np.quantile(values, levels))


def bin_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    idx = np.searchsorted(edges, values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def sorted_sample(values: np.ndarray, size: int = SAMPLE_SIZE) -> np.ndarray:
    """Up to ``size`` order statistics spread evenly over the sorted values.

    Evenly spaced order statistics follow the empirical distribution without the noise of a
    random draw, and they are deterministic, so the profile (and its id) is reproducible.
    """
    ordered = np.sort(values)
    if len(ordered) <= size:
        return ordered
    positions = np.linspace(0, len(ordered) - 1, size).round().astype(int)
    return ordered[positions]


def series_profile(
    values: np.ndarray | pd.Series,
    *,
    n_bins: int = N_BINS,
    sample_size: int = SAMPLE_SIZE,
    scale_from: np.ndarray | pd.Series | None = None,
) -> SeriesProfile:
    """Profile one numeric series; ``scale_from``: a larger sample of the same quantity whose
    standard deviation the Wasserstein distance is divided by (see ``SeriesProfile.scale``)."""
    arr = np.asarray(values, dtype="float64")
    if arr.ndim != 1 or len(arr) == 0:
        raise DataError("cannot profile an empty series")
    if not np.isfinite(arr).all():
        raise DataError("cannot profile a series with NaN or infinite values")
    edges = bin_edges(arr, n_bins)
    quantiles = np.quantile(arr, list(QUANTILES.values()))
    return SeriesProfile(
        count=len(arr),
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        min=float(arr.min()),
        max=float(arr.max()),
        quantiles={k: float(v) for k, v in zip(QUANTILES, quantiles, strict=True)},
        bin_edges=[float(e) for e in edges],
        bin_fractions=[float(f) for f in bin_fractions(arr, edges)],
        sample=[float(v) for v in sorted_sample(arr, sample_size)],
        scale=None if scale_from is None else _scale(scale_from),
    )


def _scale(values: np.ndarray | pd.Series) -> float:
    arr = np.asarray(values, dtype="float64")
    if arr.ndim != 1 or len(arr) == 0 or not np.isfinite(arr).all():
        raise DataError("the scale of a profile needs a non-empty, finite series")
    return float(arr.std())


def _content_hash(payload: dict[str, object]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def compute_profile(
    features: pd.DataFrame,
    predictions_usd: np.ndarray,
    *,
    created_at: datetime | None = None,
    n_bins: int = N_BINS,
    sample_size: int = SAMPLE_SIZE,
    scale_from: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> ReferenceProfile:
    """Profile of a model's training features and of its predictions (USD) on them.

    ``scale_from`` (features, predictions of the model's whole training frame): when the
    profiled rows are few (a regime's post-incident rows), the spread the Wasserstein distance
    is divided by comes from these instead: the few rows' own standard deviation depends on
    which rare extremes they happen to hold, and so would every window's distance.

    ``profile_id`` is a hash of the content (not of ``created_at``), so the same data always
    gets the same id and a consumer can tell whether a switch actually changed its baseline.
    """
    missing = [c for c in FEATURE_NAMES if c not in features.columns]
    if missing:
        raise DataError(f"cannot profile: frame lacks feature columns {missing}")
    preds = np.asarray(predictions_usd, dtype="float64")
    if len(preds) != len(features):
        raise DataError(f"{len(preds)} predictions for {len(features)} feature rows")
    wide_features, wide_preds = scale_from if scale_from is not None else (None, None)
    series = {
        name: series_profile(
            features[name].to_numpy(),
            n_bins=n_bins,
            sample_size=sample_size,
            scale_from=None if wide_features is None else wide_features[name].to_numpy(),
        )
        for name in FEATURE_NAMES
    }
    prediction = series_profile(
        preds, n_bins=n_bins, sample_size=sample_size, scale_from=wide_preds
    )
    content = {
        "n_rows": len(features),
        "features": {k: v.model_dump() for k, v in series.items()},
        "prediction": prediction.model_dump(),
    }
    return ReferenceProfile(
        profile_id=_content_hash(content),
        created_at=(created_at or datetime.now(UTC)).isoformat(),
        n_rows=len(features),
        features=series,
        prediction=prediction,
    )
