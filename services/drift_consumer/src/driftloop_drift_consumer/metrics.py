"""``ConsumerMetrics``: every series ``/metrics`` shows; the names the alert rules read.

Each app builds its own :class:`ConsumerMetrics` on its own registry
(:func:`driftloop_service.new_registry`; tests build many apps). The writes that feed these
series live in :mod:`.sinks.facade` (and the loop's parts); this module only declares them.
``driftloop_retries_total{operation}`` counts every retry the consumer makes (sink writes,
consumer restarts, fetches, the reference load, the ``model-events`` connection).

Drift gauges carry ``model_version``; when the champion changes the previous version's drift
and online-error series are removed, so an alert on the old baseline resolves instead of
sticking at its last value.

Warm-up (:mod:`driftloop_contracts.warmup`): ``driftloop_online_error_rows{model_version}`` is
how many of the version's own labelled rows its online-error window holds (it starts empty for
a new champion), and ``driftloop_windows_total{model_version}`` how many of its own drift
windows closed; the alert rules judge a new champion only past both minimums.

``driftloop_drift_threshold{feature,statistic}`` (the threshold as applied: configured, widened
for a small reference, :class:`.drift.ReferenceThresholds`) has one series per series x statistic
(``psi``, ``ks``, ``wasserstein``) plus ``feature=""`` for ``drift_share`` and ``rmse_ratio``;
``driftloop_drift_value`` additionally exports ``statistic="ks_pvalue"``, which has no threshold
(lower means drift) and therefore never matches a threshold in a rule.

The sequential detector (:mod:`.sequential`) has its own series, so the threshold CLI and the
window alerts are unchanged: ``driftloop_sequential_statistic{feature,model_version}`` (the
CUSUM per series, larger direction), ``driftloop_sequential_threshold`` (its calibrated alarm
level), ``driftloop_sequential_alarm{model_version}`` (1 while any series is above it) and
``driftloop_sequential_alarms_total{model_version}`` (alarms started). The retraining alert
``SequentialDriftHigh`` compares ``driftloop_sequential_peak{feature,model_version}`` (the
highest statistic since the champion's detector started: a latch, removed with the version)
with ``driftloop_sequential_alert_threshold``,
the level set for ``sequential_alert_ert_events`` between false alerts
(:func:`.sequential.with_alert_threshold`; ``+Inf``: no alert for this reference).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from driftloop_contracts.thresholds import ThresholdSet
from driftloop_service import RetryCounter, new_registry

from .drift import DriftDecision
from .feedback_join import ErrorSummary
from .sequential import SequentialDetector
from .watch import ErrorSums
from .windows import ClosedWindow


class ConsumerMetrics:
    """All series of one drift-consumer instance."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        r = self.registry
        #: ``driftloop_retries_total{operation}``: hooks for the retry helper.
        self.retries = RetryCounter(r)
        self.drift_value = Gauge(
            "driftloop_drift_value",
            "Drift statistic of the latest closed window vs the champion's reference",
            ["feature", "statistic", "model_version"],
            registry=r,
        )
        self.drift_confirmed = Gauge(
            "driftloop_drift_confirmed",
            "The smaller of a statistic's values in the latest two closed windows: what the "
            "retraining alerts compare, so one window with an extreme row cannot start a retrain",
            ["feature", "statistic", "model_version"],
            registry=r,
        )
        #: (feature, statistic, model version) -> the value of the previous closed window.
        self._previous: dict[tuple[str, str, str], float] = {}
        self.drift_threshold = Gauge(
            "driftloop_drift_threshold",
            "Alert threshold as applied (Redis override or default, widened for a reference"
            " sample of fewer than 5,000 rows: docs/drift.md, 'Small references')",
            ["feature", "statistic"],
            registry=r,
        )
        self.drift_share = Gauge(
            "driftloop_drift_share",
            "Share of features over a threshold in the latest window",
            ["model_version"],
            registry=r,
        )
        self.online_rmse = Gauge(
            "driftloop_online_rmse_usd",
            "Rolling RMSE of joined predictions, USD",
            ["model_version"],
            registry=r,
        )
        self.online_mae = Gauge(
            "driftloop_online_mae_usd",
            "Rolling MAE of joined predictions, USD",
            ["model_version"],
            registry=r,
        )
        self.online_bias = Gauge(
            "driftloop_online_bias_usd",
            "Rolling mean of prediction - actual, USD",
            ["model_version"],
            registry=r,
        )
        self.online_error_rows = Gauge(
            "driftloop_online_error_rows",
            "Labelled rows of the version's own predictions in its online-error window (the "
            "alerts' warm-up: driftloop_contracts.warmup)",
            ["model_version"],
            registry=r,
        )
        self.online_rmse_ratio = Gauge(
            "driftloop_online_rmse_ratio",
            "Rolling RMSE / the version's training holdout RMSE",
            ["model_version"],
            registry=r,
        )
        self.events_consumed = Counter(
            "driftloop_events_consumed_total",
            "Records read from Kafka (replays counted once)",
            ["topic"],
            registry=r,
        )
        self.fetch_gaps = Counter(
            "driftloop_fetch_gaps_total",
            "Fetches that skipped an offset: re-read from it (refetched), or read past it after "
            "the patience ran out (lost: those records are missing)",
            ["topic", "outcome"],
            registry=r,
        )
        self.events_invalid = Counter(
            "driftloop_events_invalid_total",
            "Records skipped as invalid, by reason",
            ["topic", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "driftloop_dead_letters_total",
            "Skipped records copied to <topic>.dlq (published: acknowledged by the broker) or "
            "given up after the retries (failed: only in the logs)",
            ["topic", "outcome"],
            registry=r,
        )
        self.events_ignored = Counter(
            "driftloop_drift_events_ignored_total",
            "Valid predictions not windowed (other model version, no reference yet)",
            ["reason"],
            registry=r,
        )
        self.model_events_ignored = Counter(
            "driftloop_model_events_ignored_total",
            "ModelPromoted events whose version the champion alias did not confirm, by reason"
            " (driftloop_contracts.PromotionIgnored)",
            ["reason"],
            registry=r,
        )
        self.windows = Counter(
            "driftloop_windows_total", "Windows closed and written", ["model_version"], registry=r
        )
        self.windows_declared = Counter(
            "driftloop_windows_drift_total",
            "Closed windows with any statistic over threshold",
            ["model_version"],
            registry=r,
        )
        self.sequential_statistic = Gauge(
            "driftloop_sequential_statistic",
            "CUSUM of the merged binned stream per series (larger of its two directions)",
            ["feature", "model_version"],
            registry=r,
        )
        self.sequential_peak = Gauge(
            "driftloop_sequential_peak",
            "Per series, the highest CUSUM since the champion's detector started (the"
            " SequentialDriftHigh latch: it falls only when the reference switches)",
            ["feature", "model_version"],
            registry=r,
        )
        self.sequential_threshold = Gauge(
            "driftloop_sequential_threshold",
            "Alarm level of the sequential detector, calibrated for sequential_ert_events",
            registry=r,
        )
        self.sequential_alert_threshold = Gauge(
            "driftloop_sequential_alert_threshold",
            "Level of the sequential retraining alert (SequentialDriftHigh), set for"
            " sequential_alert_ert_events between false alerts",
            registry=r,
        )
        self.sequential_alarm = Gauge(
            "driftloop_sequential_alarm",
            "1 while the sequential detector is in alarm",
            ["model_version"],
            registry=r,
        )
        self.sequential_alarms = Counter(
            "driftloop_sequential_alarms_total",
            "Alarms the sequential detector started",
            ["model_version"],
            registry=r,
        )
        self.window_size = Gauge(
            "driftloop_window_size_events", "Events in the latest closed window", registry=r
        )
        self.window_end = Gauge(
            "driftloop_window_end_timestamp_seconds",
            "Event time of the latest window's end",
            registry=r,
        )
        self.sink_failures = Counter(
            "driftloop_sink_failures_total",
            "Failed writes (retried; offsets not committed)",
            ["sink"],
            registry=r,
        )
        self.redis_used_memory = Gauge(
            "driftloop_redis_used_memory_bytes",
            "Redis INFO memory used_memory, read every redis_memory_poll_seconds (redis_memory.py)",
            registry=r,
        )
        self.redis_max_memory = Gauge(
            "driftloop_redis_maxmemory_bytes",
            "Redis maxmemory (0: unbounded); at it every write fails (noeviction)",
            registry=r,
        )
        self.sink_up = Gauge(
            "driftloop_sink_up",
            "1 if the sink's last write succeeded, 0 while it is failing",
            ["sink"],
            registry=r,
        )
        self.last_commit = Gauge(
            "driftloop_last_commit_timestamp_seconds",
            "Wall time of the last offset commit",
            registry=r,
        )
        self.lag = Gauge(
            "driftloop_consumer_lag_events",
            "Approximate records behind the high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.labelled_rows = Counter(
            "driftloop_labelled_rows_total", "Rows appended to the labelled-data log", registry=r
        )
        self.reference_info = Gauge(
            "driftloop_drift_reference_info",
            "The reference in use (value 1)",
            ["model_version", "profile_id"],
            registry=r,
        )
        self.reports = Counter(
            "driftloop_drift_reports_total",
            "Evidently reports, by outcome",
            ["outcome"],
            registry=r,
        )
        # --- the post-promotion watch (watch.py, rollback.py) ---------------------------
        self.watch_decisions = Counter(
            "driftloop_watch_decisions_total",
            "Post-promotion watches decided, by outcome (rolled_back | kept | superseded); "
            "counted once "
            "across instances",
            ["outcome"],
            registry=r,
        )
        for outcome in (
            "rolled_back",
            "kept",
            "superseded",
        ):  # at 0, so increase() sees the first one
            self.watch_decisions.labels(outcome)
        self.watch_failures = Counter(
            "driftloop_watch_failures_total",
            "Failed attempts of a watch step (MLflow, Kafka or Redis down); retried",
            ["step"],
            registry=r,
        )
        for step in ("read_watch", "moved", "tagged", "shadow_removed", "announced", "tick"):
            self.watch_failures.labels(step)
        self.watch_rows = Gauge(
            "driftloop_watch_rows",
            "Labelled requests the running watch compared both models on",
            registry=r,
        )
        self.watch_rmse = Gauge(
            "driftloop_watch_rmse_usd",
            "RMSE of the running watch's models on the same labelled requests, USD",
            ["role"],
            registry=r,
        )
        self.watch_open = Gauge(
            "driftloop_watch_open",
            "1 while model_version is under its post-promotion watch, and for a version the "
            "watch rolled back until the consumer's reference moved off it: PerformanceDegraded "
            "does not judge it meanwhile (the watch does)",
            ["model_version"],
            registry=r,
        )
        #: The version the last watch rolled back, gated until the reference leaves it.
        self._rolled_back: str | None = None
        # --- windows merged across the group (shared_merge.py) -----------------------------
        self.shared_partials = Counter(
            "driftloop_shared_partials_total",
            "Slot partials published to the group's store (published), or refused because "
            "another owner had shared the partition further (conflict: the consumer restarts)",
            ["outcome"],
            registry=r,
        )
        self.shared_windows = Counter(
            "driftloop_shared_windows_total",
            "Group-wide merged windows this instance closed (closed), or computed but another "
            "aggregator closed first (lost_race)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("published", "conflict"):
            self.shared_partials.labels(outcome)
        for outcome in ("closed", "lost_race"):
            self.shared_windows.labels(outcome)
        self.shared_late_slots = Counter(
            "driftloop_shared_slots_late_total",
            "Slots merged more than SHARED_LATE_SECONDS after their end (a partition was "
            "unowned or far behind)",
            registry=r,
        )
        self.shared_late_events = Counter(
            "driftloop_shared_late_events_total",
            "Events stamped in a slot their partition had already shared (counted in a later slot)",
            registry=r,
        )
        self.shared_merge_lag = Gauge(
            "driftloop_shared_merge_lag_seconds",
            "Wall time since the end of the newest slot every partition has passed (aggregator)",
            registry=r,
        )
        self.shared_aggregator = Gauge(
            "driftloop_shared_aggregator",
            "1 while this instance holds the lease to merge the group's windows",
            registry=r,
        )
        self._versions: set[str] = set()

    def set_watch(self, champion: str, sums: ErrorSums) -> None:
        """The running watch of ``champion``: open, and what it compared so far."""
        self._versions.add(champion)
        self._close_watches(keep={champion})
        self.watch_open.labels(champion).set(1)
        self.watch_rows.set(sums.rows)
        if sums.rows:
            self.watch_rmse.labels("champion").set(sums.champion_rmse)
            self.watch_rmse.labels("shadow").set(sums.shadow_rmse)

    def clear_watch(self, *, rolled_back: str | None = None) -> None:
        """No watch runs. ``rolled_back``: the watch just rolled that version back; it stays
        gated until the reference moves off it (its online-error window, over the alert's
        threshold, is still exported until then)."""
        if rolled_back is not None:
            self._rolled_back = rolled_back
            self._versions.add(rolled_back)
            self.watch_open.labels(rolled_back).set(1)
        self._close_watches(keep=set())
        self.watch_rows.set(0)
        self.watch_rmse.clear()

    def _close_watches(self, keep: set[str]) -> None:
        kept = keep | ({self._rolled_back} if self._rolled_back else set())
        for labels in list(_label_sets(self.watch_open)):
            if labels[0] not in kept:
                self.watch_open.remove(*labels)

    def start_dead_letter_series(self, topics: list[str]) -> None:
        """Export ``driftloop_dead_letters_total`` at 0 for ``topics``, so the alerts'
        ``increase()`` sees the first dead letter (a series born at 1 shows no increase)."""
        for topic in topics:
            for outcome in ("published", "failed"):
                self.dead_letters.labels(topic, outcome)

    def record_window(self, window: ClosedWindow, decision: DriftDecision) -> None:
        version = window.model_version
        self._versions.add(version)
        for series, statistic, value in window.statistics.values():
            self.drift_value.labels(series, statistic, version).set(value)
            key = (series, statistic, version)
            previous = self._previous.get(key)
            if previous is not None:
                self.drift_confirmed.labels(*key).set(min(previous, value))
            self._previous[key] = value
        self.drift_share.labels(version).set(decision.drift_share)
        self.windows.labels(version).inc()
        if decision.any_drift:
            self.windows_declared.labels(version).inc()
        self.window_size.set(window.n)
        self.window_end.set(window.end_us / 1e6)

    def record_detector(self, detector: SequentialDetector, new_alarm: bool) -> None:
        """The detector's state after a batch (and one more alarm if it started one)."""
        version = detector.model_version
        self._versions.add(version)
        for name, value in zip(detector.design.names, detector.per_series(), strict=True):
            self.sequential_statistic.labels(name, version).set(float(value))
        for name, value in zip(detector.design.names, detector.peak, strict=True):
            self.sequential_peak.labels(name, version).set(float(value))
        self.sequential_threshold.set(detector.design.threshold)
        self.sequential_alert_threshold.set(detector.design.alert_threshold)
        self.sequential_alarm.labels(version).set(1 if detector.in_alarm else 0)
        if new_alarm:
            self.sequential_alarms.labels(version).inc()

    def set_thresholds(
        self, thresholds: ThresholdSet, applied: Callable[[str, str], float] | None = None
    ) -> None:
        """Export ``applied`` (the thresholds as widened for the reference) where given, else
        the configured values."""
        for row in thresholds.rows():
            value = row.value if applied is None else applied(row.statistic, row.feature)
            self.drift_threshold.labels(row.feature, row.statistic).set(value)

    def set_online_error(self, version: str, summary: ErrorSummary, ratio: float | None) -> None:
        self._versions.add(version)
        self.online_rmse.labels(version).set(summary.rmse)
        self.online_mae.labels(version).set(summary.mae)
        self.online_bias.labels(version).set(summary.bias)
        self.online_error_rows.labels(version).set(summary.n)
        if ratio is not None:
            self.online_rmse_ratio.labels(version).set(ratio)

    def set_reference(self, version: str, profile_id: str) -> None:
        if self._rolled_back == version:  # made champion again: judged like any champion
            self._ungate(version)
        self.reference_info.clear()
        self.reference_info.labels(version, profile_id).set(1)
        for old in self._versions - {version}:
            self.forget_version(old)

    def forget_version(self, version: str) -> None:
        """Remove every per-version series of ``version`` (it is no longer the champion)."""
        for gauge in (
            self.drift_value,
            self.drift_confirmed,
            self.sequential_statistic,
            self.sequential_peak,
        ):
            for labels in list(_label_sets(gauge)):
                if labels[-1] == version:
                    gauge.remove(*labels)
        for key in [k for k in self._previous if k[-1] == version]:
            del self._previous[key]
        for gauge in (
            self.drift_share,
            self.sequential_alarm,
            self.online_rmse,
            self.online_mae,
            self.online_bias,
            self.online_rmse_ratio,
            self.online_error_rows,
        ):
            for labels in list(_label_sets(gauge)):
                if labels == (version,):
                    gauge.remove(version)
        self._ungate(version)
        self._versions.discard(version)

    def _ungate(self, version: str) -> None:
        if (version,) in _label_sets(self.watch_open):
            self.watch_open.remove(version)
        if self._rolled_back == version:
            self._rolled_back = None

    def set_sink_ok(self, sink: str, ok: bool) -> None:
        self.sink_up.labels(sink).set(1 if ok else 0)


def _label_sets(metric: Gauge) -> list[tuple[str, ...]]:
    # prometheus_client keeps children by label-value tuple (typed as a Sequence of them).
    return [tuple(labels) for labels in metric._metrics]
