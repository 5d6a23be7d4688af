"""Drift statistics of one window against a model's reference profile (pure numpy, no I/O).

Per series (the eight features and the prediction) a window gets:

- ``psi``: population stability index on the *reference's* quantile bins, from additive bin
  counts (so windows of several partitions or consumer instances merge by adding counts).
  Zero shares are filled exactly as Evidently's ``get_binned_data`` fills them.
- ``ks`` / ``ks_pvalue``: the two-sample Kolmogorov-Smirnov statistic and p-value, equal to
  ``scipy.stats.ks_2samp(reference_sample, window)`` with its default ``method="auto"``
  (exact when both samples have at most 10,000 values, otherwise the asymptotic
  distribution; an exact computation that fails numerically falls back to asymptotic, as
  scipy does). Exact p-values are cached by ``(n1, n2, h)``: with count windows the sizes
  are fixed and the statistic takes few distinct values, so the cache hits almost always.
- ``wasserstein``: ``scipy.stats.wasserstein_distance(reference_sample, window)`` divided by
  ``max(std(reference_sample), 0.001)`` (population std), which is Evidently's
  ``wasserstein`` stattest.

Intentional difference from Evidently: Evidently's PSI bins on the *combined* reference and
current data (Sturges equal-width bins), so its bins move with every window and cannot be
summed across windows; driftloop bins on the reference's fixed deciles. The PSI formula and
zero filling are the same, so on identical bins the values agree (see the agreement tests).

A window "declares drift" when any series has any statistic above its threshold, or the
share of drifted features is above the ``drift_share`` threshold (always ``value > threshold``,
the comparison the alert rules make); see docs/drift.md for how the defaults were calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from typing import Literal, Self, TypeAlias

import numpy as np
from scipy.stats import kstwo

from driftloop_contracts import (
    FEATURE_NAMES,
    PREDICTION_SERIES,
    REFERENCE_SAMPLE_ROWS,
    SERIES_STATISTICS,
    ReferenceProfile,
    SeriesProfile,
    reference_widening,
)
from driftloop_contracts.thresholds import Statistic

#: ``(n1, n2, gcd, d, alternative) -> (success, d, p-value)``: scipy's private exact two-sample
#: KS distribution (compiled); the public API has no equivalent, and scipy-stubs omits it.
_ExactKs: TypeAlias = Callable[[int, int, int, float, str], tuple[bool, float, float]]
_attempt_exact_2kssamp: _ExactKs | None
try:
    _attempt_exact_2kssamp = import_module("scipy.stats._stats_py")._attempt_exact_2kssamp
except (ImportError, AttributeError):  # pragma: no cover - a future scipy moved it: asymptotic
    _attempt_exact_2kssamp = None  # p-values only

#: Informational statistic exported next to the others (no threshold: lower means drift).
KS_PVALUE = "ks_pvalue"
#: scipy's ``ks_2samp`` switches from exact to asymptotic above this sample size.
KS_MAX_EXACT_N = 10_000
#: Evidently's floor for the reference std in the normalised Wasserstein distance.
WASSERSTEIN_MIN_NORM = 0.001

KsMethod = Literal["auto", "exact", "asymp"]
#: ``(statistic, series) -> threshold``; supplied by :class:`driftloop_contracts.thresholds.ThresholdSet`.
ThresholdLookup = Callable[[str, str], float]


@dataclass(frozen=True)
class SeriesReference:
    """One series of a reference profile, prepared for fast comparison."""

    name: str
    edges: np.ndarray
    fractions: np.ndarray
    sample: np.ndarray
    wasserstein_norm: float

    @classmethod
    def from_profile(cls, name: str, profile: SeriesProfile) -> SeriesReference:
        edges = np.asarray(profile.bin_edges, dtype="float64")
        fractions = np.asarray(profile.bin_fractions, dtype="float64")
        sample = np.sort(np.asarray(profile.sample, dtype="float64"))
        if len(fractions) != len(edges) + 1:
            raise ValueError(
                f"profile series {name!r}: {len(fractions)} bin fractions for "
                f"{len(edges)} inner edges (expected {len(edges) + 1})"
            )
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"profile series {name!r}: bin edges are not strictly increasing")
        if len(sample) == 0 or not np.isfinite(sample).all():
            raise ValueError(f"profile series {name!r}: sample is empty or not finite")
        spread = profile.scale if profile.scale is not None else float(np.std(sample))
        norm = max(spread, WASSERSTEIN_MIN_NORM)
        return cls(name, edges, fractions, sample, norm)


@dataclass(frozen=True)
class CompiledReference:
    """A model version's reference profile as padded numpy arrays, built once per switch.

    Bins are padded to the widest series; padded edges are ``+inf`` (no value falls past them)
    and ``bin_mask`` marks the real bins so padding never enters a PSI sum.
    """

    model_version: str
    profile_id: str
    series: tuple[SeriesReference, ...]
    padded_edges: np.ndarray = field(repr=False)
    ref_fractions: np.ndarray = field(repr=False)
    bin_mask: np.ndarray = field(repr=False)

    @classmethod
    def from_profile(cls, profile: ReferenceProfile, model_version: str) -> CompiledReference:
        missing = [name for name in FEATURE_NAMES if name not in profile.features]
        if missing:
            raise ValueError(f"reference profile lacks features {missing}")
        series = (
            *(SeriesReference.from_profile(n, profile.features[n]) for n in FEATURE_NAMES),
            SeriesReference.from_profile(PREDICTION_SERIES, profile.prediction),
        )
        n_bins = max(len(s.fractions) for s in series)
        edges = np.full((len(series), n_bins - 1), np.inf)
        fractions = np.zeros((len(series), n_bins))
        mask = np.zeros((len(series), n_bins), dtype=bool)
        for i, s in enumerate(series):
            edges[i, : len(s.edges)] = s.edges
            fractions[i, : len(s.fractions)] = s.fractions
            mask[i, : len(s.fractions)] = True
        return cls(model_version, profile.profile_id, series, edges, fractions, mask)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.series)

    @property
    def n_bins(self) -> int:
        return int(self.bin_mask.shape[1])

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """Bin of every value of a ``(rows, series)`` matrix, same shape.

        A value's bin is the number of inner edges strictly below it, i.e.
        ``searchsorted(edges, x, side="left")``: bins are ``(-inf, e0], (e0, e1], ...``,
        the convention the training package's profile uses.
        """
        values = np.asarray(values, dtype="float64")
        n_series = len(self.series)
        if values.ndim != 2 or values.shape[1] != n_series:
            raise ValueError(f"expected a (rows, {n_series}) matrix, got {values.shape}")
        return (values[:, :, None] > self.padded_edges[None, :, :]).sum(axis=2)

    def counts_from_index(self, idx: np.ndarray) -> np.ndarray:
        """Additive counts per series and bin, shape ``(series, bins)``, of a bin-index matrix."""
        n_series = len(self.series)
        flat = idx + np.arange(n_series)[None, :] * self.n_bins
        counts = np.bincount(flat.ravel(), minlength=n_series * self.n_bins)
        return counts.reshape(n_series, self.n_bins)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts per series and bin, shape ``(series, bins)``, of a ``(rows, series)`` matrix."""
        return self.counts_from_index(self.bin_index(values))


