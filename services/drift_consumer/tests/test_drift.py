"""drift.py: agreement with scipy and Evidently 0.7.23, bins, thresholds, decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from driftloop_contracts import FEATURE_NAMES, SERIES_NAMES
from driftloop_contracts.thresholds import ThresholdSet
from driftloop_drift_consumer.drift import (
    compute_statistics,
    decide,
    ks_and_wasserstein,
    ks_pvalue,
    psi_from_fractions,
)
from driftloop_training.profile import bin_fractions

from .conftest import ReferenceData, matrix, synthetic_frame

TOL = 1e-9


def windows(reference: ReferenceData, sizes: tuple[int, ...], shift: float = 0.0):
    rng = np.random.default_rng(123)
    for n in sizes:
        frame, prediction = synthetic_frame(rng, n)
        frame["median_income_in_block"] *= 1.0 + shift
        yield n, matrix(frame, prediction)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_ks_and_wasserstein_equal_scipy(reference: ReferenceData, shift: float) -> None:
    for n, values in windows(reference, (50, 200, 1000, 5000, 777), shift):
        st = compute_statistics(reference.compiled, values)
        for i, series in enumerate(reference.compiled.series):
            expected = stats.ks_2samp(series.sample, values[:, i])
            assert st.ks[i] == pytest.approx(expected.statistic, abs=TOL), (n, series.name)
            assert st.ks_pvalue[i] == pytest.approx(expected.pvalue, abs=TOL), (n, series.name)
            w = stats.wasserstein_distance(series.sample, values[:, i])
            assert st.wasserstein[i] == pytest.approx(
                w / max(np.std(series.sample), 0.001), rel=TOL, abs=TOL
            )


def test_ks_pvalue_follows_scipy_auto_method_above_10000() -> None:
    """Above 10,000 values scipy switches to the asymptotic distribution; so do we."""
    rng = np.random.default_rng(5)
    ref = np.sort(rng.normal(size=12_000))
    cur = rng.normal(0.05, 1, 300)
    d, _ = ks_and_wasserstein(ref, cur)
    expected = stats.ks_2samp(ref, cur)
    assert ks_pvalue(d, ref.size, cur.size) == pytest.approx(
        (expected.statistic, expected.pvalue), abs=TOL
    )


def test_ks_with_heavy_ties_equals_scipy() -> None:
    rng = np.random.default_rng(9)
    ref = np.sort(rng.integers(0, 5, 5000).astype(float))
    cur = rng.integers(0, 6, 200).astype(float)
    d, w = ks_and_wasserstein(ref, cur)
    expected = stats.ks_2samp(ref, cur)
    assert ks_pvalue(d, ref.size, cur.size) == pytest.approx(
        (expected.statistic, expected.pvalue), abs=TOL
    )
    assert w == pytest.approx(stats.wasserstein_distance(ref, cur), rel=TOL)


def test_bin_counts_use_the_profile_convention(reference: ReferenceData) -> None:
    """Counting the reference itself gives back the profile's fractions exactly."""
    counts = reference.compiled.bin_counts(reference.values)
    for i in range(len(SERIES_NAMES)):
        s = reference.compiled.series[i]
        n_real = len(s.fractions)
        assert counts[i, n_real:].sum() == 0
        data = reference.values[:, i]
        np.testing.assert_allclose(counts[i, :n_real] / len(data), s.fractions, atol=1e-12)
        np.testing.assert_allclose(bin_fractions(data, s.edges), s.fractions, atol=1e-12)
    # a value equal to an edge falls in the bin the edge closes: (e_{i-1}, e_i]
    s0 = reference.compiled.series[0]
    row = np.tile(reference.values[:1], (1, 1))
    row[0, 0] = s0.edges[2]
    assert reference.compiled.bin_index(row)[0, 0] == 2


