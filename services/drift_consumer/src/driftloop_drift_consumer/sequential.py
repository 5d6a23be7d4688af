"""Sequential drift detection on the binned stream: one-sided CUSUMs per series and direction.

Why: a windowed statistic decides once per window, so its delay grows with the window, and
with per-partition windows with the number of partitions too. A CUSUM decides after every
event, on the merged stream of every partition the consumer owns. Requests are keyed by a
random ``request_id``, so the order in which a fetch interleaves partitions does not change
the distribution of what the detector sees: its delay is the same at 1, 4 or 8 partitions.

Design (Page's CUSUM against a shift of known size, on the reference's fixed bins): for each
series ``s`` (the eight features and the prediction) and direction ``d`` in ``(+, -)`` the
alternative is the reference moved by ``d * shift_sd * sd(s)``. Per reference bin ``j``,
``llr[s, d, j] = ln(q_j / p_j)``, with ``p`` and ``q`` the bin shares of the profile's sample
and of the same sample shifted (counts + 0.5, so an empty bin keeps a finite ratio). Each
event moves ``S[s, d] = max(0, S[s, d] + llr[s, d, bin])``; the detector is in alarm while any
``S`` is above ``h``. Under the reference ``E[llr] = -KL(p || q) < 0`` (``S`` stays near 0);
after a shift of about ``shift_sd`` it climbs by ``KL(q || p)`` per event. Only bin indices
are needed, so it costs a table look-up and a cumulative sum per event and series.

Calibration (:func:`calibrate_threshold`): ``h`` is the smallest threshold whose expected
run length (ERT) between false alarms under the reference is at least ``ert`` events. It is
estimated by Monte Carlo from the profile's bin shares: ``paths`` streams of ``3 * ert``
events, series drawn independently; the run length of each stream is the first event at
which the maximum over the 18 CUSUMs exceeds ``h``, and the ERT is the exponential
maximum-likelihood estimate from those (censored) run lengths. Real series are correlated
(income and the prediction move together), and correlated CUSUMs alarm together, so on
traffic from the reference distribution the real ERT is at least the estimate; traffic that
differs from the profile without drifting (unseen rows with rarer extremes) lowers it, which
``bench/bench_drift.py sequential`` measures on the holdout split. See docs/drift.md.

Alert level (:func:`with_alert_threshold`): the threshold above is an alarm every
``ert`` events, too often to start a retrain. The retraining alert ``SequentialDriftHigh``
compares the same statistic with a higher level, for an ERT of ``alert_ert`` events
(:data:`driftloop_contracts.thresholds.SEQUENTIAL_ALERT_ERT_EVENTS`), too long to simulate at
each switch. Page's CUSUM of increments ``X`` has ``ERT ~ A * exp(theta * h)``, ``theta`` the
root of ``E[exp(theta * X)] = 1`` (the Cramer-Lundberg exponent); for the exact ratio under
its own null ``theta = 1``, so ``h + ln(alert_ert / ert)`` multiplies the ERT by the ratio.
Real traffic is not the reference's bin shares but its population, which a reference of
``n`` rows pins down only to ``1/sqrt(n)`` (a retrained champion's reference is a few hundred
rows of its regime): tilted against a CUSUM by ``SEQUENTIAL_ALERT_REFERENCE_SE`` standard
errors its ``theta`` drops below 1 and the ERT grows more slowly with ``h``. So the level is
``(h + ln(alert_ert / ert)) / theta_min``, ``theta_min`` the smallest exponent over the 18
CUSUMs under that tilt (at most 1). Dividing by ``theta`` is conservative: the CUSUM of ``X``
at ``h / theta`` is the CUSUM of ``theta * X`` at ``h``, and ``theta * X`` is an exact
log-likelihood ratio whose null drifts down more slowly than the reference's, so its ERT at
``h`` is at least the reference's. Tested by simulation in ``test_sequential.py``.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, replace

import numpy as np

from driftloop_contracts.thresholds import (
    SEQUENTIAL_ALERT_ERT_EVENTS,
    SEQUENTIAL_ALERT_REFERENCE_SE,
)

from .drift import CompiledReference

#: Directions of the alternatives, in the order of the second axis of :attr:`CusumDesign.llr`.
DIRECTIONS = (1.0, -1.0)


@dataclass(frozen=True)
class CusumDesign:
    """Log-likelihood ratios per (series, direction, bin) and the alarm threshold."""

    names: tuple[str, ...]
    #: ``(series, 2, bins)``; padded bins (never hit) are 0.
    llr: np.ndarray
    #: Bin shares of the reference per series, ``(series, bins)``, for calibration.
    shares: np.ndarray
    shift_sd: float
    threshold: float = math.inf
    #: The ERT the threshold was calibrated for (0: not calibrated).
    ert: float = 0.0
    #: Rows of the reference's sample per series (how well it knows its population).
    rows: tuple[int, ...] = ()
    #: The retraining alert's level (:func:`with_alert_threshold`; inf: no alert), the ERT
    #: it is set for and the exponent it was derived with.
    alert_threshold: float = math.inf
    alert_ert: float = 0.0
    alert_exponent: float = 0.0

    @classmethod
    def from_reference(cls, reference: CompiledReference, shift_sd: float) -> CusumDesign:
        """The ratios for a shift of ``shift_sd`` standard deviations, uncalibrated."""
        if shift_sd <= 0:
            raise ValueError("shift_sd must be positive")
        n_series, n_bins = len(reference.series), reference.n_bins
        llr = np.zeros((n_series, len(DIRECTIONS), n_bins))
        for i, series in enumerate(reference.series):
            k = len(series.fractions)
            sample = series.sample
            sd = float(np.std(sample)) or 1.0
            base = _bin_counts(series.edges, sample, k) + 0.5
            for j, sign in enumerate(DIRECTIONS):
                moved = _bin_counts(series.edges, sample + sign * shift_sd * sd, k) + 0.5
                llr[i, j, :k] = np.log((moved / moved.sum()) / (base / base.sum()))
        shares = np.where(reference.bin_mask, reference.ref_fractions, 0.0)
        shares = shares / shares.sum(axis=1, keepdims=True)
        rows = tuple(int(series.sample.size) for series in reference.series)
        return cls(reference.names, llr, shares, shift_sd, rows=rows)

    def calibrated(self, threshold: float, ert: float) -> CusumDesign:
        return replace(self, threshold=threshold, ert=ert)

    def increments(self, bin_index: np.ndarray) -> np.ndarray:
        """``(events, series, 2)`` CUSUM increments of a ``(events, series)`` bin-index matrix."""
        series = np.arange(self.llr.shape[0])[None, :]
        return np.stack([self.llr[series, d, bin_index] for d in range(len(DIRECTIONS))], axis=2)


def _bin_counts(edges: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Counts per bin ``(-inf, e0], (e0, e1], ...`` (the reference's convention)."""
    idx = np.searchsorted(edges, values, side="left")
    return np.bincount(idx, minlength=k)[:k].astype("float64")


