"""Grafana provisioning files other than dashboards and rules (format: ``apiVersion: 1``).

Formats follow Grafana's own provisioning readers (``pkg/services/provisioning/datasources``,
``.../dashboards``, ``.../alerting``): string values go through environment-variable
interpolation (``$VAR``), which is how the contact point gets the bridge's bearer token without
a secret in the repository. Rule annotations and query models are *not* interpolated, so alert
templates (``{{ $labels.feature }}``) are safe there.

Routing (Grafana's notification policy, mirroring alertmanager/alertmanager.yml):

* ``route="retrain"`` -> contact point ``driftloop-bridge``: webhook to the bridge's
  ``/webhooks/grafana`` with ``Authorization: Bearer $DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN``, signed
  with ``$DRIFTLOOP_BRIDGE_HMAC_SECRET`` (Grafana's ``hmacConfig``);
* everything else -> ``driftloop-operations``: forwarded to the Alertmanager, whose default
  route handles operational alerts from both paths in one place (a null receiver until an
  operator adds e-mail/Slack/PagerDuty there).
"""

from __future__ import annotations

from typing import Any

from . import names

#: Local loop budget; production values are in docs/monitoring.md.
GROUP_WAIT = "1s"
GROUP_INTERVAL = "10s"
REPEAT_INTERVAL = "1h"


def datasources() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": names.PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": names.PROMETHEUS_URL,
                "isDefault": True,
                "editable": False,
                "jsonData": {
                    "httpMethod": "POST",
                    # The scrape interval: Grafana's $__rate_interval is derived from it.
                    "timeInterval": "2s",
                },
            },
            {
                "name": "InfluxDB",
                "uid": names.INFLUXDB_UID,
                "type": "influxdb",
                "access": "proxy",
                "url": names.INFLUXDB_URL,
                "isDefault": False,
                "editable": False,
                "jsonData": {"dbName": "driftloop", "httpMode": "POST", "version": "InfluxQL"},
            },
            {
                "name": "Alertmanager",
                "uid": names.ALERTMANAGER_UID,
                "type": "alertmanager",
                "access": "proxy",
                "url": names.ALERTMANAGER_URL,
                "isDefault": False,
                "editable": False,
                "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            },
        ],
    }


def dashboard_providers() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "driftloop",
                "orgId": 1,
                "type": "file",
                "folder": names.FOLDER_TITLE,
                "folderUid": names.FOLDER_UID,
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {
                    "path": names.DASHBOARDS_CONTAINER_PATH,
                    "foldersFromFilesStructure": False,
                },
            }
        ],
    }


def contact_points() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": 1,
                "name": names.BRIDGE_CONTACT_POINT,
                "receivers": [
                    {
                        "uid": "driftloop-bridge-webhook",
                        "type": "webhook",
                        "disableResolveMessage": False,
                        "settings": {
                            "url": names.BRIDGE_GRAFANA_WEBHOOK_URL,
                            "httpMethod": "POST",
                            "authorization_scheme": "Bearer",
                            "authorization_credentials": f"${names.BRIDGE_TOKEN_ENV}",
                            "maxAlerts": "0",
                            # Signed as well (HMAC-SHA256 of timestamp + ":" + body): the
                            # timestamp lets the bridge refuse a replayed notification.
                            "hmacConfig": {
                                "secret": f"${names.BRIDGE_HMAC_ENV}",
                                "header": names.BRIDGE_HMAC_SIGNATURE_HEADER,
                                "timestampHeader": names.BRIDGE_HMAC_TIMESTAMP_HEADER,
                            },
                        },
                    }
                ],
            },
            {
                "orgId": 1,
                "name": names.OPERATIONS_CONTACT_POINT,
                "receivers": [
                    {
                        "uid": "driftloop-operations-alertmanager",
                        "type": "prometheus-alertmanager",
                        "disableResolveMessage": False,
                        "settings": {"url": names.ALERTMANAGER_URL},
                    }
                ],
            },
        ],
    }


def policies() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "policies": [
            {
                "orgId": 1,
                "receiver": names.OPERATIONS_CONTACT_POINT,
                "group_by": ["grafana_folder", "alertname"],
                "group_wait": GROUP_WAIT,
                "group_interval": GROUP_INTERVAL,
                "repeat_interval": REPEAT_INTERVAL,
                "routes": [
                    {
                        "receiver": names.BRIDGE_CONTACT_POINT,
                        "object_matchers": [[names.ROUTE_LABEL, "=", names.RETRAIN_ROUTE]],
                        "group_by": ["alertname", "feature"],
                        "continue": False,
                    }
                ],
            }
        ],
    }
