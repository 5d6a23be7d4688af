"""The bridge's Prometheus metrics, defined once (names are shared with the monitoring config).

``decision`` values: triggered, queued, duplicate, cooldown, resolved, ignored, dead_letter,
plus unauthorized / invalid / unavailable for requests refused before any alert was decided.
``outcome`` values of triggers: created, exists (Airflow's 409), retry, dead_letter.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "driftloop_bridge_decisions_total",
    "Webhook decisions, per alert (or per request when refused before parsing)",
    ["source", "decision"],
)
TRIGGERS = Counter(
    "driftloop_bridge_triggers_total",
    "Attempts to create a DAG run in Airflow, by outcome",
    ["outcome"],
)
PENDING = Gauge(
    "driftloop_bridge_pending_triggers",
    "Triggers persisted in Redis that Airflow has not accepted yet",
)
DEAD_LETTERS = Gauge(
    "driftloop_bridge_dead_letters",
    "Triggers given up on (max age passed or rejected by Airflow), kept for inspection",
)
AIRFLOW_CALL_SECONDS = Histogram(
    "driftloop_bridge_airflow_call_seconds",
    "Latency of Airflow REST API calls (token and trigger), successful or not",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
