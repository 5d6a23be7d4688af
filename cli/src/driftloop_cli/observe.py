"""Read-only views of the running loop, shared by `driftloop demo` and the end-to-end test.

Each function asks one live component one question and returns plain data. "Nothing yet" (no
series, no alert, no run) is an answer; a component that does not answer, answers with an
error status or with a body that is not what its API documents is not: that raises
:class:`ObservationError` naming the component and the URL, so a watcher can never mistake an
unreachable Prometheus for "the alert resolved".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from driftloop_contracts import CHAMPION_ALIAS, DAG_ID, MODEL_NAME
from driftloop_contracts.thresholds import SEQUENTIAL_STATISTIC

TIMEOUT = 5.0
#: Tries of a GET that timed out. A loaded machine can leave one request unanswered for longer
#: than TIMEOUT (measured: Airflow's API server under load 17, a demo run failed on one read);
#: a GET asks again safely. A refused connection or an error status is not retried: that is an
#: answer, and waiting would hide it.
TIMEOUT_TRIES = 3

#: The model-version tag naming the Airflow run that trained it (written by
#: ``driftloop_training.registry.register_version`` from the run's tag of the same name).
DAG_RUN_ID_TAG = "driftloop.dag_run_id"

DRIFT_OVER_THRESHOLD = (
    "max by (feature, statistic) (driftloop_drift_value{{{sel}}})"
    " > on(feature, statistic) group_left() max by (feature, statistic) (driftloop_drift_threshold)"
)

#: The sequential detector's series whose peak is over the retraining alert's level (what
#: ``SequentialDriftHigh`` fires on; docs/drift.md): usually the first sign of drift.
SEQUENTIAL_OVER_LEVEL = (
    "max by (feature) (driftloop_sequential_peak{{{sel}}})"
    " > on() group_left() max(driftloop_sequential_alert_threshold)"
)
SEQUENTIAL_LEVEL = "max(driftloop_sequential_alert_threshold)"


#: ``(sample name, sorted (label, value) pairs)``: one series of a scrape.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class ObservationError(RuntimeError):
    """A component did not answer or answered with an error: what was observed is unknown."""

    def __init__(self, component: str, url: str, detail: str, status: int | None = None) -> None:
        self.component = component
        self.url = url
        self.status = status
        super().__init__(f"{component} at {url}: {detail}")


class TaskInstance(TypedDict):
    """The fields of an Airflow REST API task instance the timeline reads."""

    task_id: str
    state: NotRequired[str | None]
    duration: NotRequired[float | None]
    start_date: NotRequired[str | None]
    end_date: NotRequired[str | None]


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


@retry(
    retry=retry_if_exception_type(httpx.TimeoutException),
    stop=stop_after_attempt(TIMEOUT_TRIES),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def _get_patiently(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=TIMEOUT, **kwargs)


def get_json(
    component: str,
    url: str,
    *,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    absent_ok: bool = False,
) -> Any:
    """The JSON body of ``GET url``; ``None`` for a 404 when ``absent_ok`` (the thing asked
    for does not exist yet). Anything else that is not a 2xx JSON answer raises."""
    try:
        r = _get_patiently(url, params=params, headers=headers, auth=auth)
    except httpx.HTTPError as exc:
        raise ObservationError(component, url, f"unreachable ({exc!r})") from exc
    if absent_ok and r.status_code == 404:
        return None
    if not r.is_success:
        raise ObservationError(
            component, url, f"answered {r.status_code}: {r.text[:200]}", r.status_code
        )
    try:
        return r.json()
    except ValueError as exc:
        raise ObservationError(component, url, f"answered non-JSON: {r.text[:200]!r}") from exc


def _shape_error(component: str, url: str, body: Any) -> ObservationError:
    return ObservationError(component, url, f"unexpected answer: {str(body)[:200]}")


def prom_query(ep: Endpoints, expr: str) -> list[dict[str, Any]]:
    url = f"{ep.prometheus}/api/v1/query"
    body = get_json("Prometheus", url, params={"query": expr})
    if not isinstance(body, dict) or body.get("status") != "success":
        raise _shape_error("Prometheus", url, body)
    result = body.get("data", {}).get("result")
    if not isinstance(result, list):
        raise _shape_error("Prometheus", url, body)
    return result


def prom_scalar(ep: Endpoints, expr: str) -> float | None:
    result = prom_query(ep, expr)
    return float(result[0]["value"][1]) if result else None


def drifting_series(ep: Endpoints, model_version: str | None = None) -> list[dict[str, Any]]:
    """(feature, statistic, value, threshold) of every drift gauge now over its threshold:
    the windowed statistics, and the sequential detector's peak over the alert level
    (statistic ``cusum``), which usually crosses first."""
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
    sequential = prom_query(ep, SEQUENTIAL_OVER_LEVEL.format(sel=sel))
    if sequential:
        levels = prom_query(ep, SEQUENTIAL_LEVEL)
        level = float(levels[0]["value"][1]) if levels else None
        out.extend(
            {
                "feature": s["metric"].get("feature"),
                "statistic": SEQUENTIAL_STATISTIC,
                "value": float(s["value"][1]),
                "threshold": level,
            }
            for s in sequential
        )
    return sorted(out, key=lambda d: -(d["value"] / (d["threshold"] or 1)))


def retrain_alerts(ep: Endpoints) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds with ``route="retrain"`` (not silenced or inhibited).

    Alertmanager's v2 API lists only alerts that have not ended: a resolved alert is one that
    is no longer in this (successfully answered) list.
    """
    url = f"{ep.alertmanager}/api/v2/alerts"
    body = get_json(
        "Alertmanager",
        url,
        params={"silenced": "false", "inhibited": "false", "filter": 'route="retrain"'},
    )
    if not isinstance(body, list):
        raise _shape_error("Alertmanager", url, body)
    return body