def cusum_path(increments: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``S`` after every event, for increments ``(events, ...)`` and a start state ``(...)``.

    ``S_t = max(0, S_{t-1} + x_t)`` in closed form: ``C_t - min(-S_0, min_{s<=t} C_s)`` with
    ``C`` the cumulative sum, so a batch needs no Python loop.
    """
    c = np.cumsum(increments, axis=0)
    floor = np.minimum(np.minimum.accumulate(c, axis=0), -start[None])
    return c - floor


def lundberg_exponent(shares: np.ndarray, llr: np.ndarray) -> float:
    """The ``theta > 0`` with ``sum(shares * exp(theta * llr)) = 1`` (a lower bound, to 1e-9).

    A CUSUM of i.i.d. increments with these bin shares and values has an ERT that grows as
    ``exp(theta * h)``. 0 when the increments do not drift down (no threshold holds an ERT);
    capped at 64 (and ``inf`` when no increment is positive: the CUSUM never leaves 0)."""
    mask = shares > 0
    r, x = shares[mask] / shares[mask].sum(), llr[mask]
    if float(r @ x) >= 0:
        return 0.0
    if float(x.max()) <= 0:
        return math.inf

    def excess(theta: float) -> float:
        return float(r @ np.exp(theta * x)) - 1.0

    lo, hi = 0.0, 1.0
    while excess(hi) < 0:
        lo, hi = hi, 2 * hi
        if hi > 64:
            return 64.0
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        if excess(mid) < 0:
            lo = mid
        else:
            hi = mid
    return lo


def tilted_shares(shares: np.ndarray, llr: np.ndarray, z: float) -> np.ndarray | None:
    """Bin shares ``r ~ shares * exp(lam * llr)`` (``lam >= 0``) whose mean of ``llr`` is ``z``
    standard deviations of ``llr`` above its mean under ``shares``.

    Why this tilt: among distributions close to ``shares`` (in KL), the exponential tilt is the
    one that raises the CUSUM's drift most, and a sample of ``n`` rows estimates the mean of
    ``llr`` to one standard deviation / ``sqrt(n)``; so ``z = k / sqrt(n)`` is a population the
    reference cannot tell from its own at ``k`` standard errors. None when that mean exceeds the
    largest ratio (no distribution on these bins has it)."""
    mask = shares > 0
    p, x = shares[mask] / shares[mask].sum(), llr[mask]
    mean = float(p @ x)
    target = mean + z * math.sqrt(max(float(p @ (x - mean) ** 2), 0.0))
    if target >= float(x.max()):
        return None

    def tilt(lam: float) -> np.ndarray:
        w = np.log(p) + lam * x
        e = np.exp(w - w.max())
        return np.asarray(e / e.sum())

    lo, hi = 0.0, 1.0
    while float(tilt(hi) @ x) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        if float(tilt(mid) @ x) < target:
            lo = mid
        else:
            hi = mid
    out = np.zeros_like(shares)
    out[mask] = tilt(hi)
    return out


def alert_exponent(design: CusumDesign, reference_se: float) -> float:
    """The smallest Lundberg exponent over every CUSUM when the traffic's shares are tilted
    against it by ``reference_se`` standard errors of the reference's rows (at most 1)."""
    theta = 1.0
    for s in range(design.llr.shape[0]):
        rows = design.rows[s] if design.rows else 0
        z = reference_se / math.sqrt(rows) if rows > 0 else 0.0
        for d in range(len(DIRECTIONS)):
            r = tilted_shares(design.shares[s], design.llr[s, d], z)
            theta = min(theta, 0.0 if r is None else lundberg_exponent(r, design.llr[s, d]))
    return theta


def with_alert_threshold(design: CusumDesign, alert_ert: float, reference_se: float) -> CusumDesign:
    """``design`` with the alert level for ``alert_ert`` events between false alerts:
    ``(threshold + ln(alert_ert / ert)) / theta_min`` (module docstring), rounded up to 0.01;
    inf when the design is not calibrated, ``alert_ert`` is 0 or no level holds it."""
    if alert_ert <= 0 or design.ert <= 0 or not math.isfinite(design.threshold):
        return replace(design, alert_threshold=math.inf, alert_ert=alert_ert)
    theta = alert_exponent(design, reference_se)
    if theta <= 0:
        return replace(design, alert_threshold=math.inf, alert_ert=alert_ert)
    level = (design.threshold + max(0.0, math.log(alert_ert / design.ert))) / theta
    return replace(
        design,
        alert_threshold=math.ceil(level * 100) / 100,
        alert_ert=alert_ert,
        alert_exponent=theta,
    )


class SequentialDetector:
    """The CUSUM state of one model version's stream (pure, no I/O)."""

    def __init__(self, design: CusumDesign, model_version: str) -> None:
        self.design = design
        self.model_version = model_version
        self.state = np.zeros(design.llr.shape[:2])
        #: Events seen, and the event count at which the latest alarm began (0: none).
        self.events = 0
        self.alarm_at = 0
        self.alarms = 0
        #: The event count at which the statistic first crossed the alert level (0: never).
        self.alert_at = 0
        #: Per series, the highest ``S`` (either direction) since this detector started: the
        #: alert's latch. Under a shift unlike the design's the CUSUM can jump over the alert
        #: level and fall back within seconds while the drift goes on (seen in CI on the demo's
        #: latitude + income shift); an alert on ``S`` itself then fires for one evaluation and
        #: is a new incident after every cooldown. The peak only falls when the reference
        #: switches (a new detector), so the alert stays until the promotion that answers it.
        self.peak = np.zeros(design.llr.shape[0])

    @property
    def in_alarm(self) -> bool:
        return bool(self.state.max() > self.design.threshold)

    @property
    def in_alert(self) -> bool:
        """The peak crossed the retraining alert's level (what ``SequentialDriftHigh``
        compares): latched until the detector is replaced."""
        return bool(self.peak.max() > self.design.alert_threshold)

    def per_series(self) -> np.ndarray:
        """The exported statistic: per series, the larger of its two directions' ``S``."""
        return np.asarray(self.state.max(axis=1))

    def update(self, bin_index: np.ndarray) -> int | None:
        """Feed ``(events, series)`` bin indices in stream order; returns the 1-based index
        (within this batch) of the event that started a new alarm, else ``None``."""
        n = int(bin_index.shape[0])
        if n == 0:
            return None
        was_alarm = self.in_alarm
        path = cusum_path(self.design.increments(bin_index), self.state)
        self.state = path[-1].copy()
        start = self.events
        self.events += n
        np.maximum(self.peak, path.max(axis=(0, 2)), out=self.peak)
        peak = path.reshape(n, -1).max(axis=1)
        if not self.alert_at:
            alerted = np.flatnonzero(peak > self.design.alert_threshold)
            if alerted.size:
                self.alert_at = start + int(alerted[0]) + 1
        if was_alarm:
            return None
        over = np.flatnonzero(peak > self.design.threshold)
        if over.size == 0:
            return None
        self.alarm_at = start + int(over[0]) + 1
        self.alarms += 1
        return int(over[0]) + 1


def alarm_positions(design: CusumDesign, bin_index: np.ndarray, chunk: int = 20_000) -> list[int]:
    """1-based positions of the alarms in a ``(events, series)`` stream when the detector
    restarts from zero after each alarm (how a run length between false alarms is counted)."""
    out: list[int] = []
    state = np.zeros(design.llr.shape[:2])
    pos, n = 0, int(bin_index.shape[0])
    while pos < n:
        part = bin_index[pos : pos + chunk]
        path = cusum_path(design.increments(part), state)
        over = np.flatnonzero(path.reshape(len(part), -1).max(axis=1) > design.threshold)
        if over.size:
            pos += int(over[0]) + 1
            out.append(pos)
            state = np.zeros_like(state)
        else:
            pos += len(part)
            state = path[-1]
    return out


def run_lengths(design: CusumDesign, paths: int, length: int, seed: int) -> np.ndarray:
    """``(paths, length)`` running maximum over every CUSUM of streams drawn from the
    reference's bin shares (series independent), starting at 0."""
    rng = np.random.default_rng(seed)
    n_series = design.llr.shape[0]
    running = np.zeros((paths, length))
    cum = np.cumsum(design.shares, axis=1)
    for s in range(n_series):
        u = rng.random((length, paths))
        bins = np.minimum(np.searchsorted(cum[s], u, side="right"), design.llr.shape[2] - 1)
        for d in range(len(DIRECTIONS)):
            path = cusum_path(design.llr[s, d, bins], np.zeros(paths))
            np.maximum(running, np.maximum.accumulate(path, axis=0).T, out=running)
    return running


def ert_estimate(running_max: np.ndarray, threshold: float) -> float:
    """Exponential MLE of the run length to the first value above ``threshold`` from
    censored paths: events observed / alarms observed (``inf`` when no path alarmed)."""
    length = running_max.shape[1]
    first = np.array([np.searchsorted(row, threshold, side="right") for row in running_max])
    alarmed = first < length
    exposure = np.where(alarmed, first + 1, length).sum()
    return math.inf if not alarmed.any() else float(exposure / alarmed.sum())


#: The simulation aims at this multiple of the ERT asked for: it covers the estimate's own
#: error (about 12% at 64 paths) and traffic that differs from the profile without drifting
#: (on the holdout split the ERT is about 0.7 x the estimate; see docs/drift.md).
CALIBRATION_MARGIN = 2.0


def calibrate_threshold(
    design: CusumDesign, ert: float, *, paths: int = 64, seed: int = 0, margin: float = 1.0
) -> CusumDesign:
    """``design`` with the smallest threshold (to 0.01) whose estimated ERT is at least
    ``margin * ert`` (:func:`calibrated_design` uses :data:`CALIBRATION_MARGIN`)."""
    if ert < 2:
        raise ValueError("ert must be at least 2 events")
    ert_goal = ert
    ert = margin * ert
    running = run_lengths(design, paths, int(3 * ert), seed)
    lo, hi = 0.0, float(running.max()) + 0.01
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        if ert_estimate(running, mid) >= ert:
            hi = mid
        else:
            lo = mid
    return design.calibrated(math.ceil(hi * 100) / 100, ert_goal)


#: Calibrated thresholds by (digest of the design's ratios and shares, ERT): a restart or a
#: second consumer app in one process (tests) does not pay for the simulation again.
_CALIBRATED: dict[tuple[str, float], float] = {}
_CALIBRATED_LOCK = threading.Lock()


def _cache_key(design: CusumDesign, ert: float) -> tuple[str, float]:
    digest = hashlib.sha256(design.llr.tobytes() + design.shares.tobytes()).hexdigest()
    return digest, ert


def cached_design(
    reference: CompiledReference,
    shift_sd: float,
    ert: float,
    alert_ert: float = SEQUENTIAL_ALERT_ERT_EVENTS,
) -> CusumDesign | None:
    """The calibrated design (with its alert level) if it is in the cache already (cheap),
    else None."""
    if ert <= 0:
        return None
    design = CusumDesign.from_reference(reference, shift_sd)
    with _CALIBRATED_LOCK:
        threshold = _CALIBRATED.get(_cache_key(design, ert))
    if threshold is None:
        return None
    return with_alert_threshold(
        design.calibrated(threshold, ert), alert_ert, SEQUENTIAL_ALERT_REFERENCE_SE
    )


def calibrated_design(
    reference: CompiledReference,
    shift_sd: float,
    ert: float,
    alert_ert: float = SEQUENTIAL_ALERT_ERT_EVENTS,
) -> CusumDesign:
    """:func:`calibrate_threshold` of the reference's design, cached by its content, with the
    alert level for ``alert_ert`` (:func:`with_alert_threshold`; cheap, not cached)."""
    design = CusumDesign.from_reference(reference, shift_sd)
    key = _cache_key(design, ert)
    with _CALIBRATED_LOCK:
        threshold = _CALIBRATED.get(key)
    if threshold is None:
        threshold = calibrate_threshold(design, ert, margin=CALIBRATION_MARGIN).threshold
        with _CALIBRATED_LOCK:
            if len(_CALIBRATED) >= 8:
                _CALIBRATED.pop(next(iter(_CALIBRATED)))
            _CALIBRATED[key] = threshold
    return with_alert_threshold(
        design.calibrated(threshold, ert), alert_ert, SEQUENTIAL_ALERT_REFERENCE_SE
    )