# --- PSI -----------------------------------------------------------------------------------


def _fill_zeros(fractions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Evidently's zero filling, row by row: zeros become 0.0001, or min-nonzero / 1e6 when the
    smallest non-zero share is itself at most 0.0001."""
    real_nonzero = mask & (fractions != 0)
    min_nonzero = np.where(real_nonzero, fractions, np.inf).min(axis=-1, keepdims=True)
    fill = np.where(min_nonzero <= 0.0001, min_nonzero / 10**6, 0.0001)
    return np.where(mask & (fractions == 0), fill, fractions)


def psi_from_fractions(
    ref_fractions: np.ndarray, cur_fractions: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """PSI per row of ``(series, bins)`` share matrices (1-D input gives a scalar array).

    ``sum((ref - cur) * ln(ref / cur))`` over the real bins, with zero shares filled first.
    """
    ref = np.atleast_2d(np.asarray(ref_fractions, dtype="float64"))
    cur = np.atleast_2d(np.asarray(cur_fractions, dtype="float64"))
    mask = np.ones_like(ref, dtype=bool) if mask is None else np.atleast_2d(mask)
    ref_f = _fill_zeros(ref, mask)
    cur_f = _fill_zeros(cur, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (ref_f - cur_f) * np.log(ref_f / cur_f)
    result = np.where(mask, terms, 0.0).sum(axis=-1)
    return result if np.ndim(ref_fractions) > 1 else result.reshape(())


# --- KS and Wasserstein -------------------------------------------------------------------


@lru_cache(maxsize=65_536)
def _exact_ks_probability(n1: int, n2: int, h: int) -> float | None:
    """P(D >= h / lcm) for two-sided KS, scipy's exact algorithm; None when it fails."""
    if _attempt_exact_2kssamp is None:
        return None
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    success, _, prob = _attempt_exact_2kssamp(n1, n2, g, h / lcm, "two-sided")
    return float(prob) if success else None


def ks_pvalue(d: float, n1: int, n2: int, method: KsMethod = "auto") -> tuple[float, float]:
    """``(statistic, p-value)`` exactly as ``scipy.stats.ks_2samp`` computes them from ``d``.

    In exact mode scipy reports the statistic rounded to the lattice ``h / lcm(n1, n2)``; this
    does the same so both numbers match.
    """
    if method == "auto":
        method = "exact" if max(n1, n2) <= KS_MAX_EXACT_N else "asymp"
    if method == "exact":
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(np.round(d * lcm))
        d = h / lcm
        if h == 0:
            return d, 1.0
        prob = _exact_ks_probability(n1, n2, h)
        if prob is not None and 0.0 <= prob <= 1.0:
            return d, prob
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    prob = float(kstwo.sf(d, np.round(en)))
    return d, float(np.clip(prob, 0.0, 1.0))


def ks_and_wasserstein(ref_sorted: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Raw KS statistic and (unnormalised) Wasserstein-1 distance from one merge.

    Both empirical CDFs are evaluated with ``searchsorted(..., side="right")`` at every value of
    the merged sample, which is how scipy computes each; ties therefore behave identically.
    """
    cur_sorted = np.sort(cur)
    merged = np.concatenate((ref_sorted, cur_sorted))
    merged.sort(kind="mergesort")
    cdf_ref = np.searchsorted(ref_sorted, merged, side="right") / ref_sorted.size
    cdf_cur = np.searchsorted(cur_sorted, merged, side="right") / cur_sorted.size
    diff = cdf_ref - cdf_cur
    max_s = float(diff.max())
    min_s = float(np.clip(-diff.min(), 0.0, 1.0))
    d = max(max_s, min_s)
    w = float(np.dot(np.abs(diff[:-1]), np.diff(merged)))
    return d, w


# --- One window ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowStatistics:
    """Every statistic of one window, one array entry per series of ``names``."""

    model_version: str
    names: tuple[str, ...]
    n: int
    psi: np.ndarray
    ks: np.ndarray
    ks_pvalue: np.ndarray
    wasserstein: np.ndarray

    def by_statistic(self) -> dict[str, np.ndarray]:
        return {
            "psi": self.psi,
            "ks": self.ks,
            KS_PVALUE: self.ks_pvalue,
            "wasserstein": self.wasserstein,
        }

    def values(self) -> list[tuple[str, str, float]]:
        """``(series, statistic, value)`` triples, for sinks."""
        return [
            (name, stat, float(arr[i]))
            for stat, arr in self.by_statistic().items()
            for i, name in enumerate(self.names)
        ]


def compute_statistics(
    reference: CompiledReference,
    values: np.ndarray,
    counts: np.ndarray | None = None,
    *,
    ks_method: KsMethod = "auto",
) -> WindowStatistics:
    """Statistics of a ``(rows, series)`` window against ``reference``.

    ``counts`` are the window's additive bin counts when the caller kept them while the window
    filled; they are recomputed from ``values`` otherwise.
    """
    values = np.asarray(values, dtype="float64")
    n = values.shape[0]
    if n == 0:
        raise ValueError("cannot compute drift statistics of an empty window")
    if counts is None:
        counts = reference.bin_counts(values)
    cur_fractions = counts / n
    psi = psi_from_fractions(reference.ref_fractions, cur_fractions, reference.bin_mask)
    n_series = len(reference.series)
    ks = np.empty(n_series)
    pvalues = np.empty(n_series)
    wasserstein = np.empty(n_series)
    for i, series in enumerate(reference.series):
        d, w = ks_and_wasserstein(series.sample, values[:, i])
        ks[i], pvalues[i] = ks_pvalue(d, series.sample.size, n, ks_method)
        wasserstein[i] = w / series.wasserstein_norm
    return WindowStatistics(
        reference.model_version, reference.names, n, psi, ks, pvalues, wasserstein
    )


@dataclass(frozen=True)
class DriftDecision:
    """Which series crossed which threshold, and the dataset-level verdict."""

    crossed: dict[str, tuple[Statistic, ...]]
    drift_share: float
    drift_share_threshold: float

    @property
    def drifted_series(self) -> tuple[str, ...]:
        return tuple(name for name, stats in self.crossed.items() if stats)

    @property
    def dataset_drift(self) -> bool:
        return self.drift_share > self.drift_share_threshold

    @property
    def any_drift(self) -> bool:
        """What an alert rule comparing every gauge with its threshold would see."""
        return bool(self.drifted_series) or self.dataset_drift


@dataclass(frozen=True)
class ReferenceThresholds:
    """The configured thresholds as applied against one reference: widened where its sample is
    smaller than the calibration's (:func:`driftloop_contracts.thresholds.reference_widening`).

    The alert rules compare with the exported ``driftloop_drift_threshold`` gauges, so the
    consumer exports these applied values and decides with them too.
    """

    configured: ThresholdLookup
    #: Sample rows per series of the reference (absent: a full-size sample).
    rows: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, configured: ThresholdLookup, reference: CompiledReference | None) -> Self:
        rows = {s.name: int(s.sample.size) for s in reference.series} if reference else {}
        return cls(configured, rows)

    def widening(self, statistic: str, series: str) -> float:
        return reference_widening(statistic, self.rows.get(series, REFERENCE_SAMPLE_ROWS))

    def __call__(self, statistic: str, series: str) -> float:
        return self.configured(statistic, series) * self.widening(statistic, series)


def decide(stats: WindowStatistics, threshold: ThresholdLookup) -> DriftDecision:
    """Compare a window's statistics with the effective thresholds (value > threshold).

    ``drift_share`` is the share of the eight *features* that crossed any threshold (the
    prediction is reported but is not part of the dataset share, as it is not an input).
    """
    table = stats.by_statistic()
    crossed = {
        name: tuple(stat for stat in SERIES_STATISTICS if table[stat][i] > threshold(stat, name))
        for i, name in enumerate(stats.names)
    }
    features = [name for name in stats.names if name != PREDICTION_SERIES]
    share = sum(1 for name in features if crossed[name]) / max(len(features), 1)
    return DriftDecision(crossed, share, threshold("drift_share", ""))
