"""Fixed identifiers shared by the provisioning files, dashboards, alert rules and docs.

Datasource uids are fixed so dashboards and alert rules can reference them in every
environment (Grafana would otherwise derive a uid from the datasource name).
"""

from __future__ import annotations

from typing import Any

PROMETHEUS_UID = "driftloop-prometheus"
INFLUXDB_UID = "driftloop-influxdb"
ALERTMANAGER_UID = "driftloop-alertmanager"
#: Grafana's server-side expressions (math, reduce, threshold) use this pseudo datasource.
EXPRESSION_UID = "__expr__"
#: Built-in pseudo datasources a dashboard may reference without provisioning them.
BUILTIN_DATASOURCE_UIDS = frozenset({"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"})

PROMETHEUS: dict[str, Any] = {"type": "prometheus", "uid": PROMETHEUS_UID}
INFLUXDB: dict[str, Any] = {"type": "influxdb", "uid": INFLUXDB_UID}
EXPRESSION: dict[str, Any] = {"type": "__expr__", "uid": EXPRESSION_UID}
GRAFANA_BUILTIN: dict[str, Any] = {"type": "grafana", "uid": "-- Grafana --"}

#: Docker-compose service URLs (Grafana only runs in Docker; see docs/monitoring.md).
PROMETHEUS_URL = "http://prometheus:9090"
INFLUXDB_URL = "http://influxdb:8086"
ALERTMANAGER_URL = "http://alertmanager:9093"
BRIDGE_GRAFANA_WEBHOOK_URL = "http://bridge:8000/webhooks/grafana"
#: Environment variable Grafana interpolates into the contact point (the bridge reads the same).
BRIDGE_TOKEN_ENV = "DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN"
#: Grafana signs the webhook with this secret (contact point ``hmacConfig``); the bridge checks
#: it (its ``hmac_secret`` setting, same variable). The headers are the bridge's defaults
#: (tests/test_compose.py checks they agree with driftloop_bridge.settings).
BRIDGE_HMAC_ENV = "DRIFTLOOP_BRIDGE_HMAC_SECRET"
BRIDGE_HMAC_SIGNATURE_HEADER = "X-Grafana-Alert-Signature"
BRIDGE_HMAC_TIMESTAMP_HEADER = "X-Grafana-Alert-Timestamp"

FOLDER_TITLE = "driftloop"
FOLDER_UID = "driftloop"
#: Where docker-compose mounts grafana/dashboards inside the Grafana container.
DASHBOARDS_CONTAINER_PATH = "/var/lib/grafana/dashboards"

MODEL_SERVICE_DASHBOARD_UID = "driftloop-model-service"
DRIFT_DASHBOARD_UID = "driftloop-drift"
LOOP_DASHBOARD_UID = "driftloop-loop"

#: Contact points (Grafana) / receivers (Alertmanager).
BRIDGE_CONTACT_POINT = "driftloop-bridge"
OPERATIONS_CONTACT_POINT = "driftloop-operations"

#: The label that routes an alert to retraining, in both alert paths.
ROUTE_LABEL = "route"
RETRAIN_ROUTE = "retrain"
