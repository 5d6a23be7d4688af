"""The timeline's observation logic against canned answers (httpx.MockTransport).

These test OUR reading of Prometheus, Alertmanager, the bridge, Airflow, MLflow and the
replicas, not those components: each stage must fail when the component it reads is
unreachable or answers 500, and when its link to the previous stage is broken, and pass on the
good path. Time is a fake clock advanced by the timeline's own ``sleep``: no real waiting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from driftloop_cli import observe, timeline
from driftloop_cli.observe import Endpoints, ObservationError
from driftloop_cli.timeline import (
    STAGE_BY_KEY,
    STAGES,
    LinkageError,
    LoopState,
    Observed,
    StageTimeout,
    TimelineSettings,
)
from driftloop_contracts import DAG_ID, WATCH_DECISION_TAG_PREFIX, WATCH_UNTIL_TAG

RUN = "alert__DriftFeatureHigh__20261206T080000__0123456789abcdef"
OTHER_RUN = "alert__PerformanceDegraded__20261206T080200__fedcba9876543210"
FP = "3f1c0d2e4a5b6c7d"
ALERT = {
    "fingerprint": FP,
    "labels": {"alertname": "DriftFeatureHigh", "route": "retrain", "feature": "block_latitude"},
    "status": {"state": "active"},
}

EP = Endpoints(
    prometheus="http://prometheus",
    alertmanager="http://alertmanager",
    bridge="http://bridge",
    airflow="http://airflow",
    airflow_username="admin",
    airflow_password="admin",
    mlflow="http://mlflow",
    replicas=["http://replica-0", "http://replica-1"],
    nginx="http://nginx",
)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


@dataclass
class FakeStack:
    """Canned answers of every component, on the good path unless a test changes them."""

    onset: float
    down: set[str] = field(default_factory=set)  # hosts that refuse connections
    failing: set[str] = field(default_factory=set)  # hosts that answer 500
    alerts: list[dict[str, Any]] = field(default_factory=lambda: [ALERT])
    decisions: list[dict[str, Any]] = field(default_factory=list)  # newest first
    runs: dict[str, str] = field(default_factory=lambda: {RUN: "success"})
    champion: str = "2"
    champion_run_tag: str = RUN
    replicas: dict[str, str] = field(default_factory=lambda: {"replica-0": "2", "replica-1": "2"})
    #: (windows, drifting windows) of version 2, one pair per query; the last one repeats.
    windows: list[tuple[float, float]] = field(default_factory=lambda: [(5.0, 0.0)])
    drifting_versions: set[str] = field(default_factory=lambda: {"1"})
    #: Tags of version 2 besides its run tag (the watch's, written by the drift consumer).
    watch_tags: dict[str, str] = field(
        default_factory=lambda: {WATCH_UNTIL_TAG: "2026-12-06T09:10:00+00:00"}
    )

    def __post_init__(self) -> None:
        self.decide("triggered", RUN, FP)

    def decide(self, decision: str, run_id: str | None, fingerprint: str, name: str = "") -> None:
        self.decisions.insert(
            0,
            {
                "at": _iso(self.onset + 10),
                "source": "alertmanager",
                "alertname": name or "DriftFeatureHigh",
                "fingerprint": fingerprint,
                "status": "resolved" if decision == "resolved" else "firing",
                "rule": "retrain-on-drift",
                "decision": decision,
                "dag_id": DAG_ID,
                "dag_run_id": run_id,
            },
        )

    def resolve(self) -> None:
        """The alert ends: Alertmanager drops it, the bridge records the resolved webhook."""
        self.alerts = []
        self.decide("resolved", RUN, FP)

    # ------------------------------------------------------------------ the transport

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = urlsplit(str(request.url)).hostname or ""
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host in self.failing:
            return httpx.Response(500, text="internal error")
        body = getattr(self, f"_{host.replace('-', '_').rstrip('0123456789_')}")(request)
        if isinstance(body, httpx.Response):
            return body
        return httpx.Response(200, json=body)

    def _prometheus(self, request: httpx.Request) -> Any:
        query = request.url.params["query"]
        result: list[dict[str, Any]] = []
        if "driftloop_windows_total|" in query:
            w, d = self.windows[0] if len(self.windows) == 1 else self.windows.pop(0)
            result = [
                {"metric": {"__name__": "driftloop_windows_total"}, "value": [0, str(w)]},
                {"metric": {"__name__": "driftloop_windows_drift_total"}, "value": [0, str(d)]},
            ]
        elif query.startswith("max by"):
            if any(f'model_version="{v}"' in query for v in self.drifting_versions):
                metric = {"feature": "block_latitude", "statistic": "psi"}
                result = [{"metric": metric, "value": [0, "0.33"]}]
        elif query == "driftloop_drift_threshold":
            metric = {"feature": "block_latitude", "statistic": "psi"}
            result = [{"metric": metric, "value": [0, "0.2"]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _alertmanager(self, request: httpx.Request) -> Any:
        return self.alerts

    def _bridge(self, request: httpx.Request) -> Any:
        return {"count": len(self.decisions), "decisions": self.decisions}

    def _airflow(self, request: httpx.Request) -> Any:
        path = request.url.path
        if path == "/auth/token":
            return {"access_token": "t"}
        prefix = f"/api/v2/dags/{DAG_ID}/dagRuns"
        if path == prefix:
            runs = [{"dag_run_id": r, "state": s} for r, s in self.runs.items()]
            return {"dag_runs": runs, "total_entries": len(runs)}
        run_id, _, rest = path.removeprefix(prefix + "/").partition("/")
        if run_id not in self.runs:
            return httpx.Response(404, json={"detail": "not found"})
        if rest == "taskInstances":
            return {"task_instances": [{"task_id": "train", "state": "success", "duration": 1.0}]}
        return {"dag_run_id": run_id, "state": self.runs[run_id]}

    def _mlflow(self, request: httpx.Request) -> Any:
        if request.url.path.endswith("/model-versions/get"):
            version = request.url.params["version"]
            tagged = {observe.DAG_RUN_ID_TAG: self.champion_run_tag}
            if version == "2":
                tagged |= self.watch_tags
            tags = [{"key": k, "value": v} for k, v in tagged.items()]
            return {"model_version": {"version": version, "tags": tags}}
        tags = [{"key": observe.DAG_RUN_ID_TAG, "value": self.champion_run_tag}]
        return {"model_version": {"version": self.champion, "tags": tags}}

    def decide_watch(self, outcome: str, champion: str = "2", shadow: str = "1") -> None:
        """The drift consumer's record of the watch on version 2 (and, for a rollback, its
        effect: champion and replicas back on version 1)."""
        p = WATCH_DECISION_TAG_PREFIX
        self.watch_tags |= {
            f"{p}.outcome": outcome,
            f"{p}.champion": champion,
            f"{p}.shadow": shadow,
            f"{p}.reason": "v2 RMSE 61,000 USD vs v1 RMSE 30,000 USD on 300 labelled rows",
        }
        if outcome == "rolled_back":
            self.champion = "1"
            self.replicas = {"replica-0": "1", "replica-1": "1"}

    def _replica(self, request: httpx.Request) -> Any:
        host = urlsplit(str(request.url)).hostname or ""
        return {"model_version": self.replicas[host]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStack]:
    stack = FakeStack(onset=time.time() - 60)
    client = httpx.Client(transport=httpx.MockTransport(stack.handle))
    monkeypatch.setattr(httpx, "get", client.get)
    monkeypatch.setattr(httpx, "post", client.post)
    yield stack
    client.close()


def state_before(key: str, fake: FakeStack) -> LoopState:
    """The state the earlier stages leave behind on the good path."""
    st = LoopState(start_champion="1", onset_wall=fake.onset)
    index = [s.key for s in STAGES].index(key)
    if index > [s.key for s in STAGES].index("alert_firing"):
        st.fired = {FP: ALERT}
    if index > [s.key for s in STAGES].index("bridge_triggered"):
        st.decision = fake.decisions[-1]
        st.dag_run_id = RUN
    if index > [s.key for s in STAGES].index("promoted"):
        st.new_version = "2"
    return st


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(
    fake: FakeStack,
    keys: list[str],
    st: LoopState | None = None,
    on_stage: Callable[[Observed], None] | None = None,
    watch_required: bool = False,
) -> list[Observed]:
    clock = FakeClock(fake.onset + 1)
    return timeline.follow(
        EP,
        st or state_before(keys[0], fake),
        on_stage=on_stage or (lambda rec: None),
        on_note=lambda msg: None,
        poll_s=5.0,
        settings=TimelineSettings(recovered_windows=3, watch_required=watch_required),
        stages=[STAGE_BY_KEY[k] for k in keys],
        clock=clock,
        sleep=clock.sleep,
    )


#: The components each stage reads, by host (the fake answers by hostname).
READS = {
    "drift_detected": ["prometheus"],
    "alert_firing": ["alertmanager"],
    "bridge_triggered": ["bridge", "alertmanager"],
    "dag_succeeded": ["airflow"],
    "promoted": ["mlflow"],
    "replicas_serving": ["replica-0", "replica-1"],
    "drift_recovered": ["prometheus"],
    "alert_resolved": ["alertmanager", "bridge"],
    "one_run": ["airflow", "bridge"],
    "watch": ["mlflow"],
}


def _prepare(key: str, fake: FakeStack) -> None:
    if key == "alert_resolved":
        fake.resolve()


# ---------------------------------------------------------------------------- good path


def test_the_whole_chain_is_observed_in_order(fake: FakeStack) -> None:
    def on_stage(rec: Observed) -> None:
        if rec.key == "drift_recovered":
            fake.resolve()

    observed = run(fake, [s.key for s in STAGES], on_stage=on_stage)
    assert [o.key for o in observed] == [s.key for s in STAGES]
    details = {o.key: o.detail for o in observed}
    assert FP in details["bridge_triggered"] and RUN in details["bridge_triggered"]
    assert f"from run {RUN}" in details["promoted"]
    assert details["drift_recovered"].startswith("5 consecutive windows of version 2")
    assert details["one_run"] == f"run {RUN} only (Airflow and the bridge agree)"


@pytest.mark.parametrize("key", list(READS))
def test_each_stage_passes_on_the_good_path(fake: FakeStack, key: str) -> None:
    _prepare(key, fake)
    [rec] = run(fake, [key])
    assert rec.key == key


# ---------------------------------------------------------------------------- broken components


@pytest.mark.parametrize(
    ("key", "host"), [(key, host) for key, hosts in READS.items() for host in hosts]
)
@pytest.mark.parametrize("how", ["unreachable", "500"])
def test_a_stage_fails_when_a_component_it_reads_is_broken(
    fake: FakeStack, key: str, host: str, how: str
) -> None:
    _prepare(key, fake)
    (fake.down if how == "unreachable" else fake.failing).add(host)
    with pytest.raises(ObservationError) as err:
        run(fake, [key])
    assert f"http://{host}" in str(err.value)
    assert ("unreachable" if how == "unreachable" else "answered 500") in str(err.value)


def test_alert_resolved_does_not_pass_on_an_unreachable_alertmanager(fake: FakeStack) -> None:
    """The old weakness: "no active alert" read from a failed request looked like resolved."""
    fake.resolve()
    fake.down.add("alertmanager")
    with pytest.raises(ObservationError, match="Alertmanager at http://alertmanager"):
        run(fake, ["alert_resolved"])


def test_a_non_json_answer_is_an_error_not_nothing(fake: FakeStack) -> None:
    fake._prometheus = lambda request: httpx.Response(200, text="<html>proxy</html>")  # type: ignore[method-assign]
    with pytest.raises(ObservationError, match="non-JSON"):
        run(fake, ["drift_detected"])


# ---------------------------------------------------------------------------- broken links


def test_bridge_decided_on_another_alert(fake: FakeStack) -> None:
    fake.decisions = []
    fake.decide("triggered", RUN, "0000000000000000")
    with pytest.raises(LinkageError, match="not an alert Alertmanager fired"):
        run(fake, ["bridge_triggered"])


def test_bridge_decided_on_another_alertname_with_the_same_fingerprint(fake: FakeStack) -> None:
    fake.decisions = []
    fake.decide("triggered", RUN, FP, name="PerformanceDegraded")
    with pytest.raises(LinkageError, match="not an alert Alertmanager fired"):
        run(fake, ["bridge_triggered"])


def test_a_braked_alert_fails_at_once_naming_the_reset(fake: FakeStack) -> None:
    """The brake holds until a person resets it: waiting for a trigger would only time out."""
    fake.decisions = []
    fake.decide("braked", None, FP)
    with pytest.raises(LinkageError, match="loop reset-brake"):
        run(fake, ["bridge_triggered"])


def test_a_decision_before_onset_is_not_this_incident(fake: FakeStack) -> None:
    fake.decisions[0]["at"] = _iso(fake.onset - 600)
    with pytest.raises(StageTimeout, match="no triggered/queued decision since onset"):
        run(fake, ["bridge_triggered"])


def test_a_different_run_succeeded(fake: FakeStack) -> None:
    fake.runs = {RUN: "running", OTHER_RUN: "success"}
    with pytest.raises(LinkageError, match=f"runs other than the bridge's {RUN}"):
        run(fake, ["dag_succeeded"])


def test_the_decided_run_failed(fake: FakeStack) -> None:
    fake.runs = {RUN: "failed"}
    with pytest.raises(LinkageError, match="failed"):
        run(fake, ["dag_succeeded"])


def test_the_decided_run_never_appears(fake: FakeStack) -> None:
    fake.runs = {}
    with pytest.raises(StageTimeout, match=f"Airflow has no run {RUN} yet"):
        run(fake, ["dag_succeeded"])


def test_the_version_is_tagged_with_another_run(fake: FakeStack) -> None:
    fake.champion_run_tag = OTHER_RUN
    with pytest.raises(LinkageError, match=f"tagged driftloop.dag_run_id='{OTHER_RUN}'"):
        run(fake, ["promoted"])


def test_the_champion_never_moves(fake: FakeStack) -> None:
    fake.champion = "1"
    with pytest.raises(StageTimeout, match="champion still version 1"):
        run(fake, ["promoted"])


def test_one_replica_serves_another_version(fake: FakeStack) -> None:
    fake.replicas["replica-1"] = "1"
    with pytest.raises(StageTimeout, match="every replica serves the new champion"):
        run(fake, ["replicas_serving"])


def test_two_runs_for_one_incident_in_airflow(fake: FakeStack) -> None:
    fake.resolve()
    fake.runs[OTHER_RUN] = "success"
    with pytest.raises(LinkageError, match="one incident, more runs"):
        run(fake, ["one_run"])


def test_two_runs_triggered_by_the_bridge(fake: FakeStack) -> None:
    fake.decide("triggered", OTHER_RUN, FP)
    with pytest.raises(LinkageError, match="one incident, more runs"):
        run(fake, ["one_run"])


def test_only_two_consecutive_windows_under_threshold(fake: FakeStack) -> None:
    # first look: 4 windows, 2 drifting (where they fall is unknown); then 2 clean ones
    fake.windows = [(4, 2), (5, 2), (6, 2)]
    with pytest.raises(StageTimeout, match="2 of 3 consecutive windows of version 2 under"):
        run(fake, ["drift_recovered"])


def test_a_drifting_window_restarts_the_count(fake: FakeStack) -> None:
    fake.windows = [(0, 0), (2, 0), (3, 1), (5, 1)]
    with pytest.raises(StageTimeout, match="2 of 3 consecutive"):
        run(fake, ["drift_recovered"])


def test_three_consecutive_windows_after_a_drifting_one_pass(fake: FakeStack) -> None:
    fake.windows = [(4, 2), (5, 2), (7, 2)]
    [rec] = run(fake, ["drift_recovered"])
    assert rec.detail == "3 consecutive windows of version 2 under the thresholds"


def test_windows_under_but_gauges_over_now_is_not_recovered(fake: FakeStack) -> None:
    fake.drifting_versions.add("2")
    with pytest.raises(StageTimeout, match="series over now"):
        run(fake, ["drift_recovered"])


def test_alert_still_listed_by_alertmanager_is_not_resolved(fake: FakeStack) -> None:
    fake.decide("resolved", RUN, FP)  # the bridge says resolved, Alertmanager disagrees
    with pytest.raises(StageTimeout, match=f"Alertmanager still lists DriftFeatureHigh/{FP}"):
        run(fake, ["alert_resolved"])


def test_resolved_needs_the_bridge_to_have_recorded_it(fake: FakeStack) -> None:
    fake.alerts = []
    with pytest.raises(StageTimeout, match="the bridge has not recorded resolved"):
        run(fake, ["alert_resolved"])


def test_resolved_for_another_alert_does_not_count(fake: FakeStack) -> None:
    fake.alerts = []
    fake.decide("resolved", RUN, "0000000000000000")
    with pytest.raises(StageTimeout, match="the bridge has not recorded resolved"):
        run(fake, ["alert_resolved"])


def test_observation_error_names_component_and_url() -> None:
    err = ObservationError("Prometheus", "http://p/api/v1/query", "unreachable (x)")
    assert str(err) == "Prometheus at http://p/api/v1/query: unreachable (x)"
    assert json.dumps({"e": str(err)})  # printable in the demo's summary.json


# ---------------------------------------------------------------------------- settle


def _settle(
    fake: FakeStack, seconds: float = 60.0, on_sleep: Callable[[float], None] | None = None
):
    from driftloop_cli import settle

    st = state_before("one_run", fake)
    clock = FakeClock(0.0)

    def sleep(s: float) -> None:
        clock.sleep(s)
        if on_sleep is not None:
            on_sleep(clock.now)

    return settle.watch(EP, st, seconds, lambda msg: None, poll_s=5.0, clock=clock, sleep=sleep)


def test_settle_reports_one_run_and_one_champion(fake: FakeStack) -> None:
    fake.resolve()
    report = _settle(fake)
    assert report.dag_runs == [RUN] and report.champions == ["2"]
    assert report.decisions == {"triggered": 1, "resolved": 1}
    assert report.retrain_alerts_at_end == []


def test_settle_fails_on_a_second_run(fake: FakeStack) -> None:
    from driftloop_cli.settle import NotSettled

    def second_run(now: float) -> None:
        if now >= 30:
            fake.runs[OTHER_RUN] = "running"

    with pytest.raises(NotSettled, match=OTHER_RUN):
        _settle(fake, on_sleep=second_run)


def test_settle_fails_on_a_second_promotion(fake: FakeStack) -> None:
    from driftloop_cli.settle import NotSettled

    def promote(now: float) -> None:
        if now >= 30:
            fake.champion = "3"

    with pytest.raises(NotSettled, match="champion moved from 2 to 3"):
        _settle(fake, on_sleep=promote)


@pytest.mark.parametrize("host", ["airflow", "mlflow", "bridge", "alertmanager"])
def test_settle_fails_when_a_component_cannot_be_seen(fake: FakeStack, host: str) -> None:
    fake.down.add(host)
    with pytest.raises(ObservationError):
        _settle(fake)


def test_one_run_ignores_a_trigger_stood_down_while_the_run_was_active(fake: FakeStack) -> None:
    """Queued (Airflow slow), then ``run_active`` on retry: no second run was started."""
    fake.decide("queued", OTHER_RUN, "0000000000000001", "PerformanceDegraded")
    fake.decide("run_active", OTHER_RUN, "0000000000000001", "PerformanceDegraded")
    [rec] = run(fake, ["one_run"])
    assert rec.detail == f"run {RUN} only (Airflow and the bridge agree)"


# ---------------------------------------------------------------------------- the watch


def test_a_running_watch_passes_unless_required(fake: FakeStack) -> None:
    [rec] = run(fake, ["watch"])
    assert rec.detail.startswith("watching version 2 against 1 until 2026-12-06T09:10:00")
    with pytest.raises(StageTimeout, match="watching version 2 against 1"):
        run(fake, ["watch"], watch_required=True)


def test_kept_is_reported_with_its_figures(fake: FakeStack) -> None:
    fake.decide_watch("kept")
    [rec] = run(fake, ["watch"], watch_required=True)
    assert rec.detail == (
        "kept version 2: v2 RMSE 61,000 USD vs v1 RMSE 30,000 USD on 300 labelled rows"
    )


def test_a_rollback_needs_the_champion_and_every_replica_back(fake: FakeStack) -> None:
    fake.decide_watch("rolled_back")
    [rec] = run(fake, ["watch"], watch_required=True)
    assert rec.detail.startswith("rolled back to version 1 (2 replicas serve it): v2 RMSE")
    fake.replicas["replica-1"] = "2"
    with pytest.raises(StageTimeout, match="rolled back; replicas serve"):
        run(fake, ["watch"])
    fake.champion = "2"
    with pytest.raises(StageTimeout, match="rollback recorded, champion is 2"):
        run(fake, ["watch"])


@pytest.mark.parametrize("host", ["mlflow", "replica-0", "replica-1"])
@pytest.mark.parametrize("how", ["unreachable", "500"])
def test_a_rollback_fails_when_a_component_it_reads_is_broken(
    fake: FakeStack, host: str, how: str
) -> None:
    fake.decide_watch("rolled_back")
    (fake.down if how == "unreachable" else fake.failing).add(host)
    with pytest.raises(ObservationError, match=f"http://{host}"):
        run(fake, ["watch"])


def test_a_watch_of_another_pair_is_not_this_incident(fake: FakeStack) -> None:
    fake.decide_watch("kept", champion="2", shadow="0")
    with pytest.raises(LinkageError, match="not of this incident's 2 vs 1"):
        run(fake, ["watch"])


def test_a_superseded_watch_breaks_the_chain(fake: FakeStack) -> None:
    fake.decide_watch("superseded")
    with pytest.raises(LinkageError, match="is superseded"):
        run(fake, ["watch"])


def test_no_watch_tag_passes_only_when_not_required(fake: FakeStack) -> None:
    fake.watch_tags = {}
    [rec] = run(fake, ["watch"])
    assert "has no driftloop.watch_until tag" in rec.detail
    with pytest.raises(StageTimeout, match="no watch"):
        run(fake, ["watch"], watch_required=True)
