"""The monitoring configuration against the live local stack.

1. The local alert path, end to end, driven by thresholds only: with the shifted feature's
   thresholds raised (``driftloop thresholds set ... --feature``), drifted traffic
   (``median_income_in_block`` x 1.5 through nginx) is measured but fires nothing; lowering
   one threshold with the CLI makes ``DriftFeatureHigh`` fire in Prometheus, reach
   Alertmanager, the bridge decides ``triggered`` and the Airflow DAG run exists (queued: the
   DAG is held paused, so no promotion moves the drift); raising it again resolves the alert.
   The drift is measured against a freshly bootstrapped, base-data champion. The sequential
   detector's ``SequentialDriftHigh`` (not governed by the thresholds) is silenced in
   Alertmanager meanwhile.
2. After a short drifted traffic run (default thresholds: alerts fire, the bridge decides),
   every query of the committed monitoring files -- each dashboard target, annotation and
   template variable, each Grafana rule query, each operand of each Prometheus rule, every
   InfluxQL query -- runs against the live Prometheus / InfluxDB with its template variables
   substituted by real label values, and returns data.

The stack is shared: thresholds are restored exactly as found (Redis hash snapshot), and the
bridge's per-DAG cooldown, which an earlier retrain in this stack may still hold, is cleared so
that this test's alert gets ``triggered`` rather than ``cooldown``.
"""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
import redis
from redis.typing import EncodableT, FieldT

from driftloop_cli import observe
from driftloop_cli.demo import endpoints
from driftloop_cli.settings import REPO_ROOT
from driftloop_contracts import (
    API_KEY_HEADER,
    DAG_ID,
    DEFAULT_THRESHOLDS,
    FEATURE_BY_NAME,
    FEATURE_NAMES,
    PREDICTION_SERIES,
    SERIES_STATISTICS,
    SOURCE_TO_FEATURE,
    TARGET_SCALE_USD,
    TARGET_SOURCE_COLUMN,
    THRESHOLDS_REDIS_KEY,
    FeedbackApiKeySettings,
)
from driftloop_contracts.thresholds import SEQUENTIAL_STATISTIC, Statistic
from driftloop_monitoring import promql, queries

pytestmark = pytest.mark.integration

SHIFTED = "median_income_in_block"
SHIFT = 1.5
STATISTIC: Statistic = "psi"
#: Above any drift statistic the consumer computes: nothing fires while it holds.
SUPPRESSED = "1000"
#: Sent before looking for the drift: 4 partitions x 200-event windows, with room to spare.
PREDICTIONS = 1600
FEEDBACK_SHARE = 0.5
#: Feedback is sent as a label producer (the key the replicas read from the same environment).
PRODUCER_HEADERS = {API_KEY_HEADER: FeedbackApiKeySettings().producer_key}
CONCURRENCY = 8
#: Grafana-like evaluation of dashboard queries over the recent past.
PANEL_RANGE_S = 15 * 60
PANEL_STEP_S = 10
#: Annotations mark events (promotions); look far enough back to include one.
ANNOTATION_RANGE_S = 7 * 24 * 3600
ANNOTATION_STEP_S = 60

T = TypeVar("T")


def poll(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 1.0) -> T:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


# --- clients --------------------------------------------------------------------------------


@dataclass
class Prom:
    url: str
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def _get(self, path: str, **params: Any) -> Any:
        body = self.client.get(f"{self.url}{path}", params=params).json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body.get('error')}")
        return body["data"]

    def instant(self, expr: str) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", query=expr)["result"]

    def range(self, expr: str, seconds: int, step: int) -> list[dict[str, Any]]:
        end = time.time()
        return self._get(
            "/api/v1/query_range", query=expr, start=end - seconds, end=end, step=step
        )["result"]

    def label_values(self, label: str, selector: str | None) -> list[str]:
        params = {"match[]": selector} if selector else {}
        return self._get(f"/api/v1/label/{label}/values", **params)

    def metric_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values")) | set(self._get("/api/v1/metadata"))

    def value(self, expr: str) -> float | None:
        result = self.instant(expr)
        return float(result[0]["value"][1]) if result else None

    def reload(self) -> None:
        self.client.post(f"{self.url}/-/reload").raise_for_status()


