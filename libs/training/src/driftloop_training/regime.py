"""The incident's regime: labelled rows whose prediction was made after the alert began.

A retraining run triggered by an alert carries the alert's ``startsAt`` (``starts_at`` in the
run's conf). Every prediction made from then on was made in the regime the alert fired on, so
those rows — and only those — describe the traffic the challenger will serve: its reference
profile (the drift baseline) and the holdout that judges it are drawn from them
(:func:`driftloop_training.retrain.collect`). The rows are selected by ``predicted_at``, not
``labelled_at``: a label that arrives late for a prediction made before the incident still
describes the old regime's features.

Right after an alert there may be few such rows (labels arrive with a delay), so the DAG's
``wait_for_regime`` sensor calls :func:`check_regime` until ``min_regime_rows`` are in the log,
re-checking at most until ``regime_wait_seconds`` after the run was triggered; then the run
ends *skipped* with the reason, instead of profiling a mix of regimes.

This module reads Parquet with pandas only (no scikit-learn, no MLflow), and only the hour
partitions since the incident began, so the sensor's look every second stays cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import AwareDatetime, BaseModel

from .data import read_labelled_log


class RegimeCheck(BaseModel):
    """One look at the log: how many rows of the incident's regime, and what to do."""

    #: ``done``: enough rows (or no incident start known): go on, reading up to ``window_end``.
    #: ``wait``: too few yet, look again. ``give_up``: too few and no more waiting.
    status: Literal["done", "wait", "give_up"]
    reason: str
    incident_start: AwareDatetime | None
    window_end: AwareDatetime
    regime_rows: int
    min_regime_rows: int

    @property
    def done(self) -> bool:
        return self.status == "done"


def regime_mask(frame: pd.DataFrame, incident_start: datetime) -> pd.Series:
    """Rows of a labelled-log frame predicted at or after ``incident_start``."""
    predicted = pd.to_datetime(frame["predicted_at"], utc=True)
    return predicted >= pd.Timestamp(incident_start.astimezone(UTC))


def count_regime_rows(root: Path, *, incident_start: datetime, end: datetime) -> int:
    """Labelled rows predicted in ``[incident_start, end)`` (their labels come later still, so
    only partitions from ``incident_start`` on are opened)."""
    log = read_labelled_log(root, start=incident_start.astimezone(UTC), end=end)
    if log.frame.empty:
        return 0
    return int(regime_mask(log.frame, incident_start).sum())


def check_regime(
    root: Path,
    *,
    incident_start: datetime | None,
    now: datetime,
    triggered_at: datetime,
    min_regime_rows: int,
    wait_seconds: float,
    pinned_end: datetime | None = None,
) -> RegimeCheck:
    """Decide whether the run can collect now.

    ``now`` is the moment of this look (the window then ends there, so rows that arrived while
    waiting are read); a ``pinned_end`` (the ``window_end`` param: replays, tests) fixes the
    window instead, and since a fixed window cannot grow, too few rows there give up at once.
    Without an incident start (a manual run) there is nothing to wait for: the window ends at
    the run's trigger time, as before.
    """
    if incident_start is None:
        end = pinned_end or triggered_at
        return RegimeCheck(
            status="done",
            reason="no incident start in the conf: the profile uses the newest labelled rows",
            incident_start=None,
            window_end=end,
            regime_rows=0,
            min_regime_rows=min_regime_rows,
        )
    end = pinned_end or now
    rows = count_regime_rows(root, incident_start=incident_start, end=end)
    common: dict[str, Any] = {
        "incident_start": incident_start,
        "window_end": end,
        "regime_rows": rows,
        "min_regime_rows": min_regime_rows,
    }
    since = f"predicted since the incident began ({incident_start.astimezone(UTC):%H:%M:%S} UTC)"
    if rows >= min_regime_rows:
        return RegimeCheck(
            status="done",
            reason=f"{rows} labelled rows {since}, minimum {min_regime_rows}",
            **common,
        )
    deadline = triggered_at + timedelta(seconds=wait_seconds)
    if pinned_end is not None or now >= deadline:
        why = "the window is pinned" if pinned_end is not None else f"waited {wait_seconds:.0f}s"
        return RegimeCheck(
            status="give_up",
            reason=(
                f"skipped: only {rows} labelled rows {since}, minimum {min_regime_rows} "
                f"({why}); a profile of fewer rows would mix regimes"
            ),
            **common,
        )
    return RegimeCheck(
        status="wait",
        reason=(
            f"waiting: {rows} labelled rows {since}, minimum {min_regime_rows}; "
            f"re-checking until {deadline.astimezone(UTC):%H:%M:%S} UTC"
        ),
        **common,
    )
