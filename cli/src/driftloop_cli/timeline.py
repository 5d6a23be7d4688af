"""Follow the loop closing, stage by stage, against the live components.

The stages happen in this order, and each is linked to the one before, so the timeline shows
causality rather than coincidence: the bridge's decision names the alert Alertmanager fired
(alertname and fingerprint), the DAG run that succeeded is the one the bridge triggered, the
new champion is tagged with that run, every replica serves that version, the new version's own
windows stay under the thresholds, the very alert that fired is resolved (Alertmanager no
longer lists it and the bridge recorded ``resolved``), that incident got exactly one run, and
the post-promotion watch of that new version against the previous champion was decided (kept,
or rolled back with ``champion`` and every replica on the previous version again). The watch
may outlast the demo: unless ``DRIFTLOOP_TIMELINE_WATCH_REQUIRED`` is set, its stage reports
"watching" and passes; a decision already recorded is checked either way.

Three ways a stage ends:

* observed: the next stage starts;
* not observed yet: polled until its deadline (seconds since drift onset), then
  :class:`StageTimeout` names the stage, what was last seen and where to look;
* :class:`~driftloop_cli.observe.ObservationError` (a component is unreachable or erroring)
  or :class:`LinkageError` (a stage contradicts an earlier one): it fails at once, because
  waiting cannot make an unknown answer or a broken chain true. (A read that timed out is
  first asked again, up to ``observe.TIMEOUT_TRIES`` times: on a loaded machine that is a slow
  answer, not an unknown one.)

`driftloop demo` prints the timeline; the end-to-end test asserts on the same records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_contracts import WATCH_DECISION_TAG_PREFIX, WATCH_UNTIL_TAG

from . import observe
from .observe import Endpoints

#: How long before drift onset a decision or a DAG run still counts as this incident's.
ONSET_SLACK_S = 5.0

TRIGGERING = frozenset({"triggered", "queued"})


class TimelineSettings(BaseSettings):
    """What the timeline requires (prefix ``DRIFTLOOP_TIMELINE_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_TIMELINE_", extra="ignore")

    #: Consecutive closed windows of the new champion, none over a threshold, before "drift
    #: back under" counts: one clean window can be luck.
    recovered_windows: int = Field(3, ge=1)
    #: Wait for the post-promotion watch's decision (kept or rolled back). Off (the demo's
    #: default): the last stage reports the watch still running and passes, because the watch
    #: may be longer than the demo; a decision already taken is checked either way.
    watch_required: bool = False


class LinkageError(RuntimeError):
    """A stage contradicts an earlier one (another alert, run or version than the chain's)."""

    def __init__(self, stage: Stage, detail: str) -> None:
        self.stage = stage
        super().__init__(f"stage '{stage.title}': {detail}. Look at: {stage.look_at}")


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
    #: Retraining alerts seen active in Alertmanager since onset, by fingerprint.
    fired: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The bridge decision that triggered this incident's run.
    decision: dict[str, Any] | None = None
    #: Window counters of the new version: (windows when the last drifting one was seen,
    #: drifting windows then); None before the first look.
    windows_base: tuple[float, float] | None = None
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
        "MLflow UI → model california-housing (version tags: decision, dag_run_id, scores)",
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
        "`driftloop logs drift-consumer`; Prometheus driftloop_windows_total and "
        "driftloop_windows_drift_total{model_version=...}",
    ),
    Stage(
        "alert_resolved",
        "alert resolved",
        560,
        "Alertmanager /#/alerts; Prometheus /alerts; GET bridge /decisions",
    ),
    Stage(
        "one_run",
        "exactly one DAG run for the incident",
        560,
        "Airflow UI → DAG retrain_house_price (runs); GET bridge /decisions",
    ),
    Stage(
        "watch",
        "post-promotion watch: kept or rolled back",
        1200,
        "MLflow UI → model california-housing (aliases champion/shadow, version tags "
        "driftloop.watch_until and driftloop.rollback.*); `driftloop logs drift-consumer`",
    ),
]

STAGE_BY_KEY = {s.key: s for s in STAGES}


@dataclass(frozen=True)
class Pending:
    """Not observed yet; ``seen`` says what was (for the timeout message)."""

    seen: str


Check = Callable[["Context"], "str | Pending"]


