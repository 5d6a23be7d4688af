"""`driftloop demo`: drive traffic through the live stack and narrate the loop closing.

Steady traffic first, then sudden covariate drift with concept drift in the feedback. The
timeline prints each stage with its time since drift onset; the run ends with a summary
(JSON + Markdown) of stage times, time-to-recover, requests and event counts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from driftloop_contracts import (
    API_KEY_HEADER,
    EXAMPLE_FEATURES,
    FEEDBACK_TOPIC,
    LOCAL_FEEDBACK_API_KEY,
    PREDICTIONS_TOPIC,
    FeedbackApiKeySettings,
)
from driftloop_loadtest import command as loadtest_command
from driftloop_loadtest.results import AGGREGATED, read_schedule_log, read_stats

from . import observe, settle, timeline
from .settings import REPO_ROOT, StackSettings


class Progress(Protocol):
    """Where the demo narrates: the CLI's live console, a benchmark's stderr, a test's list."""

    def stage(self, rec: timeline.Observed) -> None: ...

    def note(self, message: str) -> None: ...

    def waiting(self, what: str, remaining_s: float) -> None: ...

    def waiting_stage(self, stage: timeline.Stage, elapsed_s: float) -> None: ...


@dataclass
class DemoOptions:
    users: int = 8
    spawn_rate: float = 8.0
    steady_s: int = 30
    max_run_s: int = 900
    feedback_share: float = 1.0
    feedback_delay_s: float = 2.0
    deadline_scale: float = 1.0
    report_dir: Path | None = None
    #: After the timeline completed, keep the drifted traffic this long and check that the
    #: loop stays settled (no other DAG run, no other promotion: :mod:`.settle`). 0 = don't.
    settle_s: int = 0
    #: Seconds between the timeline's looks at a stage (the observation delay of each stage).
    poll_s: float = 1.0


@dataclass
class DemoSummary:
    started_at: float
    onset_at: float
    start_champion: str
    new_champion: str | None
    stages: list[dict[str, Any]]
    time_to_recover_s: float | None
    requests: int = 0
    failed_requests: int = 0
    events: dict[str, float] = field(default_factory=dict)
    report_dir: str = ""
    error: str | None = None
    #: What the settle period saw (:class:`.settle.SettleReport`), when ``settle_s`` > 0.
    settle: dict[str, Any] | None = None


def endpoints(s: StackSettings) -> observe.Endpoints:
    urls = s.urls
    return observe.Endpoints(
        prometheus=urls.prometheus,
        alertmanager=urls.alertmanager,
        bridge=urls.bridge,
        airflow=urls.airflow,
        airflow_username=s.airflow_username,
        airflow_password=s.airflow_password.get_secret_value(),
        mlflow=urls.mlflow,
        replicas=urls.model_apis(s.replicas),
        nginx=urls.nginx,
    )


def locust_command(host: str, opts: DemoOptions, report_dir: Path) -> list[str]:
    return loadtest_command.locust_command(
        host=host,
        users=opts.users,
        spawn_rate=opts.spawn_rate,
        run_time_s=opts.max_run_s,
        schedule=f"steady:{opts.steady_s},sudden+concept:0",
        report_dir=report_dir,
        feedback_share=opts.feedback_share,
        feedback_delay_s=opts.feedback_delay_s,
    )


def feedback_example(nginx_url: str) -> str:
    """One prediction through nginx, and the command that labels it (docs/api.md, "Feedback").

    Labels need the answer's ``feedback_token`` and a label producer's API key; locust reads
    both the same way (the key from ``DRIFTLOOP_MODEL_API_FEEDBACK_API_KEYS``, as the replicas
    do). The key is printed only when it is the documented local default.
    """
    answer = httpx.post(f"{nginx_url}/predict", json=EXAMPLE_FEATURES, timeout=10)
    answer.raise_for_status()
    reply = answer.json()
    key = FeedbackApiKeySettings().producer_key
    shown = key if key == LOCAL_FEEDBACK_API_KEY else "$DRIFTLOOP_MODEL_API_FEEDBACK_API_KEYS"
    label = json.dumps(
        {
            "request_id": reply["request_id"],
            "actual": 452_600.0,
            "feedback_token": reply["feedback_token"],
        }
    )
    return (
        f"labels are sent with each answer's feedback_token and a producer key, e.g. "
        f"curl -X POST {nginx_url}/feedback -H 'Content-Type: application/json' "
        f"-H \"{API_KEY_HEADER}: {shown}\" -d '{label}'"
    )


