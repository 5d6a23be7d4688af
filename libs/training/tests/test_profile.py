"""Reference profiles: decile bins that match the data, stable content ids, bounded samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import FEATURE_NAMES
from driftloop_training.errors import DataError
from driftloop_training.profile import bin_fractions, compute_profile, series_profile


def test_continuous_series_gets_ten_equal_bins() -> None:
    values = np.random.default_rng(0).normal(size=20_000)
    p = series_profile(values)
    assert len(p.bin_edges) == 9 and len(p.bin_fractions) == 10
    assert p.bin_fractions == pytest.approx([0.1] * 10, abs=1e-3)
    assert p.quantiles["p50"] == pytest.approx(np.median(values))
    assert p.count == 20_000 and len(p.sample) == 5000
    assert p.sample == sorted(p.sample)
    assert p.sample[0] == values.min() and p.sample[-1] == values.max()


def test_bins_are_right_closed() -> None:
    edges = np.array([1.0, 2.0])
    # (-inf, 1], (1, 2], (2, inf)
    assert list(bin_fractions(np.array([1.0, 1.5, 2.0, 2.5]), edges)) == [0.25, 0.5, 0.25]


def test_tied_values_collapse_edges() -> None:
    values = np.array([52.0] * 900 + list(range(100)), dtype=float)
    p = series_profile(values)
    assert len(p.bin_edges) == len(set(p.bin_edges)) < 9
    assert sum(p.bin_fractions) == pytest.approx(1.0)


def test_small_series_keeps_every_value() -> None:
    p = series_profile(np.array([3.0, 1.0, 2.0]))
    assert p.sample == [1.0, 2.0, 3.0]


def test_non_finite_series_is_refused() -> None:
    with pytest.raises(DataError):
        series_profile(np.array([1.0, np.nan]))


def test_profile_bins_match_training_data(base_data: pd.DataFrame) -> None:
    frame = base_data.head(4000)
    preds = frame["median_income_in_block"].to_numpy() * 40_000
    profile = compute_profile(frame, preds)
    assert set(profile.features) == set(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        series = profile.features[name]
        expected = bin_fractions(frame[name].to_numpy(), np.array(series.bin_edges))
        assert series.bin_fractions == pytest.approx(list(expected))
        assert series.count == 4000
    assert profile.prediction.mean == pytest.approx(preds.mean())
    assert profile.n_rows == 4000


def test_profile_id_depends_on_content_only(base_data: pd.DataFrame) -> None:
    frame = base_data.head(500)
    preds = np.arange(500, dtype=float)
    a = compute_profile(frame, preds)
    b = compute_profile(frame, preds)
    c = compute_profile(frame, preds + 1)
    assert a.profile_id == b.profile_id != c.profile_id
    assert len(a.profile_id) == 64


def test_a_few_rows_take_their_wasserstein_scale_from_the_training_frame(
    base_data: pd.DataFrame,
) -> None:
    """A regime's profile describes its few rows, but the spread its Wasserstein distance is
    divided by comes from the whole training frame (features and the model's predictions)."""
    few, whole = base_data.head(300), base_data
    preds_few = few["median_income_in_block"].to_numpy() * 40_000
    preds_whole = whole["median_income_in_block"].to_numpy() * 40_000
    plain = compute_profile(few, preds_few)
    scaled = compute_profile(few, preds_few, scale_from=(whole, preds_whole))
    for name in FEATURE_NAMES:
        assert plain.features[name].scale is None
        assert scaled.features[name].scale == pytest.approx(float(whole[name].std(ddof=0)))
        assert scaled.features[name].sample == plain.features[name].sample  # still the few rows
    assert scaled.prediction.scale == pytest.approx(float(preds_whole.std()))
    assert scaled.profile_id != plain.profile_id
    with pytest.raises(DataError):
        compute_profile(few, preds_few, scale_from=(whole, preds_whole * np.nan))
