"""The three dashboards: Model service, Drift, Loop.

Panel ids are fixed (alert rules link to them). Queries follow two conventions the live test
relies on:

* counters that only exist after their first event (failures, drops, invalid records) are
  zero-filled with ``or`` so a healthy stack shows 0, not "No data";
* drift panels draw the live threshold gauge (refId B) as a dashed line next to the value.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from driftloop_contracts import DEFAULT_BASE_PORT, PREDICTION_SERIES, PortPlan

from . import names
from .panels import (
    alertlist,
    dashboard,
    heatmap,
    influx,
    link,
    prom,
    query_variable,
    stat,
    state_timeline,
    table,
    text,
    textbox_variable,
    thresholds,
    timeseries,
)

RATE = "$__rate_interval"
_LOCAL = PortPlan(DEFAULT_BASE_PORT)


def _rate(selector: str) -> str:
    return f"rate({selector}[{RATE}])"


# --- Model service ------------------------------------------------------------------------


def model_service() -> Dashboard:
    rep = 'replica=~"$replica"'
    req = f"driftloop_http_requests_total{{{rep}}}"
    lat = f'driftloop_http_request_duration_seconds_bucket{{route=~"/predict.*", {rep}}}'

    def error_ratio(cls: str) -> str:
        errors = f'driftloop_http_requests_total{{status=~"{cls}", {rep}}}'
        return (
            f"(sum by (replica) ({_rate(errors)}) or sum by (replica) ({_rate(req)}) * 0)"
            f" / sum by (replica) ({_rate(req)})"
        )

    def zero_filled(metric: str) -> str:
        """Per (replica, topic), 0 until the first event: every publish buffer has a series."""
        return (
            f"sum by (replica, topic) ({_rate(f'{metric}{{{rep}}}')})"
            f" or sum by (replica, topic) (driftloop_events_buffered{{{rep}}}) * 0"
        )

    cache = f"driftloop_cache_requests_total{{{rep}}}"
    hits = f'driftloop_cache_requests_total{{result="hit", {rep}}}'
    predict = f'driftloop_http_requests_total{{route=~"/predict.*", {rep}}}'
    lay = dashboard(
        names.MODEL_SERVICE_DASHBOARD_UID,
        "driftloop · Model service",
        "The serving replicas behind nginx: traffic, latency, errors, model versions, event "
        "publishing to Kafka and the prediction cache.",
        variables=[
            query_variable(
                "replica", "Replica", "label_values(driftloop_http_requests_total, replica)"
            ),
        ],
    )
    lay.row(100, "Traffic")
    lay.add(
        state_timeline(
            1,
            "Replicas answering scrapes",
            [prom('up{job="model-api"}', "{{instance}}")],
            description="1 = Prometheus scraped the replica; ReplicaDown fires on 0.",
            mappings={"1": ("up", "green"), "0": ("down", "red")},
        ),
        w=8,
    )
    lay.add(
        timeseries(
            2,
            "Prediction requests/s by replica",
            [prom(f"sum by (replica) ({_rate(predict)})", "{{replica}}")],
            unit="reqps",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            3,
            "Prediction latency (all replicas)",
            [
                prom(
                    f"histogram_quantile({q}, sum by (le) ({_rate(lat)}))",
                    f"p{round(q * 100)}",
                    ref,
                )
                for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
            ],
            unit="s",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            4,
            "p99 latency by replica",
            [prom(f"histogram_quantile(0.99, sum by (replica, le) ({_rate(lat)}))", "{{replica}}")],
            unit="s",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            5,
            "4xx / 5xx share of responses by replica",
            [
                prom(error_ratio("4.."), "{{replica}} 4xx", "A"),
                prom(error_ratio("5.."), "{{replica}} 5xx", "B"),
            ],
            unit="percentunit",
            description="4xx: rejected input (422 names the field). 5xx should stay at 0.",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            7,
            "Model loads by outcome",
            [
                prom(
                    f"sum by (replica, outcome) (increase(driftloop_model_reloads_total{{{rep}}}[{RATE}]))",
                    "{{replica}} {{outcome}}",
                )
            ],
            bars=True,
        ),
        w=8,
    )
    lay.row(101, "Model version")
    lay.add(
        state_timeline(
            6,
            "Model version per replica",
            [
                prom(
                    f"max by (replica, model_version) (driftloop_model_info{{{rep}}})",
                    "{{replica}} · v{{model_version}}",
                )
            ],
            description="One row per (replica, version): a promotion shows as one row ending and "
            "another starting on every replica.",
        ),
        w=24,
        h=6,
    )
    lay.row(102, "Events to Kafka")
    lay.add(
        timeseries(
            8,
            "Publish failures and drops /s",
            [
                prom(
                    zero_filled("driftloop_events_failed_total"),
                    "{{replica}} {{topic}} failed",
                    "A",
                ),
                prom(
                    zero_filled("driftloop_events_dropped_total"),
                    "{{replica}} {{topic}} dropped",
                    "B",
                ),
                prom(
                    zero_filled("driftloop_events_lost_total"),
                    "{{replica}} {{topic}} lost (process killed)",
                    "C",
                ),
            ],
            unit="ops",
            description="Failed deliveries are re-queued; drops are lost (that topic's buffer "
            "full: each topic has its own, so a flood of predictions cannot drop feedback). "
            "Lost: pending when the process was killed, counted by its restart. "
            "Alerts: KafkaPublishFailures, KafkaEventsDropped, EventsLost.",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            9,
            "Events published /s",
            [
                prom(
                    f"sum by (replica, topic) ({_rate(f'driftloop_events_published_total{{{rep}}}')})",
                    "{{replica}} {{topic}}",
                )
            ],
            unit="ops",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            10,
            "Publish buffers (events not yet acknowledged)",
            [
                prom(
                    f"sum by (replica, topic) (driftloop_events_buffered{{{rep}}})",
                    "{{replica}} {{topic}}",
                )
            ],
            description="One bounded buffer per topic (DRIFTLOOP_MODEL_API_PUBLISH_BUFFER_SIZE "
            "for predictions, DRIFTLOOP_MODEL_API_PUBLISH_FEEDBACK_BUFFER_SIZE for feedback).",
        ),
        w=8,
    )
    lay.row(103, "Prediction cache")
    lay.add(
        timeseries(
            11,
            "Cache hit ratio",
            [
                prom(
                    f"(sum by (replica) ({_rate(hits)})"
                    f" or sum by (replica) ({_rate(cache)}) * 0)"
                    f" / sum by (replica) ({_rate(cache)})",
                    "{{replica}}",
                )
            ],
            unit="percentunit",
            maximum=1,
        ),
        w=12,
    )
    lay.add(
        timeseries(
            12,
            "Cache look-ups /s by result",
            [prom(f"sum by (result) ({_rate(cache)})", "{{result}}")],
            unit="ops",
            stack=True,
        ),
        w=12,
    )
    return lay.dashboard.build()


# --- Drift ---------------------------------------------------------------------------------


def drift() -> Dashboard:
    feat = 'feature=~"$feature"'
    ver = 'model_version=~"$model_version"'
    lay = dashboard(
        names.DRIFT_DASHBOARD_UID,
        "driftloop · Drift",
        "Per-feature and prediction drift of the champion against its reference profile, with "
        "the live thresholds; online error from feedback; window history from InfluxDB.",
        variables=[
            query_variable(
                "statistic",
                "Statistic",
                'label_values(driftloop_drift_threshold{feature!=""}, statistic)',
            ),
            query_variable(
                "feature",
                "Feature",
                f'label_values(driftloop_drift_value{{feature!="{PREDICTION_SERIES}"}}, feature)',
            ),
            query_variable(
                "model_version",
                "Model version",
                "label_values(driftloop_drift_value, model_version)",
            ),
            textbox_variable(
                "drift_consumer_url",
                "Drift consumer URL",
                f"http://localhost:{_LOCAL.drift_consumer}",
            ),
        ],
        links=[
            link(
                "Latest Evidently report",
                url="${drift_consumer_url}/reports/latest",
                icon="doc",
                tooltip="Evidently DataDriftPreset of the latest window vs the reference",
                new_tab=True,
            )
        ],
    )
    lay.row(200, "Feature drift vs the champion's reference (latest window)")
    panel = timeseries(
        2,
        "Feature drift · $statistic",
        [
            prom(
                f'max by (feature) (driftloop_drift_value{{statistic="$statistic", {feat}, {ver}}})',
                "{{feature}}",
                "A",
            ),
            prom(
                f'max by (feature) (driftloop_drift_threshold{{statistic="$statistic", {feat}}})',
                "{{feature}} threshold",
                "B",
            ),
        ],
        description="Solid: the statistic of each feature in the latest closed window. Dashed: "
        "the live threshold (driftloop_drift_threshold; change it with `driftloop thresholds "
        "set`). DriftFeatureHigh fires while a solid line is above its dashed line.",
        threshold_ref="B",
    )
    panel = panel.repeat("statistic").repeat_direction("h").max_per_row(3)
    lay.add(panel, w=8, h=9)
    lay.newline()
    lay.add(
        timeseries(
            3,
            "Drift ÷ threshold, every feature and statistic (1 = alert)",
            [
                prom(
                    f"max by (feature, statistic) (driftloop_drift_value{{{feat}, {ver}}})"
                    " / on(feature, statistic) "
                    "max by (feature, statistic) (driftloop_drift_threshold)",
                    "{{feature}} {{statistic}}",
                )
            ],
            unit="none",
            threshold_steps=thresholds(("green", None), ("red", 1)),
        ),
        w=16,
        h=8,
    )
    lay.add(
        timeseries(
            4,
            "Drift share (features over a threshold)",
            [
                prom(
                    f"max by (model_version) (driftloop_drift_share{{{ver}}})",
                    "v{{model_version}}",
                    "A",
                ),
                prom('max(driftloop_drift_threshold{statistic="drift_share"})', "threshold", "B"),
            ],
            unit="percentunit",
            maximum=1,
            threshold_ref="B",
        ),
        w=8,
        h=8,
    )
    lay.row(201, "Predictions")
    lay.add(
        timeseries(
            20,
            "Prediction drift vs the reference",
            [
                prom(
                    f'max by (statistic) (driftloop_drift_value{{feature="{PREDICTION_SERIES}", {ver}}})'
                    " and on(statistic) "
                    f'max by (statistic) (driftloop_drift_threshold{{feature="{PREDICTION_SERIES}"}})',
                    "{{statistic}}",
                    "A",
                ),
                prom(
                    f'max by (statistic) (driftloop_drift_threshold{{feature="{PREDICTION_SERIES}"}})',
                    "{{statistic}} threshold",
                    "B",
                ),
            ],
            description="The served predictions' distribution against the predictions on the "
            "champion's training data (its reference profile). DriftPredictionHigh.",
            threshold_ref="B",
        ),
        w=8,
    )
    lay.add(
        heatmap(
            21,
            "Served prediction distribution",
            prom(
                f"sum by (le) (increase(driftloop_prediction_usd_bucket[{RATE}]))",
                "{{le}}",
                fmt="heatmap",
            ),
            unit="currencyUSD",
            description="Histogram of served predictions over time; a shift here is what the "
            "prediction drift statistics measure.",
        ),
        w=8,
    )
    bucket = f"sum by (le) ({_rate('driftloop_prediction_usd_bucket')})"
    lay.add(
        timeseries(
            22,
            "Served predictions: 10th / 50th / 90th percentile",
            [
                prom(f"histogram_quantile({q}, {bucket})", f"p{round(q * 100)}", ref)
                for q, ref in ((0.1, "A"), (0.5, "B"), (0.9, "C"))
            ],
            unit="currencyUSD",
        ),
        w=8,
    )
    lay.row(202, "Online error (predictions joined with feedback)")
    lay.add(
        timeseries(
            30,
            "Online RMSE, MAE and bias",
            [
                prom(
                    f"max by (model_version) (driftloop_online_rmse_usd{{{ver}}})",
                    "RMSE v{{model_version}}",
                    "A",
                ),
                prom(
                    f"max by (model_version) (driftloop_online_mae_usd{{{ver}}})",
                    "MAE v{{model_version}}",
                    "B",
                ),
                prom(
                    f"max by (model_version) (driftloop_online_bias_usd{{{ver}}})",
                    "bias v{{model_version}}",
                    "C",
                ),
            ],
            unit="currencyUSD",
            minimum=None,
        ),
        w=8,
    )
    lay.add(
        timeseries(
            31,
            "RMSE ÷ training holdout RMSE",
            [
                prom(
                    f"max by (model_version) (driftloop_online_rmse_ratio{{{ver}}})",
                    "v{{model_version}}",
                    "A",
                ),
                prom('max(driftloop_drift_threshold{statistic="rmse_ratio"})', "threshold", "B"),
            ],
            description="PerformanceDegraded fires above the dashed threshold.",
            threshold_ref="B",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            32,
            "Online error history (InfluxDB)",
            [
                influx(
                    'SELECT mean("rmse_usd") AS "rmse", mean("mae_usd") AS "mae" '
                    'FROM "online_error" WHERE "model_version" =~ /^$model_version$/ AND '
                    '$timeFilter GROUP BY time($__interval), "model_version" fill(none)',
                    "$col v$tag_model_version",
                )
            ],
            unit="currencyUSD",
        ),
        w=8,
    )
    lay.row(203, "Window history (InfluxDB)")
    lay.add(
        timeseries(
            35,
            "Drift per window",
            [
                influx(
                    'SELECT max("value") FROM "drift" WHERE "statistic" =~ /^$statistic$/ AND '
                    '"feature" =~ /^$feature$/ AND "model_version" =~ /^$model_version$/ AND '
                    '$timeFilter GROUP BY time($__interval), "feature", "statistic" fill(none)',
                    "$tag_feature $tag_statistic",
                )
            ],
            description="Every closed window (all partitions), from the consumer's InfluxDB sink.",
        ),
        w=12,
    )
    lay.add(
        timeseries(
            36,
            "Drift share per window and partition",
            [
                influx(
                    'SELECT max("drift_share") FROM "drift_window" WHERE '
                    '"model_version" =~ /^$model_version$/ AND $timeFilter '
                    'GROUP BY time($__interval), "partition" fill(none)',
                    "partition $tag_partition",
                )
            ],
            unit="percentunit",
            maximum=1,
            description=(
                "Partition -1 is a window merged over every partition a consumer owns (the"
                " default); others are per-partition windows (MERGE_WINDOW_SECONDS=0)."
            ),
        ),
        w=12,
    )
    lay.add(
        table(
            37,
            "Latest windows",
            [
                influx(
                    'SELECT "events", "drift_share", "drifted_series", "declared", '
                    '"first_offset", "last_offset" FROM "drift_window" WHERE $timeFilter '
                    'GROUP BY "model_version", "partition" ORDER BY time DESC LIMIT 5',
                    table=True,
                )
            ],
        ),
        w=24,
        h=7,
    )
    lay.row(204, "Drift consumer")
    consumed = _rate("driftloop_events_consumed_total")
    lay.add(
        timeseries(
            40,
            "Events consumed and invalid /s",
            [
                prom(f"sum by (topic) ({consumed})", "{{topic}}", "A"),
                prom(
                    f"sum by (topic, reason) ({_rate('driftloop_events_invalid_total')})"
                    f" or sum by (topic) ({consumed}) * 0",
                    "invalid {{topic}} {{reason}}",
                    "B",
                ),
            ],
            unit="ops",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            41,
            "Seconds since the last offset commit",
            [prom("time() - max(driftloop_last_commit_timestamp_seconds)", "since commit")],
            unit="s",
            threshold_steps=thresholds(("green", None), ("red", 30)),
            description="DriftConsumerStalled fires above 30 s while predictions are published.",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            42,
            "Consumer lag (events, approximate)",
            [prom("sum by (topic) (driftloop_consumer_lag_events)", "{{topic}}")],
        ),
        w=8,
    )
    lay.add(
        timeseries(
            43,
            "Sink write failures /s",
            [
                prom(
                    f"sum by (sink) ({_rate('driftloop_sink_failures_total')})"
                    f" or on() sum({consumed}) * 0",
                    "{{sink}}",
                )
            ],
            unit="ops",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            44,
            "Windows closed and labelled rows /s",
            [
                prom(
                    f"sum by (model_version) ({_rate('driftloop_windows_total')})",
                    "windows v{{model_version}}",
                    "A",
                ),
                prom(f"sum({_rate('driftloop_labelled_rows_total')})", "labelled rows", "B"),
            ],
            unit="ops",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            45,
            "Latest window: size and event-time age",
            [
                prom("max(driftloop_window_size_events)", "events in window", "A"),
                prom("time() - max(driftloop_window_end_timestamp_seconds)", "age (s)", "B"),
            ],
        ),
        w=8,
    )
    return lay.dashboard.build()


# --- Loop ----------------------------------------------------------------------------------


SERVED_VERSION = "count by (model_version) (driftloop_model_info)"


def loop() -> Dashboard:
    lay = dashboard(
        names.LOOP_DASHBOARD_UID,
        "driftloop · Loop",
        "The closed loop: alert states, what the bridge decided, DAG runs requested, promotions.",
        variables=[
            textbox_variable("airflow_url", "Airflow URL", f"http://localhost:{_LOCAL.airflow}"),
        ],
        time_from="now-3h",
    )
    lay.row(300, "Alerts")
    lay.add(
        state_timeline(
            3,
            "Alert states (Prometheus path)",
            [
                prom(
                    'max by (alertname) (ALERTS{alertstate="firing"})'
                    ' or max by (alertname) (ALERTS{alertstate="pending"}) * 0.5',
                    "{{alertname}}",
                )
            ],
            mappings={"1": ("firing", "red"), "0.5": ("pending", "yellow")},
            description="From Prometheus' ALERTS series: what Alertmanager routes (route=retrain "
            "to the bridge).",
        ),
        w=16,
    )
    lay.add(
        alertlist(
            1,
            "Grafana-managed alerts",
            description="Grafana's own rules (same expressions as the Prometheus rules).",
        ),
        w=8,
    )
    lay.row(301, "Bridge: alert → DAG run")
    lay.add(
        timeseries(
            4,
            "Bridge decisions",
            [
                prom(
                    f"sum by (source, decision) (increase(driftloop_bridge_decisions_total[{RATE}]))",
                    "{{source}} {{decision}}",
                )
            ],
            bars=True,
            description="triggered = a DAG run was created; duplicate / cooldown = suppressed; "
            "ignored = not a retraining alert; resolved = recorded only.",
        ),
        w=8,
    )
    lay.add(
        stat(
            5,
            "DAG runs requested (dashboard range)",
            [
                prom(
                    "sum by (outcome) (increase(driftloop_bridge_triggers_total[$__range]))",
                    "{{outcome}}",
                    instant=True,
                )
            ],
            description="created: Airflow accepted a new run; exists: Airflow answered 409 "
            "(already triggered); retry / dead_letter: Airflow unreachable or refused.",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            6,
            "Pending triggers and dead letters",
            [
                prom("max(driftloop_bridge_pending_triggers)", "pending", "A"),
                prom("max(driftloop_bridge_dead_letters)", "dead letters", "B"),
            ],
            description="BridgeDeadLetters fires on any dead letter (GET /dead-letters on the bridge).",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            10,
            "Airflow API call latency (p95)",
            [
                prom(
                    "histogram_quantile(0.95, sum by (le) "
                    f"({_rate('driftloop_bridge_airflow_call_seconds_bucket')}))",
                    "p95",
                )
            ],
            unit="s",
        ),
        w=8,
    )
    lay.add(
        stat(
            9,
            "Drift series over threshold now",
            [
                prom(
                    "count(max by (feature, statistic) (driftloop_drift_value)"
                    " > max by (feature, statistic) (driftloop_drift_threshold)) or on() vector(0)",
                    "over threshold",
                    instant=True,
                )
            ],
            steps=thresholds(("green", None), ("red", 1)),
        ),
        w=8,
    )
    lay.row(302, "Promotions")
    lay.add(
        state_timeline(
            7,
            "Served champion version",
            [prom(SERVED_VERSION, "v{{model_version}}")],
            description="A promotion ends one row and starts the next (see also the purple "
            "'Champion promotions' annotations on every driftloop dashboard).",
        ),
        w=16,
        h=6,
    )
    lay.add(
        stat(
            8,
            "Time since the served champion went live",
            [
                prom(
                    "time() - max(min by (model_version) "
                    "(driftloop_model_loaded_timestamp_seconds))",
                    "since promotion",
                    instant=True,
                )
            ],
            unit="s",
            description="Since the first replica started serving the newest version served "
            "(driftloop_model_loaded_timestamp_seconds).",
        ),
        w=8,
        h=6,
    )
    lay.add(
        text(
            11,
            "How the loop closes",
            "drift consumer → `driftloop_drift_value` vs `driftloop_drift_threshold` → alert "
            "(Prometheus rule → Alertmanager, or Grafana rule → contact point) → bridge "
            "`/webhooks/*` → Airflow DAG `retrain` → MLflow alias `champion` → replicas reload.\n\n"
            "Thresholds: `driftloop thresholds show|set|reset` (docs/monitoring.md). "
            "Airflow UI: [${airflow_url}](${airflow_url}).",
        ),
        w=24,
        h=4,
    )
    return lay.dashboard.build()


def all_dashboards() -> dict[str, Dashboard]:
    """File name (without directory) -> dashboard JSON model."""
    return {
        "model-service.json": model_service(),
        "drift.json": drift(),
        "loop.json": loop(),
    }