@dataclass
class Context:
    ep: Endpoints
    st: LoopState
    airflow: observe.Airflow
    emit: Callable[[str], None]
    settings: TimelineSettings
    stage: Stage


def _timestamp(decision: dict[str, Any]) -> float:
    raw = decision.get("at") or decision.get("time") or decision.get("timestamp")
    try:
        return datetime.fromisoformat(str(raw)).timestamp()
    except ValueError:
        return 0.0


def _fresh(st: LoopState, decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decisions taken since drift onset, oldest first (the bridge lists newest first)."""
    return [d for d in reversed(decisions) if _timestamp(d) >= st.onset_wall - ONSET_SLACK_S]


def _alert_name(alert: dict[str, Any]) -> str:
    return str(alert.get("labels", {}).get("alertname", "?"))


def check_drift_detected(cx: Context) -> str | Pending:
    series = observe.drifting_series(cx.ep, cx.st.start_champion)
    if not series:
        return Pending(f"no series of version {cx.st.start_champion} over its threshold")
    top = series[0]
    return (
        f"{top['feature']} {top['statistic']}={top['value']:.3f} > "
        f"threshold {top['threshold']:.3f} ({len(series)} series over)"
    )


def check_alert_firing(cx: Context) -> str | Pending:
    alerts = observe.active_retrain_alerts(cx.ep)
    for a in alerts:
        cx.st.fired[str(a.get("fingerprint", ""))] = a
    if not alerts:
        return Pending("Alertmanager answers, no active retraining alert")
    names = sorted({_alert_name(a) for a in alerts})
    return f"{', '.join(names)} ({len(alerts)} active)"


def check_bridge_triggered(cx: Context) -> str | Pending:
    st = cx.st
    fresh = _fresh(st, observe.bridge_decisions(cx.ep))
    triggers = [d for d in fresh if d.get("decision") in TRIGGERING and d.get("dag_run_id")]
    if not triggers:
        braked = [d for d in fresh if d.get("decision") == "braked"]
        if braked:
            # Waiting cannot help: the brake holds until a person resets it (or it expires).
            raise LinkageError(
                cx.stage,
                f"the bridge braked alert {braked[0].get('alertname')}: the retraining budget "
                f"is spent ({braked[0].get('reason', 'too many retrains')}); look at what kept "
                "retraining, then run `uv run driftloop loop reset-brake`",
            )
        return Pending("no triggered/queued decision since onset")
    for a in observe.active_retrain_alerts(cx.ep):
        st.fired[str(a.get("fingerprint", ""))] = a
    d = triggers[0]
    alert = st.fired.get(str(d.get("fingerprint") or ""))
    if alert is None or _alert_name(alert) != d.get("alertname"):
        fired = ", ".join(f"{_alert_name(a)}/{fp}" for fp, a in st.fired.items()) or "none"
        raise LinkageError(
            cx.stage,
            f"the bridge triggered {d.get('dag_run_id')} for alert "
            f"{d.get('alertname')}/{d.get('fingerprint')}, which is not an alert Alertmanager "
            f"fired (fired: {fired})",
        )
    st.decision = d
    st.dag_run_id = str(d["dag_run_id"])
    labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
    return (
        f"{d['decision']} dag_run_id={st.dag_run_id} (rule {d.get('rule')}) for "
        f"fingerprint {d.get('fingerprint')} {{{labels}}}"
    )


def _other_runs(cx: Context) -> list[str]:
    runs = cx.airflow.dag_runs_since(cx.st.onset_wall - ONSET_SLACK_S)
    return [str(r.get("dag_run_id")) for r in runs if r.get("dag_run_id") != cx.st.dag_run_id]


def check_dag_succeeded(cx: Context) -> str | Pending:
    st = cx.st
    assert st.dag_run_id
    others = _other_runs(cx)
    if others:
        raise LinkageError(
            cx.stage,
            f"runs other than the bridge's {st.dag_run_id} started since onset: {others}",
        )
    for ti in cx.airflow.task_instances(st.dag_run_id):
        name, state = ti["task_id"], ti.get("state")
        if (
            state in {"success", "skipped", "failed", "upstream_failed"}
            and name not in st.tasks_seen
        ):
            st.tasks_seen.add(name)
            dur = ti.get("duration")
            cx.emit(f"task {name}: {state}" + (f" in {dur:.1f}s" if dur else ""))
    run = cx.airflow.dag_run(st.dag_run_id)
    if run is None:
        return Pending(f"Airflow has no run {st.dag_run_id} yet")
    if run.get("state") == "failed":
        raise LinkageError(cx.stage, f"DAG run {st.dag_run_id} failed; see the Airflow UI")
    if run.get("state") != "success":
        return Pending(f"run {st.dag_run_id} {run.get('state')}")
    return f"run {st.dag_run_id} success"


def check_promoted(cx: Context) -> str | Pending:
    st = cx.st
    champ = observe.champion_version(cx.ep)
    if not champ or str(champ.get("version")) == st.start_champion:
        return Pending(f"champion still version {st.start_champion}")
    version = str(champ["version"])
    tags = observe.version_tags(champ)
    tagged = tags.get(observe.DAG_RUN_ID_TAG)
    if tagged != st.dag_run_id:
        raise LinkageError(
            cx.stage,
            f"the new champion, version {version}, is tagged {observe.DAG_RUN_ID_TAG}={tagged!r}, "
            f"not the bridge's run {st.dag_run_id}",
        )
    st.new_version = version
    scores = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()) if "rmse" in k)
    return f"version {st.start_champion} → {version} from run {tagged}" + (
        f" ({scores})" if scores else ""
    )


def check_replicas_serving(cx: Context) -> str | Pending:
    versions = cx.ep.replicas and observe.replica_versions(cx.ep)
    if not versions or any(v != cx.st.new_version for v in versions.values()):
        return Pending(f"replicas serve {versions}")
    return f"{len(versions)} replicas on version {cx.st.new_version}"


def check_drift_recovered(cx: Context) -> str | Pending:
    """``recovered_windows`` consecutive windows of the new version with nothing over.

    Read from the drift consumer's counters (windows closed; windows with any statistic over
    its threshold) in one query, so no window closes between the two numbers: a window is
    counted clean only once it is known not to be among the drifting ones.
    """
    st, need = cx.st, cx.settings.recovered_windows
    assert st.new_version
    windows, drifting = observe.window_counts(cx.ep, st.new_version)
    if st.windows_base is None:
        # Before the first look, where drifting windows fall among the others is unknown.
        st.windows_base = (0.0 if drifting == 0 else windows, drifting)
    elif drifting > st.windows_base[1]:
        st.windows_base = (windows, drifting)
    clean = windows - st.windows_base[0]
    seen = f"{clean:.0f} of {need} consecutive windows of version {st.new_version} under"
    if clean < need:
        return Pending(seen)
    over = observe.drifting_series(cx.ep, st.new_version)
    if over:
        return Pending(f"{seen}, but {len(over)} series over now")
    return f"{clean:.0f} consecutive windows of version {st.new_version} under the thresholds"


def check_alert_resolved(cx: Context) -> str | Pending:
    st = cx.st
    assert st.decision
    fingerprint = str(st.decision.get("fingerprint") or "")
    held = observe.retrain_alerts(cx.ep)
    still = [a for a in held if str(a.get("fingerprint", "")) == fingerprint]
    if still:
        return Pending(f"Alertmanager still lists {_alert_name(still[0])}/{fingerprint}")
    active = [a for a in held if a.get("status", {}).get("state") == "active"]
    if active:
        return Pending(
            f"other retraining alerts active: {sorted({_alert_name(a) for a in active})}"
        )
    recorded = any(
        d.get("decision") == "resolved" and d.get("fingerprint") == fingerprint
        for d in _fresh(st, observe.bridge_decisions(cx.ep))
    )
    if not recorded:
        return Pending(f"Alertmanager dropped {fingerprint}; the bridge has not recorded resolved")
    return f"{st.decision.get('alertname')}/{fingerprint} resolved in Alertmanager and the bridge"


def check_one_run(cx: Context) -> str | Pending:
    st = cx.st
    others = _other_runs(cx)
    fresh = _fresh(st, observe.bridge_decisions(cx.ep))
    # a trigger queued, then stood down because this incident's run was active, started nothing
    stood_down = {str(d.get("dag_run_id")) for d in fresh if d.get("decision") == "run_active"}
    run_ids = {
        str(d.get("dag_run_id"))
        for d in fresh
        if d.get("decision") in TRIGGERING and d.get("dag_run_id")
    } - stood_down
    if others or run_ids != {st.dag_run_id}:
        raise LinkageError(
            cx.stage,
            f"one incident, more runs: Airflow runs since onset besides {st.dag_run_id}: "
            f"{others}; runs the bridge triggered: {sorted(run_ids)}",
        )
    return f"run {st.dag_run_id} only (Airflow and the bridge agree)"


def check_watch(cx: Context) -> str | Pending:
    """The watch of the new champion against the previous one (the drift consumer decides;
    docs/retraining.md, 'Watch and rollback'). A decision must be about this incident's pair
    (new version vs the champion before onset); a rollback counts once ``champion`` names the
    previous version again and every replica serves it."""
    st = cx.st
    assert st.new_version
    version = observe.model_version(cx.ep, st.new_version)
    if version is None:
        raise LinkageError(cx.stage, f"MLflow has no version {st.new_version} any more")
    tags = observe.version_tags(version)
    outcome = tags.get(f"{WATCH_DECISION_TAG_PREFIX}.outcome")
    if outcome is None:
        until = tags.get(WATCH_UNTIL_TAG)
        seen = (
            f"watching version {st.new_version} against {st.start_champion} until {until}"
            if until
            else f"version {st.new_version} has no {WATCH_UNTIL_TAG} tag (no watch)"
        )
        if cx.settings.watch_required:
            return Pending(seen)
        return f"{seen}; no decision yet (not awaited: DRIFTLOOP_TIMELINE_WATCH_REQUIRED=false)"
    decided = (
        tags.get(f"{WATCH_DECISION_TAG_PREFIX}.champion"),
        tags.get(f"{WATCH_DECISION_TAG_PREFIX}.shadow"),
    )
    if decided != (st.new_version, st.start_champion) or outcome not in {"kept", "rolled_back"}:
        raise LinkageError(
            cx.stage,
            f"the watch recorded on version {st.new_version} is {outcome} of {decided[0]} vs "
            f"{decided[1]}, not of this incident's {st.new_version} vs {st.start_champion}",
        )
    figures = tags.get(f"{WATCH_DECISION_TAG_PREFIX}.reason", "")
    if outcome == "kept":
        return f"kept version {st.new_version}: {figures}"
    champ = observe.champion_version(cx.ep)
    if not champ or str(champ.get("version")) != st.start_champion:
        return Pending(f"rollback recorded, champion is {champ and champ.get('version')}")
    versions = observe.replica_versions(cx.ep)
    if any(v != st.start_champion for v in versions.values()):
        return Pending(f"rolled back; replicas serve {versions}")
    return (
        f"rolled back to version {st.start_champion} ({len(versions)} replicas serve it): {figures}"
    )


CHECKS: dict[str, Check] = {
    "drift_detected": check_drift_detected,
    "alert_firing": check_alert_firing,
    "bridge_triggered": check_bridge_triggered,
    "dag_succeeded": check_dag_succeeded,
    "promoted": check_promoted,
    "replicas_serving": check_replicas_serving,
    "drift_recovered": check_drift_recovered,
    "alert_resolved": check_alert_resolved,
    "one_run": check_one_run,
    "watch": check_watch,
}


def follow(
    ep: Endpoints,
    st: LoopState,
    on_stage: Callable[[Observed], None],
    on_note: Callable[[str], None],
    on_wait: Callable[[Stage, float], None] | None = None,
    deadline_scale: float = 1.0,
    poll_s: float = 1.0,
    *,
    settings: TimelineSettings | None = None,
    stages: list[Stage] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Observed]:
    """Observe ``stages`` (all of them by default) in order; raise on the first that fails."""
    airflow = observe.Airflow(ep)
    settings = settings or TimelineSettings()
    observed: list[Observed] = []
    for stage in stages or STAGES:
        cx = Context(ep, st, airflow, on_note, settings, stage)
        while True:
            elapsed = clock() - st.onset_wall
            result = CHECKS[stage.key](cx)
            if not isinstance(result, Pending):
                rec = Observed(stage.key, stage.title, round(clock() - st.onset_wall, 1), result)
                observed.append(rec)
                on_stage(rec)
                break
            if elapsed > stage.deadline_s * deadline_scale:
                raise StageTimeout(stage, elapsed, result.seen)
            if on_wait:
                on_wait(stage, elapsed)
            sleep(poll_s)
    return observed