#: What each replica counts per topic: ``<topic key>_<kind>`` in :func:`event_counts`.
_REPLICA_COUNTERS = {
    "published": "driftloop_events_published_total",
    "dropped": "driftloop_events_dropped_total",
    "failed": "driftloop_events_failed_total",
    "buffered": "driftloop_events_buffered",
}
_TOPICS = {"predictions": PREDICTIONS_TOPIC, "feedback": FEEDBACK_TOPIC}


def event_counts(s: StackSettings) -> dict[str, float]:
    """Events accepted, delivered, dropped and buffered by the replicas, and consumed."""
    replicas = observe.scrape_metrics(s.urls.model_apis(s.replicas))
    consumer = observe.scrape_metrics([s.urls.drift_consumer])
    counts = {
        f"{key}_{kind}": observe.metric_total(replicas, metric, topic=topic)
        for key, topic in _TOPICS.items()
        for kind, metric in _REPLICA_COUNTERS.items()
    }
    for key, topic in _TOPICS.items():
        counts[f"{key}_consumed"] = observe.metric_total(
            consumer, "driftloop_events_consumed_total", topic=topic
        )
    counts["invalid_events"] = observe.metric_total(consumer, "driftloop_events_invalid_total")
    return counts


#: Gauges (each replica's per-topic publish buffer), not counters: never made relative to a
#: baseline.
BUFFERED = ("predictions_buffered", "feedback_buffered")


def _nothing_buffered(counts: dict[str, float]) -> bool:
    return all(counts[k] == 0 for k in BUFFERED)


def _caught_up(counts: dict[str, float]) -> bool:
    return (
        counts["predictions_consumed"] == counts["predictions_published"]
        and counts["feedback_consumed"] == counts["feedback_published"]
        and _nothing_buffered(counts)
    )


def quiet_counts(s: StackSettings, timeout_s: float = 60) -> dict[str, float]:
    """The counters once nothing is in flight: two scrapes in a row agree and nothing is buffered.

    A baseline taken while events are in flight skews this run's share: the consumer may count
    an event before the replica that sent it has counted its acknowledgement.
    """
    deadline = time.monotonic() + timeout_s
    previous = event_counts(s)
    while True:
        time.sleep(0.5)
        now = event_counts(s)
        if now == previous and _nothing_buffered(now):
            return now
        if time.monotonic() > deadline:
            return now  # still busy (someone else's traffic): the best baseline there is
        previous = now


