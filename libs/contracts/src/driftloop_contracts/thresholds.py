"""Default drift thresholds and where their run-time overrides live.

One source of truth for both alert paths: the drift consumer exports the effective values as
``driftloop_drift_threshold`` gauges; the Prometheus and Grafana rules compare against those.
"""

from __future__ import annotations

from typing import Literal

Statistic = Literal["psi", "ks", "wasserstein", "drift_share", "rmse_ratio"]
STATISTICS: tuple[Statistic, ...] = ("psi", "ks", "wasserstein", "drift_share", "rmse_ratio")
#: Statistics compared with a threshold per series (each feature and the prediction); the
#: others (drift_share, rmse_ratio) are dataset- and model-level.
SERIES_STATISTICS: tuple[Statistic, ...] = ("psi", "ks", "wasserstein")

#: Defaults, chosen so a stationary 200-row window declares drift on well under 1% of windows
#: (see docs/drift.md for the calibration), while a 0.5-sd shift of one feature is caught.
DEFAULT_THRESHOLDS: dict[Statistic, float] = {
    "psi": 0.2,
    "ks": 0.15,
    "wasserstein": 0.5,
    "drift_share": 0.5,
    "rmse_ratio": 1.5,
}

#: Redis hash holding overrides: field "<statistic>" or "<statistic>:<feature>" -> value.
THRESHOLDS_REDIS_KEY = "driftloop:thresholds"
