"""Read-only views of the running loop, shared by `driftloop demo` and the end-to-end test.

Each function asks one live component one question and returns plain data; none of them raises
on a component that is down (they return "nothing yet"), so a watcher can poll them with a deadline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from driftloop_contracts import CHAMPION_ALIAS, DAG_ID, MODEL_NAME

TIMEOUT = 5.0

DRIFT_OVER_THRESHOLD = (
    "max by (feature, statistic) (driftloop_drift_value{{{sel}}})"
    " > on(feature, statistic) group_left() max by (feature, statistic) (driftloop_drift_threshold)"
)


#: ``(sample name, sorted (label, value) pairs)``: one series of a scrape.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class TaskInstance(TypedDict):
    """The fields of an Airflow REST API task instance the timeline reads."""

    task_id: str
    state: NotRequired[str | None]
    duration: NotRequired[float | None]


@dataclass(frozen=True)
class Endpoints:
    prometheus: str
    alertmanager: str
    bridge: str
    airflow: str
    airflow_username: str
    airflow_password: str
    mlflow: str
    replicas: list[str]
    nginx: str


def prom_query(ep: Endpoints, expr: str) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"{ep.prometheus}/api/v1/query", params={"query": expr}, timeout=TIMEOUT)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return []
    return body.get("data", {}).get("result", []) if body.get("status") == "success" else []


def prom_scalar(ep: Endpoints, expr: str) -> float | None:
    result = prom_query(ep, expr)
    return float(result[0]["value"][1]) if result else None


def drifting_series(ep: Endpoints, model_version: str | None = None) -> list[dict[str, Any]]:
    """(feature, statistic, value, threshold) of every drift gauge now over its threshold."""
    sel = f'model_version="{model_version}"' if model_version else ""
    over = prom_query(ep, DRIFT_OVER_THRESHOLD.format(sel=sel))
    thresholds = {
        (s["metric"].get("feature"), s["metric"].get("statistic")): float(s["value"][1])
        for s in prom_query(ep, "driftloop_drift_threshold")
    }
    out = []
    for s in over:
        key = (s["metric"].get("feature"), s["metric"].get("statistic"))
        out.append(
            {
                "feature": key[0],
                "statistic": key[1],
                "value": float(s["value"][1]),
                "threshold": thresholds.get(key),
            }
        )
    return sorted(out, key=lambda d: -(d["value"] / (d["threshold"] or 1)))


def windows_for_version(ep: Endpoints, model_version: str) -> float:
    return (
        prom_scalar(ep, f'sum(driftloop_windows_total{{model_version="{model_version}"}})') or 0.0
    )


def active_retrain_alerts(ep: Endpoints) -> list[dict[str, Any]]:
    try:
        r = httpx.get(
            f"{ep.alertmanager}/api/v2/alerts",
            params={
                "active": "true",
                "silenced": "false",
                "inhibited": "false",
                "filter": 'route="retrain"',
            },
            timeout=TIMEOUT,
        )
        return [a for a in r.json() if a.get("status", {}).get("state") == "active"]
    except (httpx.HTTPError, ValueError):
        return []


def bridge_decisions(ep: Endpoints, limit: int = 100) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"{ep.bridge}/decisions", params={"limit": limit}, timeout=TIMEOUT)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return []
    return body.get("decisions", body) if isinstance(body, dict) else body


class Airflow:
    """Just enough of the REST API v2 to follow a DAG run (token refreshed on 401)."""

    def __init__(self, ep: Endpoints) -> None:
        self.ep = ep
        self._token: str | None = None

    def _get(self, path: str) -> Any:
        for _ in range(2):
            if self._token is None:
                r = httpx.post(
                    f"{self.ep.airflow}/auth/token",
                    timeout=TIMEOUT,
                    json={
                        "username": self.ep.airflow_username,
                        "password": self.ep.airflow_password,
                    },
                )
                r.raise_for_status()
                self._token = r.json()["access_token"]
            r = httpx.get(
                f"{self.ep.airflow}/api/v2{path}",
                timeout=TIMEOUT,
                headers={"Authorization": f"Bearer {self._token}"},
            )
            if r.status_code == 401:
                self._token = None
                continue
            r.raise_for_status()
            return r.json()
        return None

    def dag_run(self, run_id: str) -> dict[str, Any] | None:
        try:
            return self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def task_instances(self, run_id: str) -> list[TaskInstance]:
        try:
            body = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        except (httpx.HTTPError, ValueError, KeyError):
            return []
        return (body or {}).get("task_instances", [])


def mlflow_auth() -> tuple[str, str] | None:
    """MLflow's own client variables, when set: the Docker stack's MLflow needs a login
    (basic-auth app; docs/docker.md), the local stack's ignores it."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


def champion_version(ep: Endpoints) -> dict[str, Any] | None:
    try:
        r = httpx.get(
            f"{ep.mlflow}/api/2.0/mlflow/registered-models/alias",
            params={"name": MODEL_NAME, "alias": CHAMPION_ALIAS},
            timeout=TIMEOUT,
            auth=mlflow_auth(),
        )
        return r.json().get("model_version") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def model_version(ep: Endpoints, version: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(
            f"{ep.mlflow}/api/2.0/mlflow/model-versions/get",
            params={"name": MODEL_NAME, "version": version},
            timeout=TIMEOUT,
            auth=mlflow_auth(),
        )
        return r.json().get("model_version") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def replica_versions(ep: Endpoints) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for url in ep.replicas:
        try:
            out[url] = str(httpx.get(f"{url}/model", timeout=TIMEOUT).json()["model_version"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            out[url] = None
    return out


def scrape_metrics(
    urls: list[str], *, ignore_labels: tuple[str, ...] = ("replica",)
) -> dict[SeriesKey, float]:
    """Every sample of the given ``/metrics`` endpoints (parsed by ``prometheus_client``),
    summed across them; ``ignore_labels`` (the replica id) are dropped first, so one series
    per replica becomes one total. An endpoint that does not answer contributes nothing."""
    out: dict[SeriesKey, float] = {}
    for url in urls:
        try:
            text = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
        except httpx.HTTPError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(
                    sorted((k, v) for k, v in sample.labels.items() if k not in ignore_labels)
                )
                key = (sample.name, labels)
                out[key] = out.get(key, 0.0) + sample.value
    return out


def metric_total(scraped: dict[SeriesKey, float], name: str, **labels: str) -> float:
    """The sum of sample ``name`` over every series that carries (at least) ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in scraped.items() if n == name and want <= set(lab))