def wait_consumed(
    s: StackSettings, baseline: dict[str, float], timeout_s: float = 60
) -> dict[str, float]:
    """Poll until the consumer has counted exactly the events published since ``baseline`` and
    nothing is buffered (or time is up: the counts then show what is missing or extra)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = event_counts(s)
        counts = {k: v - baseline.get(k, 0.0) if k not in BUFFERED else v for k, v in now.items()}
        if _caught_up(counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def locust_totals(report_dir: Path) -> tuple[int, int]:
    path = loadtest_command.report_paths(report_dir).stats_csv
    total = read_stats(path).get(AGGREGATED) if path.exists() else None
    return (total.requests, total.failures) if total else (0, 0)


def run(s: StackSettings, opts: DemoOptions, printer: Progress) -> DemoSummary:
    ep = endpoints(s)
    champ = observe.champion_version(ep)
    if not champ:
        raise RuntimeError("no champion registered: run `driftloop bootstrap` first")
    start_champion = str(champ["version"])
    wait_replicas_ready(ep, printer)
    printer.note(feedback_example(ep.nginx))
    report_dir = opts.report_dir or s.state_dir / "demo" / time.strftime("%Y%m%dT%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    baseline = quiet_counts(s)  # counters are cumulative: the summary reports this run's share
    started = time.time()
    log = (report_dir / "locust.log").open("w")
    proc = subprocess.Popen(
        locust_command(ep.nginx, opts, report_dir),
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    onset = started + opts.steady_s
    printer.note(
        f"locust: {opts.users} users against {ep.nginx}; steady for {opts.steady_s}s, "
        f"then sudden covariate + concept drift (reports in {report_dir})"
    )
    summary = DemoSummary(
        started, onset, start_champion, None, [], None, report_dir=str(report_dir)
    )
    state = timeline.LoopState(start_champion=start_champion, onset_wall=onset)
    try:
        onset = wait_for_onset(proc, report_dir, opts, printer)
        summary.onset_at = state.onset_wall = onset
        printer.note("drift starts now (t=0)")
        observed = timeline.follow(
            ep,
            state,
            on_stage=printer.stage,
            on_note=printer.note,
            on_wait=printer.waiting_stage,
            deadline_scale=opts.deadline_scale,
            poll_s=opts.poll_s,
        )
        summary.stages = [asdict(o) for o in observed]
        summary.new_champion = state.new_version
        serving = next((o for o in observed if o.key == "replicas_serving"), None)
        summary.time_to_recover_s = serving.at if serving else None
        if opts.settle_s:
            summary.settle = settle.watch(ep, state, opts.settle_s, printer.note).as_dict()
    except (timeline.StageTimeout, RuntimeError) as exc:
        summary.error = str(exc)
        summary.new_champion = state.new_version
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # locust writes its CSV/HTML reports on SIGINT
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        try:
            summary.events = wait_consumed(s, baseline)
        except observe.ObservationError as exc:  # the summary is still written, with why
            summary.error = f"{summary.error}; {exc}" if summary.error else str(exc)
        summary.requests, summary.failed_requests = locust_totals(report_dir)
        write_summary(summary, report_dir)
    return summary


def wait_replicas_ready(ep: observe.Endpoints, printer: Progress, timeout_s: float = 180) -> None:
    """Traffic starts only once every replica has loaded a champion (readiness, not liveness)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ready = []
        for url in ep.replicas:
            try:
                ready.append(httpx.get(f"{url}/health/ready", timeout=5).status_code == 200)
            except httpx.HTTPError:
                ready.append(False)
        if all(ready):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"replicas not ready after {timeout_s:.0f}s: "
                f"{[u for u, r in zip(ep.replicas, ready, strict=True) if not r]}; "
                "see `driftloop logs model-api-0`"
            )
        printer.waiting(f"waiting for {len(ready) - sum(ready)} replica(s) to load the champion", 0)
        time.sleep(0.5)


def wait_for_onset(
    proc: subprocess.Popen[bytes], report_dir: Path, opts: DemoOptions, printer: Progress
) -> float:
    """The wall time locust switched to the drift scenario (from its schedule log)."""
    log_path = loadtest_command.report_paths(report_dir).schedule_log
    deadline = time.monotonic() + opts.steady_s + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"locust exited early; see {report_dir / 'locust.log'}")
        entries = read_schedule_log(log_path) if log_path.exists() else []
        drift = [e for e in entries if e.get("segment_index", 0) >= 1]
        if drift:
            return float(drift[0]["wall_time"])
        started = [e for e in entries if e.get("segment_index") == 0]
        left = opts.steady_s - (time.time() - started[0]["wall_time"]) if started else opts.steady_s
        printer.waiting("steady traffic" if started else "starting locust", max(left, 0))
        time.sleep(0.5)
    raise RuntimeError(
        f"locust never switched to the drift scenario; see {report_dir / 'locust.log'}"
    )


def write_summary(summary: DemoSummary, report_dir: Path) -> None:
    (report_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    lines = [
        "# driftloop demo summary",
        "",
        f"- champion: {summary.start_champion} → {summary.new_champion or 'unchanged'}",
        f"- time to recover (drift onset → every replica on the new champion): "
        f"{summary.time_to_recover_s if summary.time_to_recover_s is not None else 'n/a'} s",
        f"- requests: {summary.requests}, failed: {summary.failed_requests}",
        "",
        "| t (s) | stage | detail |",
        "| ---: | --- | --- |",
        *[f"| {s['at']:.1f} | {s['title']} | {s['detail']} |" for s in summary.stages],
        "",
        "| events | count |",
        "| --- | ---: |",
        *[f"| {k} | {v:.0f} |" for k, v in summary.events.items()],
    ]
    if summary.error:
        lines += ["", f"**Stopped early:** {summary.error}"]
    (report_dir / "summary.md").write_text("\n".join(lines) + "\n")
