"""driftloop bridge: authenticated alert webhooks -> deduplicated, durable Airflow DAG triggers.

Grafana and Alertmanager POST alerts; the bridge verifies them, routes them with YAML rules,
drops duplicates and storms (Redis), and creates one Airflow DAG run per incident, retrying
through Airflow outages and bridge restarts.
"""

from .app import create_app
from .payloads import Alert, parse_alertmanager, parse_grafana
from .settings import BridgeSettings

__all__ = ["Alert", "BridgeSettings", "create_app", "parse_alertmanager", "parse_grafana"]
