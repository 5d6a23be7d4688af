"""The alert rules, defined once and rendered for both alert paths.

Every rule is ``A <op> B``: ``A`` is what is measured, ``B`` is either another PromQL query
(for drift: the threshold gauge the drift consumer exports) or a constant (operational rules).

* Prometheus (the no-Docker path) gets ``A <op> [matching] B`` as one expression.
* Grafana gets the same ``A`` (and ``B``) as instant queries plus one server-side expression:
  ``$A > $B`` (math) when ``B`` is a query, a threshold node when ``B`` is a constant.

Grafana's math joins ``$A`` and ``$B`` on identical label sets (or a label-less side), which
is why both sides aggregate to the same labels, e.g. ``max by (feature, statistic)``: PromQL's
default one-to-one matching then gives the same pairs, and one expression serves every
statistic the drift consumer exports a threshold for (psi, ks, wasserstein, ...). A statistic
without a threshold (``ks_pvalue``) has no partner and is dropped by both.

Thresholds are data: changing one (``driftloop thresholds set``) changes ``B`` at the next
scrape, with no rule edited or reloaded. In Grafana's UI a user can still edit the rule: change
``B``'s query, or replace the math ``$A > $B`` with ``$A > 0.3`` to pin a constant.

Timing: ``pending`` is the Prometheus ``for`` (evaluation every 1 s locally); Grafana's minimum
evaluation interval is 10 s, so its pending period is at least one interval. Production values
are in docs/monitoring.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from driftloop_contracts import PREDICTION_SERIES, PREDICTIONS_TOPIC
from driftloop_contracts.thresholds import SEQUENTIAL_ALERT_ERT_EVENTS
from driftloop_contracts.warmup import DRIFT_WARMUP_WINDOWS, PERFORMANCE_WARMUP_ROWS

from . import names
from .promql import needs_parens

Op = Literal[">", "<"]

GRAFANA_INTERVAL = "10s"
#: Instant queries look back this far (seconds) -- Grafana's default for a new rule.
GRAFANA_RELATIVE_FROM = 600


@dataclass(frozen=True)
class AlertSpec:
    """One alert, for both Prometheus and Grafana."""

    name: str
    uid: str
    group: Literal["retrain", "operations"]
    a: str
    op: Op
    b: str | float
    #: PromQL vector matching between A and B (Grafana's math needs none).
    matching: str = ""
    pending: str = "0s"
    grafana_pending: str = GRAFANA_INTERVAL
    severity: Literal["warning", "critical"] = "warning"
    summary_prometheus: str = ""
    summary_grafana: str = ""
    description: str = ""
    #: Grafana state when A (or B) returns nothing.
    no_data: Literal["OK", "NoData", "Alerting", "KeepLast"] = "OK"
    panel: tuple[str, int] | None = None  # (dashboard uid, panel id) for Grafana's link
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        return self.group == "retrain"

    @property
    def labels(self) -> dict[str, str]:
        out = {"severity": self.severity, **self.extra_labels}
        if self.retrain:
            out[names.ROUTE_LABEL] = names.RETRAIN_ROUTE
        return out

    def prometheus_expr(self) -> str:
        a = f"({self.a})" if needs_parens(self.a) else self.a
        if isinstance(self.b, str):
            b = f"({self.b})" if needs_parens(self.b) else self.b
        else:
            b = _number(self.b)
        mid = f" {self.matching} " if self.matching else " "
        return f"{a} {self.op}{mid}{b}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


# --- the building blocks both paths share ---------------------------------------------------

#: Warm-up (driftloop_contracts.warmup): a version's series count only once it closed this
#: many drift windows of its own, or its online-error window holds this many of its own rows.
DRIFT_WARMED_UP = f"on(model_version) (driftloop_windows_total >= {DRIFT_WARMUP_WINDOWS})"
PERFORMANCE_WARMED_UP = (
    f"on(model_version) (driftloop_online_error_rows >= {PERFORMANCE_WARMUP_ROWS})"
)

#: Per (feature, statistic): the champion's drift confirmed by the latest two windows (the
#: smaller of their values: one window with an extreme row, which moves Wasserstein alone,
#: cannot start a retrain; seen in CI, a second run in the settle e2e), against the champion
#: the consumer measures against (it drops the previous champion's series when the reference
#: switches), once the champion is past its warm-up.
FEATURE_DRIFT = (
    "max by (feature, statistic) "
    f'(driftloop_drift_confirmed{{feature!="{PREDICTION_SERIES}"}} and {DRIFT_WARMED_UP})'
)
FEATURE_THRESHOLD = (
    "max by (feature, statistic) "
    f'(driftloop_drift_threshold{{feature!="", feature!="{PREDICTION_SERIES}"}})'
)
PREDICTION_DRIFT = (
    "max by (feature, statistic) "
    f'(driftloop_drift_confirmed{{feature="{PREDICTION_SERIES}"}} and {DRIFT_WARMED_UP})'
)
PREDICTION_THRESHOLD = (
    f'max by (feature, statistic) (driftloop_drift_threshold{{feature="{PREDICTION_SERIES}"}})'
)
#: The post-promotion watch judges its champion against the previous one (and rolls it back
#: or keeps it); meanwhile the online-error alert stays out of it, or a champion the watch is
#: about to roll back would also start a retrain (seen: the rollback e2e in CI).
UNDER_WATCH = "on(model_version) (driftloop_watch_open > 0)"
RMSE_RATIO = (
    "max by (model_version) "
    f"(driftloop_online_rmse_ratio and {PERFORMANCE_WARMED_UP} unless {UNDER_WATCH})"
)
RMSE_RATIO_THRESHOLD = 'max(driftloop_drift_threshold{statistic="rmse_ratio"})'
#: Per series, the peak of the sequential detector's CUSUM since the champion's detector started
#: (the fast path: it decides after every event, on the merged stream), past the champion's
#: warm-up. The peak, not the CUSUM itself: under a shift unlike the design's the CUSUM jumped
#: over the level and fell back within two seconds while the drift went on (CI, settle e2e), an
#: alert that fired for one evaluation; the peak latches until the reference switches. Like the
#: windowed drift alerts, and unlike PerformanceDegraded, it also judges a champion under its
#: post-promotion watch: the watch judges online error, not drift, and lasts until
#: driftloop.watch_until (minutes), too long to leave the fast path off after every promotion.
SEQUENTIAL_DRIFT = f"max by (feature) (driftloop_sequential_peak and {DRIFT_WARMED_UP})"
#: The alert level (not the detector's own alarm threshold): set by the consumer for
#: ``SEQUENTIAL_ALERT_ERT_EVENTS`` events between false alerts (docs/drift.md).
SEQUENTIAL_ALERT_THRESHOLD = "max(driftloop_sequential_alert_threshold)"

_PROM_THRESHOLD_OF = (
    '{{ with printf "max(driftloop_drift_threshold{feature=%q,statistic=%q})" '
    '$labels.feature $labels.statistic | query }}{{ . | first | value | printf "%.3f" }}{{ end }}'
)

#: Per component (job), the share of its recent Redis calls that failed, as one union: the
#: replicas' label store (the share of ``POST /feedback`` refused ``label_store_unavailable``;
#: their prediction cache is in-process and never touches Redis), the drift consumer's join store
#: (``driftloop_sink_up{sink="redis"}`` is 0 while its retry runs) and the bridge (its retry
#: worker polls Redis every half second, so its gauge is current even without webhooks).
REDIS_FAILING = (
    "sum by (job) (rate(driftloop_feedback_rejected_total"
    '{reason="label_store_unavailable"}[1m]))'
    ' / sum by (job) (rate(driftloop_http_requests_total{route="/feedback"}[1m]))'
    ' or max by (job) (1 - driftloop_sink_up{sink="redis"})'
    " or max by (job) (1 - driftloop_bridge_redis_up)"
)
#: Redis' used memory as a share of its ``maxmemory`` (read by the drift consumer from
#: ``INFO memory``; no data while Redis is unbounded). At 1 every write fails (``noeviction``).
REDIS_MEMORY_SHARE = (
    "max(driftloop_redis_used_memory_bytes) / max(driftloop_redis_maxmemory_bytes > 0)"
)
#: The share at which a person is asked to make room, while Redis still works.
REDIS_MEMORY_HIGH_SHARE = 0.8
#: How long Redis may be failing before a person is asked to act (every component rides out a
#: shorter outage on its own: see the "Redis down" row of docs/monitoring.md).
REDIS_UNAVAILABLE_FOR = "2m"

#: Refusals of ``POST /feedback`` that mean a producer has no valid credentials or sends labels
#: for predictions we never issued (a misconfigured producer, a rotated key not rolled out, or
#: someone probing): not a retryable outage (``label_store_unavailable``) nor a normal race
#: (``already_labelled``, ``feedback_token_expired``).
FEEDBACK_REFUSED_REASONS = ("missing_api_key", "invalid_api_key", "invalid_feedback_token")
#: More refusals than this in 15 minutes page someone; a handful is a typo at a terminal.
FEEDBACK_REFUSED_MAX = 20
#: Prometheus ``for`` of the retraining rules (local). Zero on purpose: the false-alarm rate is
#: set per window by the calibrated thresholds (``bench_drift.py calibrate``), and a window's
#: gauge stays up until the next window closes, so a pending period would only add waiting
#: (docs/performance.md). Production waits longer (docs/monitoring.md).
RETRAIN_PENDING = "0s"

ALERTS: tuple[AlertSpec, ...] = (
    AlertSpec(
        name="DriftFeatureHigh",
        uid="driftloop-drift-feature-high",
        group="retrain",
        a=FEATURE_DRIFT,
        op=">",
        b=FEATURE_THRESHOLD,
        pending=RETRAIN_PENDING,
        summary_prometheus=(
            "Feature {{ $labels.feature }} drifted ({{ $labels.statistic }} "
            '{{ $value | printf "%.3f" }} > ' + _PROM_THRESHOLD_OF + ")"
        ),
        summary_grafana=(
            "Feature {{ $labels.feature }} drifted ({{ $labels.statistic }} "
            '{{ printf "%.3f" $values.A.Value }} > {{ printf "%.3f" $values.B.Value }})'
        ),
        description=(
            "In each of the latest two windows the {{ $labels.statistic }} of "
            "{{ $labels.feature }} against the champion's reference profile is above its "
            "threshold (driftloop_drift_confirmed vs driftloop_drift_threshold; "
            "`driftloop thresholds show`), and the champion is past its warm-up "
            f"({DRIFT_WARMUP_WINDOWS} windows of its own). Routed to the bridge, which triggers "
            "retraining."
        ),
        panel=(names.DRIFT_DASHBOARD_UID, 2),
    ),
    AlertSpec(
        name="DriftPredictionHigh",
        uid="driftloop-drift-prediction-high",
        group="retrain",
        a=PREDICTION_DRIFT,
        op=">",
        b=PREDICTION_THRESHOLD,
        pending=RETRAIN_PENDING,
        summary_prometheus=(
            "Prediction drift ({{ $labels.statistic }} "
            '{{ $value | printf "%.3f" }} > ' + _PROM_THRESHOLD_OF + ")"
        ),
        summary_grafana=(
            "Prediction drift ({{ $labels.statistic }} "
            '{{ printf "%.3f" $values.A.Value }} > {{ printf "%.3f" $values.B.Value }})'
        ),
        description=(
            "The distribution of the champion's predictions moved away from the predictions on "
            "its training data ({{ $labels.statistic }} above its threshold in each of the "
            "latest two windows), past its warm-up "
            f"({DRIFT_WARMUP_WINDOWS} windows of its own)."
        ),
        panel=(names.DRIFT_DASHBOARD_UID, 20),
    ),
    AlertSpec(
        name="PerformanceDegraded",
        uid="driftloop-performance-degraded",
        group="retrain",
        a=RMSE_RATIO,
        op=">",
        b=RMSE_RATIO_THRESHOLD,
        matching="on() group_left()",
        pending=RETRAIN_PENDING,
        summary_prometheus=(
            "Online RMSE of v{{ $labels.model_version }} is "
            '{{ $value | printf "%.2f" }}x its holdout RMSE'
        ),
        summary_grafana=(
            "Online RMSE of v{{ $labels.model_version }} is "
            '{{ printf "%.2f" $values.A.Value }}x its holdout RMSE '
            '(threshold {{ printf "%.2f" $values.B.Value }})'
        ),
        description=(
            "Rolling RMSE of predictions joined with their feedback, divided by the model's "
            'training holdout RMSE, is above the "rmse_ratio" threshold; judged only once the '
            f"version's own window holds {PERFORMANCE_WARMUP_ROWS} labelled rows (warm-up), and "
            "not while the version is under its post-promotion watch (the watch compares it with "
            "the previous champion and rolls it back or keeps it; docs/retraining.md)."
        ),
        panel=(names.DRIFT_DASHBOARD_UID, 31),
    ),
    AlertSpec(
        name="SequentialDriftHigh",
        uid="driftloop-sequential-drift-high",
        group="retrain",
        a=SEQUENTIAL_DRIFT,
        op=">",
        b=SEQUENTIAL_ALERT_THRESHOLD,
        matching="on() group_left()",
        pending=RETRAIN_PENDING,
        summary_prometheus=(
            "Sequential drift detector: {{ $labels.feature }} CUSUM peaked at "
            '{{ $value | printf "%.1f" }} > '
            '{{ with query "max(driftloop_sequential_alert_threshold)" }}'
            '{{ . | first | value | printf "%.1f" }}{{ end }}'
        ),
        summary_grafana=(
            "Sequential drift detector: {{ $labels.feature }} CUSUM peaked at "
            '{{ printf "%.1f" $values.A.Value }} > {{ printf "%.1f" $values.B.Value }}'
        ),
        description=(
            "The CUSUM of {{ $labels.feature }} on the merged stream of every partition "
            "has crossed the alert level (driftloop_sequential_alert_threshold: set for "
            f"{SEQUENTIAL_ALERT_ERT_EVENTS:,.0f} events between false alerts, widened for a "
            "small reference) since the champion's detector started (driftloop_sequential_peak,"
            " latched until a promotion switches the reference), past the champion's warm-up "
            f"({DRIFT_WARMUP_WINDOWS} windows of its own). Routed to the bridge, which "
            "triggers retraining; docs/drift.md, 'Sequential detection on the merged stream'."
        ),
    ),
    # --- operational: never routed to retraining -------------------------------------------
    AlertSpec(
        name="ReplicaDown",
        uid="driftloop-replica-down",
        group="operations",
        a='up{job="model-api"}',
        op="<",
        b=1,
        pending="15s",
        grafana_pending="20s",
        severity="critical",
        summary_prometheus="Model replica {{ $labels.instance }} is not answering /metrics",
        summary_grafana="Model replica {{ $labels.instance }} is not answering /metrics",
        description="nginx retries on the other replicas; capacity is reduced.",
        no_data="Alerting",
        panel=(names.MODEL_SERVICE_DASHBOARD_UID, 1),
    ),
    AlertSpec(
        name="ServiceDown",
        uid="driftloop-service-down",
        group="operations",
        a='up{job=~"drift-consumer|bridge"}',
        op="<",
        b=1,
        pending="15s",
        grafana_pending="20s",
        severity="critical",
        summary_prometheus="{{ $labels.job }} ({{ $labels.instance }}) is not answering /metrics",
        summary_grafana="{{ $labels.job }} ({{ $labels.instance }}) is not answering /metrics",
        description="Without the drift consumer nothing is measured; without the bridge no alert "
        "reaches Airflow.",
        no_data="Alerting",
    ),
    AlertSpec(
        name="DriftConsumerStalled",
        uid="driftloop-drift-consumer-stalled",
        group="operations",
        a=(
            "time() - max(driftloop_last_commit_timestamp_seconds) and on() "
            f'(sum(rate(driftloop_events_published_total{{topic="{PREDICTIONS_TOPIC}"}}[2m])) > 0)'
        ),
        op=">",
        b=30,
        pending="10s",
        summary_prometheus='No offset committed for {{ $value | printf "%.0f" }} s '
        "while predictions are being published",
        summary_grafana='No offset committed for {{ printf "%.0f" $values.A.Value }} s '
        "while predictions are being published",
        description="The drift consumer is not making progress (sink outage, stuck rebalance).",
        panel=(names.DRIFT_DASHBOARD_UID, 41),
    ),
    AlertSpec(
        name="DriftConsumerLagging",
        uid="driftloop-drift-consumer-lagging",
        group="operations",
        a="sum by (topic) (driftloop_consumer_lag_events)",
        op=">",
        b=5000,
        pending="30s",
        summary_prometheus='{{ $value | printf "%.0f" }} {{ $labels.topic }} events behind',
        summary_grafana='{{ printf "%.0f" $values.A.Value }} {{ $labels.topic }} events behind',
        description="Approximate (the local broker's high watermarks are approximate).",
        panel=(names.DRIFT_DASHBOARD_UID, 42),
    ),
    AlertSpec(
        name="DriftConsumerRecordsLost",
        uid="driftloop-drift-consumer-records-lost",
        group="operations",
        a=(
            'sum by (topic) (increase(driftloop_fetch_gaps_total{outcome="lost"}[1h]))'
            " or sum by (topic) (driftloop_consumer_lag_events) * 0"
        ),
        op=">",
        b=0,
        severity="critical",
        summary_prometheus="The drift consumer read past missing {{ $labels.topic }} records",
        summary_grafana="The drift consumer read past missing {{ $labels.topic }} records",
        description="A fetch kept skipping an offset past the patience "
        "(DRIFTLOOP_DRIFT_CONSUMER_FETCH_GAP_PATIENCE_SECONDS): those events never reached the "
        "windows or the labelled-data log. See the consumer's fetch_gap_accepted_records_lost log.",
        panel=(names.DRIFT_DASHBOARD_UID, 42),
    ),
    AlertSpec(
        name="KafkaPublishFailures",
        uid="driftloop-kafka-publish-failures",
        group="operations",
        a=(
            "sum by (replica) (increase(driftloop_events_failed_total[1m]))"
            " or sum by (replica) (driftloop_events_buffered) * 0"
        ),
        op=">",
        b=0,
        pending="10s",
        summary_prometheus="Replica {{ $labels.replica }} fails to deliver events to Kafka",
        summary_grafana="Replica {{ $labels.replica }} fails to deliver events to Kafka",
        description="Events are re-queued, not lost, until their topic's buffer is full.",
        panel=(names.MODEL_SERVICE_DASHBOARD_UID, 8),
    ),
    AlertSpec(
        name="KafkaEventsDropped",
        uid="driftloop-kafka-events-dropped",
        group="operations",
        a=(
            "sum by (replica) (increase(driftloop_events_dropped_total[1m]))"
            " or sum by (replica) (driftloop_events_buffered) * 0"
        ),
        op=">",
        b=0,
        severity="critical",
        summary_prometheus="Replica {{ $labels.replica }} dropped events (a topic's buffer full)",
        summary_grafana="Replica {{ $labels.replica }} dropped events (a topic's buffer full)",
        description="Dropped events never reach drift detection or the labelled-data log.",
        panel=(names.MODEL_SERVICE_DASHBOARD_UID, 8),
    ),
    AlertSpec(
        name="ShadowFailing",
        uid="driftloop-shadow-failing",
        group="operations",
        a="sum by (replica, reason) (increase(driftloop_shadow_failures_total[1m]))",
        op=">",
        b=0,
        pending="2m",
        grafana_pending="2m",
        summary_prometheus="Replica {{ $labels.replica }} serves the watch without its shadow"
        " ({{ $labels.reason }})",
        summary_grafana="Replica {{ $labels.replica }} serves the watch without its shadow"
        " ({{ $labels.reason }})",
        description="During the watch after a promotion the previous champion could not be "
        "loaded (load_error, or the artifact was refused: see shadow_load_failed in the "
        "replica's log) or could not predict (predict_error, non_finite, overloaded): requests "
        "are served, but their events lack the comparison a rollback is decided on. "
        "services/model_api/README.md, 'Shadow during the watch'.",
    ),
    AlertSpec(
        name="RedisUnavailable",
        uid="driftloop-redis-unavailable",
        group="operations",
        a=REDIS_FAILING,
        op=">",
        b=0.5,
        pending=REDIS_UNAVAILABLE_FOR,
        grafana_pending=REDIS_UNAVAILABLE_FOR,
        severity="critical",
        summary_prometheus="{{ $labels.job }} cannot reach Redis",
        summary_grafana="{{ $labels.job }} cannot reach Redis",
        description=f"Most of its Redis calls have failed for {REDIS_UNAVAILABLE_FOR}. "
        "Nothing is lost while "
        "Redis is down, but the loop is paused: replicas refuse labels with 503 (the producers retry), the drift "
        "consumer stops consuming (labels and drift wait, ready=false), the bridge answers 503 "
        "to alerts (the senders retry). Start Redis; everything resumes on its own.",
    ),
    AlertSpec(
        name="RedisMemoryHigh",
        uid="driftloop-redis-memory-high",
        group="operations",
        a=REDIS_MEMORY_SHARE,
        op=">",
        b=REDIS_MEMORY_HIGH_SHARE,
        pending="10m",
        grafana_pending="10m",
        summary_prometheus="Redis uses {{ $value | humanizePercentage }} of its maxmemory",
        summary_grafana="Redis uses {{ humanizePercentage $values.A.Value }} of its maxmemory",
        description="Redis keeps the join keys, label claims and watch rows until their TTLs "
        "and evicts nothing; at maxmemory every write fails and the loop pauses (labels "
        "refused with 503, RedisUnavailable). Raise maxmemory (redis-conf/limits.conf) or "
        "shorten the join and token TTLs for this traffic: docs/operations.md, 'Redis'.",
    ),
    AlertSpec(
        name="SharedWindowsLate",
        uid="driftloop-shared-windows-late",
        group="operations",
        a="sum(increase(driftloop_shared_slots_late_total[10m]))",
        op=">",
        b=0,
        summary_prometheus="Drift windows of the consumer group were merged late",
        summary_grafana="Drift windows of the consumer group were merged late",
        description="With DRIFTLOOP_DRIFT_CONSUMER_SHARED_WINDOWS the group's windows close only "
        "when every partition has passed a slot; a slot closed more than "
        "DRIFTLOOP_DRIFT_CONSUMER_SHARED_LATE_SECONDS after its end, so a partition was unowned "
        "or far behind and drift detection waited for it. Check the drift consumers "
        "(`driftloop status`, their readiness and lag): docs/drift.md, 'Windows merged across the consumer group'.",
    ),
    AlertSpec(
        name="ModelArtifactRejected",
        uid="driftloop-model-artifact-rejected",
        group="operations",
        a=(
            "sum by (replica, reason) "
            '(increase(driftloop_model_load_failures_total{reason!="error"}[5m]))'
            " or sum by (replica) (driftloop_model_info) * 0"
        ),
        op=">",
        b=0,
        severity="critical",
        summary_prometheus="Replica {{ $labels.replica }} refused a model: {{ $labels.reason }}",
        summary_grafana="Replica {{ $labels.replica }} refused a model: {{ $labels.reason }}",
        description="The version the champion alias names failed the artifact checks (an "
        "untrusted type, a digest that does not match the registered one, a pre-skops pickle); "
        "the replica keeps serving its previous model. Read the replica's model_rejected log, "
        "then docs/security.md ('Model artifacts'): someone wrote to MLflow or its artifact "
        "store, or the champion predates skops (run `driftloop bootstrap`).",
        panel=(names.MODEL_SERVICE_DASHBOARD_UID, 7),
    ),
    AlertSpec(
        name="EventsLost",
        uid="driftloop-events-lost",
        group="operations",
        a=(
            "sum by (replica, topic) (increase(driftloop_events_lost_total[1h]))"
            " or sum by (replica, topic) (driftloop_events_buffered) * 0"
        ),
        op=">",
        b=0,
        summary_prometheus='Replica {{ $labels.replica }} lost {{ $value | printf "%.0f" }} '
        "{{ $labels.topic }} events when its process died",
        summary_grafana='Replica {{ $labels.replica }} lost {{ printf "%.0f" $values.A.Value }} '
        "{{ $labels.topic }} events when its process died",
        description="Events answered 200/202 but not yet delivered to Kafka when the replica was "
        "killed (SIGKILL, OOM, crash), and not found on the topic by its restart: they never reach "
        "drift detection or the labelled-data log. At most the topic's buffer. The replica's "
        "events_lost_by_killed_process log names them; find why the process died.",
        panel=(names.MODEL_SERVICE_DASHBOARD_UID, 8),
    ),
    AlertSpec(
        name="BridgeDeadLetters",
        uid="driftloop-bridge-dead-letters",
        group="operations",
        a="max(driftloop_bridge_dead_letters)",
        op=">",
        b=0,
        summary_prometheus='{{ $value | printf "%.0f" }} retraining trigger(s) given up on',
        summary_grafana='{{ printf "%.0f" $values.A.Value }} retraining trigger(s) given up on',
        description="See the bridge's GET /dead-letters for the reason of each.",
        panel=(names.LOOP_DASHBOARD_UID, 6),
    ),
    AlertSpec(
        # No route label: an alert about retraining too often must never trigger a retrain.
        name="RetrainingChurn",
        uid="driftloop-retraining-churn",
        group="operations",
        a="max(driftloop_bridge_brake_engaged)",
        op=">",
        b=0,
        severity="critical",
        summary_prometheus="Retraining braked: the loop triggered too many retrains in a window",
        summary_grafana="Retraining braked: the loop triggered too many retrains in a window",
        description="The bridge's circuit breaker is engaged: it accepted "
        "DRIFTLOOP_BRIDGE_BRAKE_MAX_TRIGGERS retraining triggers within "
        "DRIFTLOOP_BRIDGE_BRAKE_WINDOW_SECONDS and now answers every further alert `braked` "
        "(no DAG run) until a person resets it or DRIFTLOOP_BRIDGE_BRAKE_HOLD_SECONDS pass. "
        "See the triggers with `driftloop loop brake` and the bridge's GET /decisions, find why "
        "the loop does not settle (docs/retraining.md, 'Brake'), then `driftloop loop reset-brake`.",
    ),
    AlertSpec(
        # No route label: a rollback is the loop correcting itself; a person finds out why the
        # challenger got through, but no retrain must follow from this alert.
        name="ModelRolledBack",
        uid="driftloop-model-rolled-back",
        group="operations",
        a='sum(increase(driftloop_watch_decisions_total{outcome="rolled_back"}[1h]))',
        op=">",
        b=0,
        summary_prometheus="The new champion was rolled back to the previous version",
        summary_grafana="The new champion was rolled back to the previous version",
        description="During its post-promotion watch the new champion's online RMSE exceeded "
        "the previous champion's by more than DRIFTLOOP_DRIFT_CONSUMER_WATCH_RMSE_MARGIN on at "
        "least DRIFTLOOP_DRIFT_CONSUMER_WATCH_MIN_ROWS labelled requests, so the drift consumer "
        "moved alias champion back. The figures are on both MLflow versions (tags "
        "driftloop.rollback.*) and in the ModelPromoted reason; find why the challenger passed "
        "validation (docs/retraining.md, 'Watch and rollback'). Fires for an hour.",
    ),
    AlertSpec(
        name="WatchDecisionStalled",
        uid="driftloop-watch-decision-stalled",
        group="operations",
        a=(
            "sum by (step) (increase(driftloop_watch_failures_total"
            '{step=~"moved|tagged|shadow_removed|announced"}[2m]))'
        ),
        op=">",
        b=0,
        pending="2m",
        summary_prometheus="A post-promotion watch decision cannot be carried out "
        "(step {{ $labels.step }} keeps failing)",
        summary_grafana="A post-promotion watch decision cannot be carried out "
        "(step {{ $labels.step }} keeps failing)",
        description="The decision (rollback or kept) is recorded in Redis and retried, not "
        "lost, but MLflow (alias move, tags) or Kafka (the rollback's ModelPromoted) has been "
        "refusing it for minutes: a worse champion may still be serving. `driftloop logs "
        "mlflow`, `driftloop logs drift-consumer` (event watch_step_failed).",
    ),
    AlertSpec(
        name="DeadLettersPublished",
        uid="driftloop-dead-letters-published",
        group="operations",
        a=('sum by (topic) (increase(driftloop_dead_letters_total{outcome="published"}[15m]))'),
        op=">",
        b=0,
        summary_prometheus='{{ $value | printf "%.0f" }} bad {{ $labels.topic }} record(s) '
        "dead-lettered in 15 min",
        summary_grafana='{{ printf "%.0f" $values.A.Value }} bad {{ $labels.topic }} record(s) '
        "dead-lettered in 15 min",
        description="Some producer writes records driftloop cannot use; they were skipped. "
        "`driftloop dead-letters --topic <topic>` shows each with its origin and reason.",
    ),
    AlertSpec(
        name="DeadLettersLost",
        uid="driftloop-dead-letters-lost",
        group="operations",
        a=('sum by (topic) (increase(driftloop_dead_letters_total{outcome="failed"}[15m]))'),
        op=">",
        b=0,
        summary_prometheus='{{ $value | printf "%.0f" }} bad {{ $labels.topic }} record(s) '
        "could not be dead-lettered",
        summary_grafana='{{ printf "%.0f" $values.A.Value }} bad {{ $labels.topic }} record(s) '
        "could not be dead-lettered",
        description="The <topic>.dlq topic refused writes past the retries: the records were "
        "skipped and are only in the drift consumer's log (event dead_letter_lost).",
    ),
    AlertSpec(
        name="RegistryUnreachable",
        uid="driftloop-registry-unreachable",
        group="operations",
        a="sum by (replica) (increase(driftloop_model_alias_check_failures_total[5m]))",
        op=">",
        b=2,
        pending="5m",
        grafana_pending="5m",
        summary_prometheus="Replica {{ $labels.replica }} cannot read the model registry",
        summary_grafana="Replica {{ $labels.replica }} cannot read the model registry",
        description="MLflow does not answer the replica's champion alias reads: it keeps "
        "serving the model it has, but a promotion or a rollback will not reach it until MLflow "
        "is back (then it follows by itself). Start MLflow; see docs/faults.md, 'MLflow down'.",
    ),
    AlertSpec(
        name="FeedbackRefused",
        uid="driftloop-feedback-refused",
        group="operations",
        a=(
            "sum by (reason) (increase(driftloop_feedback_rejected_total"
            f'{{reason=~"{"|".join(FEEDBACK_REFUSED_REASONS)}"}}[15m]))'
        ),
        op=">",
        b=FEEDBACK_REFUSED_MAX,
        summary_prometheus='{{ $value | printf "%.0f" }} labels refused as {{ $labels.reason }} '
        "in 15 min",
        summary_grafana='{{ printf "%.0f" $values.A.Value }} labels refused as '
        "{{ $labels.reason }} in 15 min",
        description="A feedback producer has no valid X-API-Key or sends labels without a "
        "valid feedback_token: its labels are lost to retraining until it is fixed (or someone "
        "is probing /feedback). See docs/security.md.",
    ),
)

GROUP_TITLES = {"retrain": "driftloop-retrain", "operations": "driftloop-operations"}


# --- Prometheus ------------------------------------------------------------------------------


def prometheus_rules() -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in ALERTS:
        rule: dict[str, Any] = {"alert": spec.name, "expr": spec.prometheus_expr()}
        if spec.pending != "0s":
            rule["for"] = spec.pending
        rule["labels"] = spec.labels
        rule["annotations"] = {
            "summary": spec.summary_prometheus,
            "description": spec.description,
        }
        groups.setdefault(GROUP_TITLES[spec.group], []).append(rule)
    return {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}


# --- Grafana ---------------------------------------------------------------------------------


def _prometheus_query(ref: str, expr: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": GRAFANA_RELATIVE_FROM, "to": 0},
        "datasourceUid": names.PROMETHEUS_UID,
        "model": {
            "refId": ref,
            "datasource": dict(names.PROMETHEUS),
            "editorMode": "code",
            "expr": expr,
            "instant": True,
            "range": False,
            "intervalMs": 1000,
            "maxDataPoints": 43200,
            "legendFormat": "__auto",
        },
    }


def _expression(ref: str, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": 0, "to": 0},
        "datasourceUid": names.EXPRESSION_UID,
        "model": {"refId": ref, "datasource": dict(names.EXPRESSION), **model},
    }


def grafana_rule(spec: AlertSpec) -> dict[str, Any]:
    data = [_prometheus_query("A", spec.a)]
    if isinstance(spec.b, str):
        data.append(_prometheus_query("B", spec.b))
        data.append(_expression("C", {"type": "math", "expression": f"$A {spec.op} $B"}))
        condition = "C"
    else:
        evaluator = {"type": "gt" if spec.op == ">" else "lt", "params": [spec.b]}
        data.append(
            _expression(
                "B",
                {"type": "threshold", "expression": "A", "conditions": [{"evaluator": evaluator}]},
            )
        )
        condition = "B"
    rule: dict[str, Any] = {
        "uid": spec.uid,
        "title": spec.name,
        "condition": condition,
        "data": data,
        "noDataState": spec.no_data,
        "execErrState": "Error",
        "for": spec.grafana_pending,
        "annotations": {"summary": spec.summary_grafana, "description": spec.description},
        "labels": spec.labels,
        "isPaused": False,
    }
    if spec.panel:
        rule["dashboardUid"], rule["panelId"] = spec.panel
    return rule


def grafana_rules() -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in ALERTS:
        groups.setdefault(GROUP_TITLES[spec.group], []).append(grafana_rule(spec))
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": name,
                "folder": names.FOLDER_TITLE,
                "interval": GRAFANA_INTERVAL,
                "rules": rules,
            }
            for name, rules in groups.items()
        ],
    }
