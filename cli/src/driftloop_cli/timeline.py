"""Follow the loop closing, stage by stage, against the live components.

The stages happen in this order; each is polled until it is observed or its deadline (seconds
since drift onset) passes, in which case :class:`StageTimeout` names the stage and where to look.
`driftloop demo` prints the timeline; the end-to-end test asserts on the same records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import observe
from .observe import Endpoints


class StageTimeout(RuntimeError):
    def __init__(self, stage: Stage, elapsed: float, last_detail: str) -> None:
        self.stage = stage
        super().__init__(
            f"stage '{stage.title}' did not happen within {stage.deadline_s:.0f}s of drift onset "
            f"(waited {elapsed:.0f}s; last seen: {last_detail or 'nothing'}). Look at: {stage.look_at}"
        )


@dataclass
class Stage:
    key: str
    title: str
    deadline_s: float
    look_at: str


@dataclass
class Observed:
    key: str
    title: str
    at: float  # seconds since drift onset
    detail: str


@dataclass
class LoopState:
    """What earlier stages found out, for the later ones to use."""

    start_champion: str
    onset_wall: float
    dag_run_id: str | None = None
    new_version: str | None = None
    tasks_seen: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)


STAGES = [
    Stage(
        "drift_detected",
        "drift detected",
        90,
        "`driftloop logs drift-consumer`; Prometheus: driftloop_drift_value vs driftloop_drift_threshold",
    ),
    Stage(
        "alert_firing",
        "alert firing",
        120,
        "Prometheus /alerts and `driftloop logs prometheus`; Alertmanager /#/alerts",
    ),
    Stage(
        "bridge_triggered",
        "bridge triggered a DAG run",
        150,
        "`driftloop logs bridge`; GET bridge /decisions; `driftloop logs alertmanager`",
    ),
    Stage(
        "dag_succeeded",
        "retraining DAG succeeded",
        330,
        "Airflow UI → DAG retrain_house_price; `driftloop logs airflow-scheduler`",
    ),
    Stage(
        "promoted",
        "challenger promoted to champion",
        340,
        "MLflow UI → model california-housing (version tags: decision, scores)",
    ),
    Stage(
        "replicas_serving",
        "every replica serves the new champion",
        370,
        "`driftloop logs model-api-0`; GET each replica /model",
    ),
    Stage(
        "drift_recovered",
        "drift back under the thresholds",
        480,
        "`driftloop logs drift-consumer`; Prometheus driftloop_drift_value{model_version=...}",
    ),
    Stage("alert_resolved", "alert resolved", 560, "Alertmanager /#/alerts; Prometheus /alerts"),
]


def _check(
    stage: str, ep: Endpoints, st: LoopState, airflow: observe.Airflow, emit: Callable[[str], None]
) -> str | None:
    """Return a detail string once the stage is observed, else None."""
    if stage == "drift_detected":
        series = observe.drifting_series(ep, st.start_champion)
        if series:
            top = series[0]
            return (
                f"{top['feature']} {top['statistic']}={top['value']:.3f} > "
                f"threshold {top['threshold']:.3f} ({len(series)} series over)"
            )
    elif stage == "alert_firing":
        alerts = observe.active_retrain_alerts(ep)
        if alerts:
            names = sorted({a["labels"].get("alertname", "?") for a in alerts})
            return f"{', '.join(names)} ({len(alerts)} active)"
    elif stage == "bridge_triggered":
        for d in observe.bridge_decisions(ep):
            fresh = _timestamp(d) >= st.onset_wall - 5
            if d.get("decision") in {"triggered", "queued"} and d.get("dag_run_id") and fresh:
                st.dag_run_id = d["dag_run_id"]
                return f"{d['decision']} dag_run_id={st.dag_run_id} (rule {d.get('rule')})"
    elif stage == "dag_succeeded":
        assert st.dag_run_id
        for ti in airflow.task_instances(st.dag_run_id):
            name, state = ti["task_id"], ti.get("state")
            if (
                state in {"success", "skipped", "failed", "upstream_failed"}
                and name not in st.tasks_seen
            ):
                st.tasks_seen.add(name)
                dur = ti.get("duration")
                emit(f"task {name}: {state}" + (f" in {dur:.1f}s" if dur else ""))
        run = airflow.dag_run(st.dag_run_id)
        if run and run.get("state") == "failed":
            raise RuntimeError(f"DAG run {st.dag_run_id} failed; see the Airflow UI")
        if run and run.get("state") == "success":
            return f"run {st.dag_run_id} success"
    elif stage == "promoted":
        champ = observe.champion_version(ep)
        if champ and str(champ["version"]) != st.start_champion:
            st.new_version = str(champ["version"])
            tags = {t["key"]: t["value"] for t in champ.get("tags", [])}
            scores = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()) if "rmse" in k)
            return f"version {st.start_champion} → {st.new_version}" + (
                f" ({scores})" if scores else ""
            )
    elif stage == "replicas_serving":
        versions = observe.replica_versions(ep)
        if versions and all(v == st.new_version for v in versions.values()):
            return f"{len(versions)} replicas on version {st.new_version}"
    elif stage == "drift_recovered":
        assert st.new_version
        if observe.windows_for_version(ep, st.new_version) >= 1 and not observe.drifting_series(
            ep, st.new_version
        ):
            return f"no series over threshold for version {st.new_version}"
    elif stage == "alert_resolved" and not observe.active_retrain_alerts(ep):
        return "no active retraining alert"
    return None


def _timestamp(decision: dict[str, Any]) -> float:
    from datetime import datetime

    raw = decision.get("time") or decision.get("timestamp") or decision.get("at")
    try:
        return datetime.fromisoformat(str(raw)).timestamp()
    except ValueError:
        return 0.0


def follow(
    ep: Endpoints,
    st: LoopState,
    on_stage: Callable[[Observed], None],
    on_note: Callable[[str], None],
    on_wait: Callable[[Stage, float], None] | None = None,
    deadline_scale: float = 1.0,
    poll_s: float = 1.0,
) -> list[Observed]:
    airflow = observe.Airflow(ep)
    observed: list[Observed] = []
    for stage in STAGES:
        while True:
            elapsed = time.time() - st.onset_wall
            detail = _check(stage.key, ep, st, airflow, on_note)
            if detail is not None:
                rec = Observed(
                    stage.key, stage.title, round(time.time() - st.onset_wall, 1), detail
                )
                observed.append(rec)
                on_stage(rec)
                break
            if elapsed > stage.deadline_s * deadline_scale:
                raise StageTimeout(stage, elapsed, "")
            if on_wait:
                on_wait(stage, elapsed)
            time.sleep(poll_s)
    return observed