def finite_values(result: list[dict[str, Any]]) -> int:
    samples = [v for s in result for v in ([s["value"]] if "value" in s else s["values"])]
    return sum(1 for _, v in samples if math.isfinite(float(v)))


def cli(stack: Any, *args: str, timeout: float = 60) -> str:
    """``driftloop --base-port ... --state-dir ... <args>`` as a user would run it."""
    result = subprocess.run(
        [
            sys.executable, "-m", "driftloop_cli.main",
            "--base-port", str(stack.ports.base), "--state-dir", str(stack.state_dir),
            *args,
        ],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"driftloop {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


# --- traffic --------------------------------------------------------------------------------


def housing_rows() -> list[tuple[dict[str, float], float]]:
    from sklearn.datasets import fetch_california_housing

    frame = fetch_california_housing(as_frame=True, download_if_missing=False).frame
    frame = frame.rename(columns=SOURCE_TO_FEATURE)
    targets = frame[TARGET_SOURCE_COLUMN].to_numpy()
    records = frame.loc[:, list(FEATURE_NAMES)].to_dict("records")
    return [(dict(r), float(t)) for r, t in zip(records, targets, strict=True)]


class DriftedTraffic:
    """Drifted traffic through nginx on a background thread, until stopped.

    Each prediction has the shifted feature x SHIFT; half are followed by feedback with the
    true value; every 20th body repeats (cache hits); a few invalid bodies give real 422s.
    It keeps flowing while the test waits, so that if the champion changes meanwhile (other
    runs promote models in this shared stack) the new champion's windows are drifted too.
    """

    def __init__(self, nginx_url: str, seed: int = 7) -> None:
        self.nginx_url = nginx_url
        self.rng = random.Random(seed)
        self.rows = housing_rows()
        self.counts: dict[str, int] = {
            "ok": 0,
            "failed": 0,
            "feedback": 0,
            "feedback_failed": 0,
            "rejected": 0,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._last: dict[str, float] | None = None

    def __enter__(self) -> DriftedTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def sent(self) -> int:
        return self.counts["ok"] + self.counts["failed"]

    def _body(self, i: int) -> tuple[dict[str, float], float]:
        features, target = self.rows[self.rng.randrange(len(self.rows))]
        features = dict(features)
        features[SHIFTED] = min(features[SHIFTED] * SHIFT, FEATURE_BY_NAME[SHIFTED].le)
        if self._last is not None and i % 20 == 0:
            features = self._last
        self._last = features
        return features, target

    async def _worker(self, client: httpx.AsyncClient, worker: int) -> None:
        i = worker
        while not self._stop.is_set():
            i += CONCURRENCY
            features, target = self._body(i)
            try:
                r = await client.post("/predict", json=features)
            except httpx.HTTPError as exc:
                self.counts[type(exc).__name__] = self.counts.get(type(exc).__name__, 0) + 1
                self.counts["failed"] += 1
                continue
            if r.status_code != 200:
                self.counts["failed"] += 1
                key = f"status {r.status_code}"
                self.counts[key] = self.counts.get(key, 0) + 1
                continue
            self.counts["ok"] += 1
            if self.rng.random() < FEEDBACK_SHARE:
                answer = r.json()
                body = {
                    "request_id": answer["request_id"],
                    "actual": target * TARGET_SCALE_USD,
                    "feedback_token": answer["feedback_token"],
                }
                try:
                    f = await client.post("/feedback", json=body, headers=PRODUCER_HEADERS)
                except httpx.HTTPError as exc:
                    self.counts["feedback_failed"] += 1
                    key = f"feedback {type(exc).__name__}"
                    self.counts[key] = self.counts.get(key, 0) + 1
                    continue
                if f.status_code != 202:
                    self.counts["feedback_failed"] += 1
                    key = f"feedback status {f.status_code}"
                    self.counts[key] = self.counts.get(key, 0) + 1
                    continue
                self.counts["feedback"] += 1

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.nginx_url, timeout=30) as client:
            for _ in range(5):  # deliberate 422s: the 4xx panels have real data
                r = await client.post("/predict", json={SHIFTED: "not a number"})
                self.counts["rejected"] += r.status_code == 422
            await asyncio.gather(*(self._worker(client, w) for w in range(CONCURRENCY)))


# --- shared state -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prom(stack: Any) -> Prom:
    p = Prom(stack.prometheus_url)
    p.reload()  # the repository's rule files may be newer than the running Prometheus
    return p


@pytest.fixture
def thresholds_restored(stack: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url)
    # hset's mapping takes any field/value type redis-py encodes; hgetall answers bytes | str
    before: dict[FieldT, EncodableT] = dict(client.hgetall(THRESHOLDS_REDIS_KEY).items())
    yield client
    with client.pipeline() as pipe:
        pipe.delete(THRESHOLDS_REDIS_KEY)
        if before:
            pipe.hset(THRESHOLDS_REDIS_KEY, mapping=before)
        pipe.execute()


@pytest.fixture
def sequential_alert_silenced(stack: Any) -> Iterator[None]:
    """``SequentialDriftHigh`` silenced in Alertmanager for the test (deleted afterwards).

    The sequential detector's alert fires on this drifted traffic whatever the windowed
    thresholds are (its level is set for its ERT, not by the threshold CLI), and would trigger
    the DAG run the windowed alert is to trigger (then answered ``run_active``). A silence is
    what an operator would use: Prometheus still evaluates it, Alertmanager holds it back.
    """
    now = datetime.now(UTC)
    body = {
        "matchers": [
            {"name": "alertname", "value": "SequentialDriftHigh", "isRegex": False, "isEqual": True}
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test_monitoring_live",
        "comment": "the windowed alert path is under test",
    }
    r = httpx.post(f"{stack.alertmanager_url}/api/v2/silences", json=body, timeout=10)
    r.raise_for_status()
    silence = r.json()["silenceID"]
    try:
        yield
    finally:
        httpx.delete(
            f"{stack.alertmanager_url}/api/v2/silence/{silence}", timeout=10
        ).raise_for_status()


def firing(prom: Prom, alertname: str, **labels: str) -> list[dict[str, Any]]:
    sel = ",".join(
        [f'alertname="{alertname}"', 'alertstate="firing"']
        + [f'{k}="{v}"' for k, v in labels.items()]
    )
    return prom.instant(f"ALERTS{{{sel}}}")


def alertmanager_alerts(stack: Any, alertname: str, **labels: str) -> list[dict[str, Any]]:
    filters = [f'alertname="{alertname}"', *(f'{k}="{v}"' for k, v in labels.items())]
    r = httpx.get(
        f"{stack.alertmanager_url}/api/v2/alerts",
        params={"filter": filters, "active": "true", "silenced": "false", "inhibited": "false"},
        timeout=10,
    )
    r.raise_for_status()
    return [a for a in r.json() if a["status"]["state"] == "active"]


def decisions_since(stack: Any, since: float, decision: str) -> list[dict[str, Any]]:
    """The bridge's DriftFeatureHigh decisions of one kind from Alertmanager, oldest first."""
    r = httpx.get(f"{stack.bridge_url}/decisions", params={"limit": 200}, timeout=10)
    r.raise_for_status()
    return [
        d
        for d in reversed(r.json()["decisions"])
        if d["alertname"] == "DriftFeatureHigh"
        and d["source"] == "alertmanager"
        and d["decision"] == decision
        and datetime.fromisoformat(d["at"].replace("Z", "+00:00")).timestamp() >= since - 1
    ]


# --- 1. the alert path, driven by thresholds -------------------------------------------------


@pytest.mark.timeout(900)
def test_threshold_changes_drive_the_local_alert_path_to_a_dag_run(
    stack: Any,
    champion: str,
    prom: Prom,
    thresholds_restored: redis.Redis,
    retraining_held: None,
    sequential_alert_silenced: None,
) -> None:

    # Raise the thresholds this traffic would cross: the shifted feature's, the prediction
    # series' (its distribution moves with the feature) and rmse_ratio (feedback carries the
    # true values). Other features keep theirs, so a loop someone else drives in this shared
    # stack is not silenced; everything is restored after the test.
    for series in (SHIFTED, PREDICTION_SERIES):
        for statistic in SERIES_STATISTICS:
            cli(stack, "thresholds", "set", statistic, SUPPRESSED, "--feature", series)
    cli(stack, "thresholds", "set", "rmse_ratio", SUPPRESSED)
    poll(
        "the raised thresholds to reach Prometheus",
        lambda: (
            prom.value(
                f'min(driftloop_drift_threshold{{feature=~"{SHIFTED}|{PREDICTION_SERIES}", '
                'statistic=~"psi|ks|wasserstein"} or driftloop_drift_threshold{statistic="rmse_ratio"})'
            )
            == float(SUPPRESSED)
        ),
        30,
    )
    competing = (
        f'ALERTS{{alertname="DriftFeatureHigh", feature="{SHIFTED}"}} or '
        'ALERTS{alertname=~"DriftPredictionHigh|PerformanceDegraded"}'
    )
    poll("earlier alerts this traffic would raise to resolve",
         lambda: not prom.instant(competing), 60)  # fmt: skip

    # Measure against a champion trained on the base data only: one that an earlier test
    # retrained on drifted traffic already has this shift in its reference profile.
    cli(stack, "bootstrap", "--force", timeout=300)
    ep = endpoints(stack.settings)
    version = str((observe.champion_version(ep) or {})["version"])
    poll(f"every replica serving version {version}",
         lambda: set(observe.replica_versions(ep).values()) == {version}, 120)  # fmt: skip
    poll(f"the drift consumer's reference at version {version}",
         lambda: prom.value(f'driftloop_drift_reference_info{{model_version="{version}"}}'), 60)  # fmt: skip

    with DriftedTraffic(stack.nginx_url) as traffic:
        poll(f"{PREDICTIONS} drifted predictions", lambda: traffic.sent() >= PREDICTIONS, 300)
        counts = dict(traffic.counts)
        assert counts["failed"] == 0 and counts["feedback_failed"] == 0, counts
        assert counts["rejected"] == 5, counts
        run_alert_path(stack, prom, thresholds_restored, competing, version)
    assert traffic.counts["failed"] == 0, traffic.counts
    assert traffic.counts["feedback_failed"] == 0 and traffic.counts["feedback"] > 0, traffic.counts


def run_alert_path(
    stack: Any, prom: Prom, store: redis.Redis, competing: str, version: str
) -> None:
    labels = {"feature": SHIFTED, "statistic": STATISTIC}
    default = DEFAULT_THRESHOLDS[STATISTIC]
    drift_now = (
        f'driftloop_drift_value{{feature="{SHIFTED}", statistic="{STATISTIC}", '
        f'model_version="{version}"}}'
    )
    measured = poll(
        f"{STATISTIC} of {SHIFTED} above its default threshold {default}",
        lambda: (v := prom.value(drift_now)) is not None and v > default and v,
        120,
    )
    # Measured above the default, yet silent: the rules compare with the raised gauge.
    # (Absence can only be observed over time: watch for longer than the rule's `for`.)
    quiet_until = time.monotonic() + 10
    while time.monotonic() < quiet_until:
        assert not prom.instant(competing), f"fired at threshold {SUPPRESSED}: {measured}"
        time.sleep(1)

    # The bridge answers `cooldown` for a while after any retrain this shared stack ran, and
    # `braked` once the stack spent its retrain budget (circuit breaker): clear both.
    from driftloop_bridge.store import RedisKeys

    keys = RedisKeys()
    store.delete(keys.cooldown(DAG_ID), keys.brake_triggers, keys.brake_engaged)

    # Lower one threshold with the CLI: the rule fires and the loop runs.
    lowered_at = time.time()
    cli(stack, "thresholds", "set", STATISTIC, str(default), "--feature", SHIFTED)
    changed = time.time()  # stage times below exclude the CLI's own start-up
    poll(
        "DriftFeatureHigh firing in Prometheus",
        lambda: firing(prom, "DriftFeatureHigh", **labels),
        60,
    )
    stages = {"firing in Prometheus": time.time() - changed}
    am = poll(
        "DriftFeatureHigh active in Alertmanager",
        lambda: alertmanager_alerts(stack, "DriftFeatureHigh", **labels),
        30,
    )
    stages["active in Alertmanager"] = time.time() - changed
    assert am[0]["labels"]["route"] == "retrain"
    assert {r["name"] for r in am[0]["receivers"]} == {"bridge"}

    decision = poll(
        "the bridge's `triggered` decision",
        lambda: decisions_since(stack, lowered_at, "triggered"),
        90,
    )[-1]
    stages["bridge triggered"] = time.time() - changed
    assert decision["dag_id"] == DAG_ID
    run_id = decision["dag_run_id"]
    airflow = observe.Airflow(endpoints(stack.settings))
    dag_run = poll(f"DAG run {run_id} in Airflow", lambda: airflow.dag_run(run_id), 60)
    stages["DAG run seen in Airflow"] = time.time() - changed
    assert dag_run["dag_id"] == DAG_ID
    assert dag_run["state"] == "queued", dag_run  # the DAG is paused: nothing retrains

    # Raise it again: the alert resolves while the drift is still measured above the default.
    raised_at = time.time()
    cli(stack, "thresholds", "set", STATISTIC, SUPPRESSED, "--feature", SHIFTED)
    changed = time.time()
    poll(
        "DriftFeatureHigh to resolve in Prometheus",
        lambda: not firing(prom, "DriftFeatureHigh", **labels),
        60,
    )
    stages["resolved after raising"] = time.time() - changed
    still = prom.value(drift_now)
    assert still is not None and still > default, (
        f"the drift itself fell ({still}): the threshold did not resolve the alert"
    )
    poll(
        "DriftFeatureHigh to resolve in Alertmanager",
        lambda: not alertmanager_alerts(stack, "DriftFeatureHigh", **labels),
        60,
    )
    poll(
        "the bridge to record the resolution",
        lambda: decisions_since(stack, raised_at, "resolved"),
        30,
    )
    print(
        "seconds after the CLI changed the threshold:", {k: round(v, 1) for k, v in stages.items()}
    )


# --- 2. every query returns data ------------------------------------------------------------


@dataclass
class Resolved:
    values: dict[str, list[str]]
    multi: dict[str, bool]
    extra: dict[str, str]


def resolve_variables(prom: Prom, dash: queries.Dashboard, range_s: int) -> Resolved:
    values: dict[str, list[str]] = {}
    multi: dict[str, bool] = {}
    extra = queries.builtins(range_s, PANEL_STEP_S)
    for var in dash.variables:
        if var.type == "query":
            parsed = queries.parse_label_values(var.query)
            assert parsed, f"{dash.uid}: unsupported variable query {var.query!r}"
            found = prom.label_values(parsed[1], parsed[0])
            assert found, f"{dash.uid}: variable {var.name} ({var.query}) has no values"
            values[var.name] = sorted(found)
            multi[var.name] = var.multi or var.include_all
        else:
            extra[var.name] = var.default
    return Resolved(values, multi, extra)


def expand(query: queries.Query, env: Resolved) -> list[str]:
    """One query text per repetition of a repeated panel (one value each), else one."""
    if query.repeat and query.repeat in env.values:
        out = []
        for value in env.values[query.repeat]:
            values = {**env.values, query.repeat: [value]}
            multi = {**env.multi, query.repeat: False}
            out.append(queries.substitute(query.text, query.kind, values, multi, env.extra))
        return out
    return [queries.substitute(query.text, query.kind, env.values, env.multi, env.extra)]


def influx_rows(stack: Any, query: str) -> int:
    r = httpx.get(
        f"{stack.influx_url}/query", params={"db": stack.influx_db, "q": query}, timeout=30
    )
    r.raise_for_status()
    rows = 0
    for result in r.json()["results"]:
        assert "error" not in result, f"{query}: {result['error']}"
        for series in result.get("series", []):
            rows += sum(1 for row in series["values"] if any(v is not None for v in row[1:]))
    return rows


@pytest.mark.timeout(300)
def test_every_dashboard_and_rule_query_returns_data(stack: Any, champion: str, prom: Prom) -> None:
    from driftloop_training import registry

    # A champion under its post-promotion watch (an earlier test's promotion) is judged by the
    # watch, so PerformanceDegraded's online-error side is empty by design: end the watch.
    registry.end_watch(stack.mlflow_url)
    poll("no watch open", lambda: not prom.instant("driftloop_watch_open > 0") or None, 60)
    # A short drifted traffic run (default thresholds: the retraining alerts fire, the bridge
    # decides), kept flowing while the queries run: a promotion by any run in this shared stack
    # drops the previous champion's drift series, and the new champion needs windows too.
    with DriftedTraffic(stack.nginx_url, seed=11) as traffic:
        poll(f"{PREDICTIONS} drifted predictions", lambda: traffic.sent() >= PREDICTIONS, 300)
        poll(
            "drift and online-error gauges of the current champion",
            lambda: (
                prom.instant("driftloop_drift_value")
                and prom.instant("driftloop_online_rmse_ratio")
                and prom.instant("driftloop_sequential_peak")
            ),
            120,
        )
        # The timeline's detection (observe.drifting_series) against the live Prometheus, read
        # before a run this traffic starts can promote a champion (which resets the peak): the
        # sequential peak over the alert level is reported as statistic "cusum", with the level.
        ep = endpoints(stack.settings)
        sequential = poll(
            "the sequential peak over its alert level in observe.drifting_series",
            lambda: [
                s for s in observe.drifting_series(ep) if s["statistic"] == SEQUENTIAL_STATISTIC
            ],
            120,
        )
        assert all(s["value"] > s["threshold"] > 0 for s in sequential), sequential
        poll("an alert in Prometheus' ALERTS", lambda: prom.instant("ALERTS"), 90)
        check_every_query(stack, prom)
    assert traffic.counts["failed"] == 0, traffic.counts
    assert traffic.counts["feedback_failed"] == 0 and traffic.counts["feedback"] > 0, traffic.counts


def check_every_query(stack: Any, prom: Prom) -> None:
    problems: list[str] = []
    checked = 0
    known = prom.metric_names()

    def check_metrics(text: str, where: str) -> None:
        for name in promql.metric_names(text):
            if name not in known and promql.base_metric(name) not in known:
                problems.append(f"{where}: metric {name} unknown to Prometheus")

    for dash in queries.load_dashboards(REPO_ROOT / "grafana" / "dashboards"):
        env = resolve_variables(prom, dash, PANEL_RANGE_S)
        for query in queries.dashboard_queries(dash):
            if query.role == "variable":
                continue  # resolved (and required non-empty) above
            for text in expand(query, env):
                checked += 1
                left = queries.unresolved(text)
                if left:
                    problems.append(f"{query.where}: unresolved {left} in {text}")
                    continue
                if query.kind == "influxdb":
                    if influx_rows(stack, text) == 0:
                        problems.append(f"{query.where}: no rows: {text}")
                    continue
                check_metrics(text, query.where)
                if "annotation" in query.where:
                    result = prom.range(text, ANNOTATION_RANGE_S, ANNOTATION_STEP_S)
                elif query.instant:
                    result = prom.instant(text)
                else:
                    result = prom.range(text, PANEL_RANGE_S, PANEL_STEP_S)
                if finite_values(result) == 0:
                    problems.append(f"{query.where}: no data: {text}")

    grafana_rules = REPO_ROOT / "grafana" / "provisioning" / "alerting" / "rules.yml"
    for query in queries.grafana_rule_queries(grafana_rules):
        checked += 1
        check_metrics(query.text, query.where)
        if finite_values(prom.instant(query.text)) == 0:
            problems.append(f"{query.where}: no data: {query.text}")

    for rule in queries.prometheus_rules(REPO_ROOT / "prometheus" / "rules"):
        prom.instant(rule["expr"])  # the whole expression evaluates (empty while not firing)
        for operand in promql.operands_needing_data(rule["expr"]):
            checked += 1
            where = f"prometheus rule {rule['alert']}"
            check_metrics(operand, where)
            if finite_values(prom.instant(operand)) == 0:
                problems.append(f"{where}: operand has no data: {operand}")

    print(f"{checked} queries run against the live Prometheus and InfluxDB")
    assert checked > 80, checked
    assert not problems, "\n".join(problems)