def test_tied_feature_has_fewer_bins_and_padding_never_counts(reference: ReferenceData) -> None:
    age = SERIES_NAMES.index("median_house_age_in_block")
    n_real = len(reference.compiled.series[age].fractions)
    assert reference.compiled.bin_mask[age].sum() == n_real
    # identical distribution -> PSI ~ 0 even with padded bins in the matrix
    psi = psi_from_fractions(
        reference.compiled.ref_fractions,
        reference.compiled.ref_fractions,
        reference.compiled.bin_mask,
    )
    np.testing.assert_allclose(psi, 0.0, atol=1e-15)


def _evidently_binned(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's bins for PSI (Sturges on the combined data), before zero filling."""
    from evidently.legacy.calculations.stattests.utils import get_binned_data
    from evidently.legacy.core import ColumnType

    return get_binned_data(ref, cur, ColumnType.Numerical, 10, feel_zeroes=False)


def test_psi_formula_equals_evidentlys_on_the_same_bins(reference: ReferenceData) -> None:
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    for _, values in windows(reference, (200, 1000), shift=0.2):
        for i, series in enumerate(reference.compiled.series):
            ref = pd.Series(series.sample)
            cur = pd.Series(values[:, i])
            ref_p, cur_p = _evidently_binned(ref, cur)
            expected, _ = _psi(ref, cur, ColumnType.Numerical, 0.1)
            assert float(psi_from_fractions(ref_p, cur_p)) == pytest.approx(
                expected, rel=TOL, abs=TOL
            )


def test_psi_zero_filling_matches_evidently() -> None:
    """Empty bins are filled as Evidently fills them (0.0001, or min/1e6 when tiny)."""
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(3)
    ref = pd.Series(np.concatenate([rng.normal(0, 1, 20_000), [40.0]]))  # one far outlier
    cur = pd.Series(rng.normal(3, 0.2, 200))  # leaves most bins empty
    ref_p, cur_p = _evidently_binned(ref, cur)
    assert (cur_p == 0).any() and (ref_p[ref_p > 0].min() <= 0.0001)
    expected, _ = _psi(ref, cur, ColumnType.Numerical, 0.1)
    assert float(psi_from_fractions(ref_p, cur_p)) == pytest.approx(expected, rel=TOL)


@pytest.mark.parametrize("method", ["ks", "wasserstein", "psi"])
def test_agreement_with_an_evidently_report(reference: ReferenceData, method: str) -> None:
    """Evidently's ``Report([DataDriftPreset(method=...)])`` on the reference sample vs a
    window: KS p-values and normalised Wasserstein agree within 1e-9. PSI is the documented
    exception: Evidently bins on the combined data, we bin on the reference deciles, so the
    values differ (they agree when the same bins are used, tested above)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    _, values = next(iter(windows(reference, (200,), shift=0.4)))
    ref_frame = pd.DataFrame({s.name: s.sample for s in reference.compiled.series})
    cur_frame = pd.DataFrame(values, columns=list(SERIES_NAMES))
    snapshot = Report([DataDriftPreset(method=method)]).run(cur_frame, ref_frame)
    got = {}
    for metric in snapshot.dict()["metrics"]:
        column = metric.get("config", {}).get("column")
        if column is not None:
            got[column] = float(metric["value"])
    assert set(got) == set(SERIES_NAMES)
    ours = compute_statistics(reference.compiled, values)
    table = {"ks": ours.ks_pvalue, "wasserstein": ours.wasserstein, "psi": ours.psi}[method]
    for i, name in enumerate(SERIES_NAMES):
        if method == "psi":
            # same formula, different bins: both see the shifted income, neither is ~0 there
            if name == "median_income_in_block":
                assert got[name] > 0.1 and table[i] > 0.1
            continue
        assert table[i] == pytest.approx(got[name], rel=TOL, abs=TOL), name


def test_decide_uses_greater_than_and_per_feature_overrides(reference: ReferenceData) -> None:
    _, values = next(iter(windows(reference, (200,), shift=0.5)))
    st = compute_statistics(reference.compiled, values)
    income = SERIES_NAMES.index("median_income_in_block")
    loose = ThresholdSet({"psi": 100.0, "ks": 100.0, "wasserstein": 100.0})
    assert not decide(st, loose).any_drift
    exact = ThresholdSet({**loose.overrides, "ks:median_income_in_block": float(st.ks[income])})
    assert not decide(st, exact).any_drift  # equal is not over
    tight = ThresholdSet({**loose.overrides, "ks:median_income_in_block": 0.0})
    decision = decide(st, tight)
    assert decision.crossed["median_income_in_block"] == ("ks",)
    assert decision.drifted_series == ("median_income_in_block",)
    assert decision.drift_share == pytest.approx(1 / len(FEATURE_NAMES))
    assert decision.any_drift and not decision.dataset_drift
    # the prediction may drift without counting in the dataset share
    pred = ThresholdSet({**loose.overrides, "psi:prediction": 0.0})
    d2 = decide(st, pred)
    assert d2.drifted_series == ("prediction",) and d2.drift_share == 0.0


def test_statistics_are_large_for_a_shift_and_small_without(reference: ReferenceData) -> None:
    ((_, same),) = windows(reference, (1000,), shift=0.0)
    ((_, moved),) = windows(reference, (1000,), shift=0.5)
    income = SERIES_NAMES.index("median_income_in_block")
    a = compute_statistics(reference.compiled, same)
    b = compute_statistics(reference.compiled, moved)
    assert b.psi[income] > 5 * a.psi[income]
    assert b.ks[income] > 0.2 > a.ks[income]
    assert b.ks_pvalue[income] < 1e-10


def test_empty_window_is_refused(reference: ReferenceData) -> None:
    with pytest.raises(ValueError, match="empty window"):
        compute_statistics(reference.compiled, np.empty((0, len(SERIES_NAMES))))


def test_reference_thresholds_widen_only_a_small_sample(reference: ReferenceData) -> None:
    from driftloop_contracts import reference_widening
    from driftloop_drift_consumer.drift import ReferenceThresholds

    from .conftest import make_reference

    configured = ThresholdSet()
    full = ReferenceThresholds.of(configured, reference.compiled)  # 16,000 rows: 5,000 sampled
    small = ReferenceThresholds.of(configured, make_reference(n=300).compiled)
    for name in SERIES_NAMES:
        for stat in ("psi", "ks", "wasserstein"):
            assert full(stat, name) == configured(stat, name)
            assert small(stat, name) == pytest.approx(
                configured(stat, name) * reference_widening(stat, 300)
            )
            assert small(stat, name) > configured(stat, name)
    assert small("drift_share", "") == configured("drift_share", "")
    assert ReferenceThresholds.of(configured, None)("ks", "prediction") == configured(
        "ks", "prediction"
    )


def test_the_profiles_scale_divides_the_wasserstein_distance(reference: ReferenceData) -> None:
    """A profile with ``scale`` (a regime's few rows, scaled by its training frame): the
    normalised Wasserstein distance uses it instead of the sample's own spread."""
    from driftloop_drift_consumer.drift import CompiledReference

    features = {
        name: series.model_copy(update={"scale": 2 * reference.compiled.series[i].wasserstein_norm})
        for i, (name, series) in enumerate(reference.profile.features.items())
    }
    scaled = CompiledReference.from_profile(
        reference.profile.model_copy(update={"features": features}), "1"
    )
    _, window = next(windows(reference, (500,), shift=0.3))
    plain_w = compute_statistics(reference.compiled, window).wasserstein
    scaled_w = compute_statistics(scaled, window).wasserstein
    n = len(FEATURE_NAMES)
    assert scaled_w[:n] == pytest.approx(plain_w[:n] / 2)
    assert scaled_w[n] == pytest.approx(plain_w[n])  # the prediction kept its own spread
