"""How much of its own traffic a new champion must have seen before the alerts judge it.

Right after a promotion the champion's online-error window holds a handful of labelled rows
and its drift series a single window: noisy figures that, before this warm-up existed, fired
``PerformanceDegraded`` against a champion that was fine and started a second retrain for the
same incident. The alert rules (``driftloop_monitoring.alerts``) require, besides the
threshold:

* ``PerformanceDegraded``: ``driftloop_online_error_rows`` of the version (its own labelled
  rows in its online-error window, which starts empty when it is first served) is at least
  :data:`PERFORMANCE_WARMUP_ROWS`;
* ``DriftFeatureHigh`` / ``DriftPredictionHigh``: ``driftloop_windows_total`` of the version
  (its own closed drift windows) is at least :data:`DRIFT_WARMUP_WINDOWS`.

Both counts live in the drift consumer's memory, so a consumer restart starts them again: the
alerts then wait for the warm-up once more (later, never spuriously). The drift consumer's
``online_error_rows`` must be at least :data:`PERFORMANCE_WARMUP_ROWS` (its settings check it),
or ``PerformanceDegraded`` could never fire.
"""

from __future__ import annotations

#: Labelled rows of its own a champion needs before ``PerformanceDegraded`` may fire.
PERFORMANCE_WARMUP_ROWS = 300
#: Closed drift windows of its own a champion needs before the drift alerts may fire.
DRIFT_WARMUP_WINDOWS = 2

__all__ = ["DRIFT_WARMUP_WINDOWS", "PERFORMANCE_WARMUP_ROWS"]