def active_retrain_alerts(ep: Endpoints) -> list[dict[str, Any]]:
    return [a for a in retrain_alerts(ep) if a.get("status", {}).get("state") == "active"]


def bridge_decisions(ep: Endpoints, limit: int = 100) -> list[dict[str, Any]]:
    """The bridge's audit trail, newest first."""
    url = f"{ep.bridge}/decisions"
    body = get_json("bridge", url, params={"limit": limit})
    decisions = body.get("decisions") if isinstance(body, dict) else None
    if not isinstance(decisions, list):
        raise _shape_error("bridge", url, body)
    return decisions


class Airflow:
    """Just enough of the REST API v2 to follow a DAG run (token refreshed on 401)."""

    def __init__(self, ep: Endpoints) -> None:
        self.ep = ep
        self._token: str | None = None

    def _login(self) -> str:
        url = f"{self.ep.airflow}/auth/token"
        credentials = {"username": self.ep.airflow_username, "password": self.ep.airflow_password}
        try:
            r = httpx.post(url, timeout=TIMEOUT, json=credentials)
        except httpx.HTTPError as exc:
            raise ObservationError("Airflow", url, f"unreachable ({exc!r})") from exc
        if not r.is_success:
            raise ObservationError(
                "Airflow", url, f"answered {r.status_code} to the login", r.status_code
            )
        try:
            return str(r.json()["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ObservationError("Airflow", url, f"no token in {r.text[:200]!r}") from exc

    def _get(self, path: str, *, absent_ok: bool = False, **params: Any) -> Any:
        url = f"{self.ep.airflow}/api/v2{path}"
        for _ in range(2):
            if self._token is None:
                self._token = self._login()
            try:
                return get_json(
                    "Airflow",
                    url,
                    params=params or None,
                    headers={"Authorization": f"Bearer {self._token}"},
                    absent_ok=absent_ok,
                )
            except ObservationError as exc:
                if exc.status != 401:
                    raise
                self._token = None
        raise ObservationError("Airflow", url, "401 even with a fresh token")

    def dag_run(self, run_id: str) -> dict[str, Any] | None:
        """The run, or ``None`` while Airflow does not know it (404)."""
        body = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}", absent_ok=True)
        return body if isinstance(body, dict) or body is None else None

    def dag_runs_since(self, wall_time: float) -> list[dict[str, Any]]:
        """Every run of the retraining DAG due at or after ``wall_time`` (oldest first)."""
        after = datetime.fromtimestamp(wall_time, tz=UTC).isoformat()
        path = f"/dags/{DAG_ID}/dagRuns"
        body = self._get(path, run_after_gte=after, order_by="run_after", limit=100)
        runs = body.get("dag_runs") if isinstance(body, dict) else None
        if not isinstance(runs, list):
            raise _shape_error("Airflow", f"{self.ep.airflow}/api/v2{path}", body)
        return runs

    def task_instances(self, run_id: str) -> list[TaskInstance]:
        body = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", absent_ok=True)
        return list((body or {}).get("task_instances", []))


def mlflow_auth() -> tuple[str, str] | None:
    """MLflow's own client variables, when set: the Docker stack's MLflow needs a login
    (basic-auth app; docs/docker.md), the local stack's ignores it."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


def champion_version(ep: Endpoints) -> dict[str, Any] | None:
    """The version the champion alias points at; ``None`` when there is no alias (404)."""
    body = get_json(
        "MLflow",
        f"{ep.mlflow}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL_NAME, "alias": CHAMPION_ALIAS},
        auth=mlflow_auth(),
        absent_ok=True,
    )
    return None if body is None else body.get("model_version")


def model_version(ep: Endpoints, version: str) -> dict[str, Any] | None:
    body = get_json(
        "MLflow",
        f"{ep.mlflow}/api/2.0/mlflow/model-versions/get",
        params={"name": MODEL_NAME, "version": version},
        auth=mlflow_auth(),
        absent_ok=True,
    )
    return None if body is None else body.get("model_version")


def version_tags(version: dict[str, Any]) -> dict[str, str]:
    """An MLflow REST model version's tags as a dict."""
    return {t["key"]: t.get("value", "") for t in version.get("tags", [])}


def replica_versions(ep: Endpoints) -> dict[str, str]:
    """The version each replica serves (``GET /model``); every replica must answer."""
    out: dict[str, str] = {}
    for url in ep.replicas:
        body = get_json("model replica", f"{url}/model")
        if not isinstance(body, dict) or body.get("model_version") is None:
            raise _shape_error("model replica", f"{url}/model", body)
        out[url] = str(body["model_version"])
    return out


def replica_watch_states(urls: list[str]) -> list[tuple[str | None, str | None]]:
    """(served version, shadow version) of every replica, ``(None, None)`` for one that does not
    answer: a replica killed or restarting is a state to poll through during a watch or a
    rollback, not an error."""
    states: list[tuple[str | None, str | None]] = []
    for url in urls:
        try:
            info = httpx.get(f"{url}/model", timeout=TIMEOUT).json()
            states.append((info.get("model_version"), info.get("shadow_model_version")))
        except (httpx.HTTPError, ValueError):
            states.append((None, None))
    return states


def scrape_metrics(
    urls: list[str], *, ignore_labels: tuple[str, ...] = ("replica",)
) -> dict[SeriesKey, float]:
    """Every sample of the given ``/metrics`` endpoints (parsed by ``prometheus_client``),
    summed across them; ``ignore_labels`` (the replica id) are dropped first, so one series
    per replica becomes one total. Every endpoint must answer: a missing one would make a
    total look smaller than it is."""
    out: dict[SeriesKey, float] = {}
    for url in urls:
        try:
            r = httpx.get(f"{url}/metrics", timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise ObservationError("metrics", f"{url}/metrics", f"unreachable ({exc!r})") from exc
        if not r.is_success:
            raise ObservationError("metrics", f"{url}/metrics", f"answered {r.status_code}")
        for family in text_string_to_metric_families(r.text):
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


def window_counts(ep: Endpoints, model_version: str) -> tuple[float, float]:
    """(windows closed, windows with any statistic over its threshold) for ``model_version``,
    from one instant query so both numbers come from the same scrape (0 before the first)."""
    sel = f'model_version="{model_version}"'
    expr = (
        f'sum by (__name__) ({{__name__=~"driftloop_windows_total|driftloop_windows_drift_total",'
        f" {sel}}})"
    )
    got = {s["metric"].get("__name__"): float(s["value"][1]) for s in prom_query(ep, expr)}
    return got.get("driftloop_windows_total", 0.0), got.get("driftloop_windows_drift_total", 0.0)
