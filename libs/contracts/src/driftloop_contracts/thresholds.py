"""Drift thresholds as data: the defaults, the override names, and their validation.

One source of truth for both alert paths: the drift consumer exports the effective values as
``driftloop_drift_threshold`` gauges; the Prometheus and Grafana rules compare against those.

Overrides live in the Redis hash :data:`THRESHOLDS_REDIS_KEY` (read and written by
:mod:`driftloop_contracts.threshold_store`). A field is ``"<statistic>"`` (every series) or
``"<statistic>:<series>"`` (one feature, or ``prediction``); its value is a number. The
effective value of ``(statistic, series)`` is the per-series override, else the statistic
override, else :data:`DEFAULT_THRESHOLDS`. ``drift_share`` and ``rmse_ratio`` are dataset- and
model-level and take no series.

This module is pure (no Redis import), so every member can validate and look up thresholds::

    from driftloop_contracts.thresholds import ThresholdSet

    thresholds, problems = ThresholdSet.from_hash({b"psi": b"0.3", b"ks:prediction": b"0.2"})
    thresholds("psi", "block_latitude")  # 0.3
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, SupportsFloat, SupportsIndex, TypeAlias

from .features import SERIES_NAMES
from .profile import REFERENCE_SAMPLE_ROWS
from .redis_keys import THRESHOLDS_KEY

Statistic = Literal["psi", "ks", "wasserstein", "drift_share", "rmse_ratio"]
STATISTICS: tuple[Statistic, ...] = ("psi", "ks", "wasserstein", "drift_share", "rmse_ratio")
#: Statistics compared with a threshold per series (each feature and the prediction); the
#: others (drift_share, rmse_ratio) are dataset- and model-level.
SERIES_STATISTICS: tuple[Statistic, ...] = ("psi", "ks", "wasserstein")
#: Statistics that apply to the dataset or model as a whole (exported with ``feature=""``).
GLOBAL_STATISTICS: tuple[Statistic, ...] = tuple(
    s for s in STATISTICS if s not in SERIES_STATISTICS
)

#: Defaults, chosen so a stationary 200-row window declares drift on well under 1% of windows
#: (see docs/drift.md for the calibration), while a 0.5-sd shift of one feature is caught.
DEFAULT_THRESHOLDS: dict[Statistic, float] = {
    "psi": 0.2,
    "ks": 0.15,
    "wasserstein": 0.5,
    "drift_share": 0.5,
    "rmse_ratio": 1.5,
}

#: The sizes the thresholds are calibrated at (docs/drift.md): windows of 200 events against a
#: reference sample of :data:`REFERENCE_SAMPLE_ROWS` rows.
CALIBRATION_WINDOW_EVENTS = 200

#: Expected run length, in events of the merged stream, between two false *alerts* of the
#: sequential detector (``SequentialDriftHigh``, which triggers a retrain). The detector's own
#: ERT (the drift consumer's ``sequential_ert_events``, 10,000) is an alarm every few minutes
#: at the demo's traffic: fine for a dashboard, not for a retrain. Two windows confirm a
#: windowed retrain; with 0.35% false windows that is at most ``0.0035**2`` of windows (every
#: false window on one gauge), one per 8.2e4 windows of 200 events = 1.6e7 events. The alert is
#: set no more often than that: 2e7 events, about 4 days at the demo's ~57 events/s
#: (docs/drift.md, "Sequential detection on the merged stream").
SEQUENTIAL_ALERT_ERT_EVENTS = 20_000_000.0
#: The name the sequential detector's statistic goes by next to psi/ks/wasserstein (timeline,
#: ``driftloop_cli.observe.drifting_series``).
SEQUENTIAL_STATISTIC = "cusum"
#: How far the traffic's bin shares may differ from the reference's without drifting, in
#: standard errors of the reference's own sample (a reference of ``n`` rows estimates its
#: population's shares only to ``1/sqrt(n)``): the sequential alert's threshold holds its ERT
#: for traffic tilted this far against each CUSUM (``driftloop_drift_consumer.sequential``).
SEQUENTIAL_ALERT_REFERENCE_SE = 3.0


def reference_widening(statistic: str, reference_rows: int) -> float:
    """The factor a threshold is widened by for a reference sample of ``reference_rows`` rows.

    Why: a statistic between a window and a reference varies with both samples' sizes, as
    ``1/window + 1/reference``. The thresholds hold their false-alarm rate for references of
    :data:`REFERENCE_SAMPLE_ROWS` rows; a champion retrained for a regime has a reference of its
    post-incident rows only (a few hundred), whose own noise alone would cross them on one
    window in eight (docs/drift.md, "Small references"). Widening by that variance ratio (PSI
    grows with the variance, KS and Wasserstein with its square root) keeps the calibrated
    rate. 1 for a full-size reference and for the dataset- and model-level statistics.
    """
    if statistic not in SERIES_STATISTICS or reference_rows >= REFERENCE_SAMPLE_ROWS:
        return 1.0
    window = 1 / CALIBRATION_WINDOW_EVENTS
    ratio = (window + 1 / max(reference_rows, 1)) / (window + 1 / REFERENCE_SAMPLE_ROWS)
    return ratio if statistic == "psi" else math.sqrt(ratio)


#: Redis hash holding overrides: field "<statistic>" or "<statistic>:<feature>" -> value.
THRESHOLDS_REDIS_KEY = THRESHOLDS_KEY
#: The hash as read back: redis-py's ``hgetall`` gives ``dict[bytes | str, bytes | str]`` (bytes
#: unless the client decodes responses); tests and the CLI pass plain bytes or str mappings.
RawHash: TypeAlias = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]


class ThresholdError(ValueError):
    """An unknown statistic/feature or a value that is not a finite non-negative number."""


@dataclass(frozen=True)
class ThresholdRow:
    """One effective threshold and where its value comes from."""

    statistic: str
    feature: str
    value: float
    source: str  # "default" | "override" | "feature override"


def field_name(statistic: str, feature: str | None = None) -> str:
    """The Redis hash field for an override; raises :class:`ThresholdError` naming the problem."""
    if statistic not in STATISTICS:
        raise ThresholdError(
            f"unknown statistic {statistic!r}; expected one of {', '.join(STATISTICS)}"
        )
    if not feature:
        return statistic
    if statistic in GLOBAL_STATISTICS:
        raise ThresholdError(f"statistic {statistic!r} is not per feature; drop the feature")
    if feature not in SERIES_NAMES:
        raise ThresholdError(
            f"unknown feature {feature!r}; expected one of {', '.join(SERIES_NAMES)}"
        )
    return f"{statistic}:{feature}"


def parse_value(value: object) -> float:
    """A threshold is a finite number >= 0 (a string or bytes from Redis or the CLI is accepted)."""
    try:
        text = value.decode() if isinstance(value, bytes) else value
        if not isinstance(text, str | SupportsFloat | SupportsIndex):
            raise TypeError(type(text).__name__)
        number = float(text)
    except (TypeError, ValueError):
        raise ThresholdError(f"threshold {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ThresholdError(f"threshold {number} must be a finite number >= 0")
    return number


class ThresholdSet:
    """Effective thresholds: defaults plus validated overrides. Callable as
    ``(statistic, series) -> value``, the lookup the drift consumer's ``decide`` takes."""

    def __init__(
        self,
        overrides: Mapping[str, float] | None = None,
        defaults: Mapping[Statistic, float] | None = None,
    ) -> None:
        self.defaults: dict[str, float] = {
            statistic: value for statistic, value in (defaults or DEFAULT_THRESHOLDS).items()
        }
        self.overrides: dict[str, float] = dict(overrides or {})

    def get(self, statistic: str, feature: str = "") -> float:
        if feature:
            value = self.overrides.get(f"{statistic}:{feature}")
            if value is not None:
                return value
        value = self.overrides.get(statistic)
        return value if value is not None else self.defaults[statistic]

    __call__ = get

    def source(self, statistic: str, feature: str = "") -> str:
        if feature and f"{statistic}:{feature}" in self.overrides:
            return "feature override"
        return "override" if statistic in self.overrides else "default"

    def rows(self) -> list[ThresholdRow]:
        """Every (series x per-series statistic) pair, then the global statistics."""
        rows = [
            ThresholdRow(stat, name, self.get(stat, name), self.source(stat, name))
            for stat in SERIES_STATISTICS
            for name in SERIES_NAMES
        ]
        rows += [
            ThresholdRow(stat, "", self.get(stat), self.source(stat)) for stat in GLOBAL_STATISTICS
        ]
        return rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThresholdSet) and (self.defaults, self.overrides) == (
            other.defaults,
            other.overrides,
        )

    def __repr__(self) -> str:
        return f"ThresholdSet(overrides={self.overrides!r})"

    @classmethod
    def from_hash(cls, raw: RawHash) -> tuple[ThresholdSet, list[str]]:
        """Parse a Redis hash; invalid fields are skipped and reported (never fatal)."""
        overrides: dict[str, float] = {}
        problems: list[str] = []
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            statistic, _, feature = name.partition(":")
            try:
                overrides[field_name(statistic, feature or None)] = parse_value(value)
            except ThresholdError as exc:
                problems.append(f"{THRESHOLDS_REDIS_KEY}[{name}]: {exc}")
        return cls(overrides), problems
