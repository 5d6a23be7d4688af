"""Soak: can the loop be left alone? The local stack under locust for N minutes, drift switched
on and off every M minutes, every component sampled once a minute.

    uv run python bench/soak.py [--minutes 60] [--switch-minutes 6] [--sample-seconds 60]
                                [--users 8] [--base-port 18000] [--out DIR]

The schedule cycles steady, sudden + concept, steady, gradual, ... (one segment per
``--switch-minutes``); each switch into drift is an *incident* the loop should answer with (at
most) one retraining DAG run. Every sample records, per component of ``driftloop status``: the
RSS of its supervised process tree, whether it is ready (our services' ``/health/ready``,
the infrastructure's health probe); and the loop's decisions: bridge decisions, Airflow DAG
runs, the MLflow champion version, Redis memory. At the end it prints a table (failed
requests, minutes not ready per component, DAG runs per incident, RSS first -> last -> peak per
component, and a flag on every component whose RSS still grows over the second half) and
writes ``samples.json``/``samples.csv`` next to locust's reports.

Exit status: 0 if no request failed and every component was ready at every sample, 1
otherwise (2 with ``--strict-memory`` when only memory growth was flagged).
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.markup import escape

from driftloop_cli import observe, stack
from driftloop_cli.commands.bootstrap import run_bootstrap
from driftloop_cli.demo import endpoints
from driftloop_cli.settings import StackSettings
from driftloop_contracts import DAG_ID, DEFAULT_BASE_PORT, load_settings
from driftloop_loadtest.command import locust_command, report_paths
from driftloop_loadtest.results import AGGREGATED, read_schedule_log, read_stats

#: The drift regimes, in the order they repeat (steady between two drifts, so each drift
#: is a separate incident the loop must detect and answer).
CYCLE = ("steady", "sudden+concept", "steady", "gradual")
MIB = 1024 * 1024
#: Seconds between the two probes that must both fail for a component to count as not ready.
RECHECK_S = 5.0


@dataclass
class Sample:
    """One minute of the soak."""

    at: float
    elapsed_s: float
    rss_mib: dict[str, float]
    ready: dict[str, bool]
    not_ready_why: dict[str, str]
    champion_version: str | None
    dag_runs: int
    bridge_decisions: dict[str, int]
    redis_used_mib: float | None
    redis_keys: int | None
    requests: int
    failures: int


@dataclass
class Segment:
    index: int
    scenario: str
    started_at: float
    ended_at: float
    dag_runs: list[str] = field(default_factory=list)
    champions: list[str] = field(default_factory=list)

    @property
    def incident(self) -> bool:
        return self.scenario != "steady"


def schedule_for(minutes: float, switch_minutes: float) -> str:
    """``steady:360,sudden+concept:360,steady:360,gradual:360,...`` covering ``minutes``."""
    n = max(1, int(-(-minutes // switch_minutes)))  # ceil
    seconds = int(switch_minutes * 60)
    return ",".join(f"{CYCLE[i % len(CYCLE)]}:{seconds}" for i in range(n))


def dag_runs(airflow: observe.Airflow) -> list[dict[str, Any]] | None:
    """Every run of the retraining DAG (newest first; at most 1000); ``None`` when Airflow
    did not answer (the sample then keeps the previous list: unknown is not zero)."""
    try:
        body = airflow._get(f"/dags/{DAG_ID}/dagRuns?limit=1000&order_by=-run_after")
    except Exception:  # a sampler reports what it can; Airflow down shows in readiness
        return None
    return list((body or {}).get("dag_runs", []))


def redis_memory(url: str) -> tuple[float | None, int | None]:
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        return int(client.info("memory")["used_memory"]) / MIB, int(client.dbsize())
    except redis.RedisError:
        return None, None


def locust_totals(report_dir: Path) -> tuple[int, int]:
    path = report_paths(report_dir).stats_csv
    try:
        total = read_stats(path).get(AGGREGATED) if path.exists() else None
    except (OSError, ValueError, KeyError):
        return 0, 0
    return (total.requests, total.failures) if total else (0, 0)


def is_ready(st: stack.ComponentStatus) -> bool:
    return bool(st.ready if st.ready is not None else st.healthy)


def take_sample(
    s: StackSettings,
    ep: observe.Endpoints,
    airflow: observe.Airflow,
    report_dir: Path,
    t0: float,
    previous_runs: list[dict[str, Any]],
) -> tuple[Sample, list[dict[str, Any]]]:
    statuses = stack.status(s)
    if not all(map(is_ready, statuses)):
        # A probe answers within 2 s; on a loaded machine one slow answer is not an outage:
        # a component counts as not ready only if it fails twice, RECHECK_S apart.
        time.sleep(RECHECK_S)
        again = {st.name: st for st in stack.status(s)}
        statuses = [st if is_ready(st) else again.get(st.name, st) for st in statuses]
    # status() measured each component's process tree (driftloop_cli.memory)
    rss = {st.name: round((st.rss_bytes or 0) / MIB, 1) for st in statuses}
    ready = {st.name: is_ready(st) for st in statuses}
    why = {
        st.name: (st.ready_detail if st.ready is False else st.detail)
        for st in statuses
        if not ready[st.name]
    }
    try:
        champion = observe.champion_version(ep)
    except observe.ObservationError:  # MLflow down shows in readiness; the sample goes on
        champion = None
    runs = dag_runs(airflow)
    runs = previous_runs if runs is None else runs
    decisions: dict[str, int] = {}
    try:
        trail = observe.bridge_decisions(ep, limit=1000)
    except observe.ObservationError:  # the bridge down shows in readiness
        trail = []
    for d in trail:
        at = _timestamp(d.get("at"))
        if at is not None and at >= t0:  # this soak's decisions only
            kind = str(d.get("decision") or "unknown")
            decisions[kind] = decisions.get(kind, 0) + 1
    used, keys = redis_memory(s.urls.redis)
    requests, failures = locust_totals(report_dir)
    now = time.time()
    return (
        Sample(
            at=now,
            elapsed_s=round(now - t0, 1),
            rss_mib=rss,
            ready=ready,
            not_ready_why=why,
            champion_version=str(champion["version"]) if champion else None,
            dag_runs=len(runs),
            bridge_decisions=decisions,
            redis_used_mib=None if used is None else round(used, 1),
            redis_keys=keys,
            requests=requests,
            failures=failures,
        ),
        runs,
    )


def wait_all_ready(s: StackSettings, err: Console, timeout_s: float = 300.0) -> None:
    """The soak measures a stack left alone, not its start-up: begin once every component is
    ready (replicas have loaded the champion, the consumer has its reference profile)."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [
            st.name
            for st in stack.status(s)
            if not (st.ready if st.ready is not None else st.healthy)
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready after {timeout_s:.0f}s: {waiting}")
        err.print(f"waiting for {', '.join(waiting)} to be ready")
        time.sleep(3.0)


def slope_mib_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per hour (0 for < 3 points)."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 3600


def _timestamp(value: object) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _run_time(run: dict[str, Any]) -> float | None:
    for key in ("run_after", "start_date", "logical_date", "queued_at"):
        if (at := _timestamp(run.get(key))) is not None:
            return at
    return None


def segments_from(
    report_dir: Path, end: float, runs: list[dict[str, Any]], samples: list[Sample]
) -> list[Segment]:
    log = read_schedule_log(report_paths(report_dir).schedule_log)
    segs: list[Segment] = []
    for i, row in enumerate(log):
        start = float(row["wall_time"])
        stop = float(log[i + 1]["wall_time"]) if i + 1 < len(log) else end
        segs.append(Segment(int(row["segment_index"]), str(row["segment"]), start, stop))
    for run in runs:
        at = _run_time(run)
        for seg in segs:
            if at is not None and seg.started_at <= at < seg.ended_at:
                seg.dag_runs.append(f"{run.get('dag_run_id')} ({run.get('state')})")
    for seg in segs:
        versions = [
            smp.champion_version
            for smp in samples
            if seg.started_at <= smp.at < seg.ended_at and smp.champion_version
        ]
        seg.champions = list(dict.fromkeys(versions))
    return segs


def report(
    samples: list[Sample],
    segments: list[Segment],
    requests: int,
    failures: int,
    sample_seconds: float,
    growth_limit: float,
) -> tuple[str, bool, bool]:
    """The Markdown table; (text, healthy, memory flat)."""
    lines: list[str] = []
    components = list(samples[0].rss_mib) if samples else []
    minutes = samples[-1].elapsed_s / 60 if samples else 0.0
    lines.append(f"## driftloop soak: {minutes:.1f} min, {len(samples)} samples\n")
    lines.append(f"requests {requests}, failed {failures}\n")
    lines.append(
        "| component | not-ready minutes | RSS MiB first → last → peak | 2nd-half slope MiB/h |"
    )
    lines.append("| --- | ---: | --- | ---: |")
    not_ready_total = 0.0
    growing: list[str] = []
    half = samples[len(samples) // 2 :]
    for name in components:
        nr = sum(sample_seconds / 60 for smp in samples if not smp.ready.get(name, False))
        not_ready_total += nr
        series = [smp.rss_mib.get(name, 0.0) for smp in samples]
        slope = slope_mib_per_hour([(smp.elapsed_s, smp.rss_mib.get(name, 0.0)) for smp in half])
        flag = ""
        if slope > growth_limit:
            growing.append(name)
            flag = " ⚠ grows"
        lines.append(
            f"| {name} | {nr:.0f} | {series[0]:.0f} → {series[-1]:.0f} → {max(series):.0f} "
            f"| {slope:+.0f}{flag} |"
        )
    redis_used = [smp.redis_used_mib for smp in samples if smp.redis_used_mib is not None]
    if redis_used:
        lines.append(
            f"\nRedis used_memory MiB: {redis_used[0]:.0f} → {redis_used[-1]:.0f} → "
            f"{max(redis_used):.0f}; keys {samples[0].redis_keys} → {samples[-1].redis_keys}"
        )
    lines.append("\n| segment | scenario | minutes | DAG runs started | champion versions seen |")
    lines.append("| ---: | --- | ---: | --- | --- |")
    for seg in segments:
        lines.append(
            f"| {seg.index} | {seg.scenario}{' (incident)' if seg.incident else ''} "
            f"| {(seg.ended_at - seg.started_at) / 60:.1f} | {len(seg.dag_runs)}"
            f"{': ' + ', '.join(seg.dag_runs) if seg.dag_runs else ''} "
            f"| {' → '.join(seg.champions) or '-'} |"
        )
    incidents = [seg for seg in segments if seg.incident]
    if incidents:
        per = [len(seg.dag_runs) for seg in incidents]
        lines.append(
            f"\nDAG runs per incident: {per} (incidents {len(incidents)}, runs "
            f"{sum(per)}); runs in steady segments: "
            f"{sum(len(seg.dag_runs) for seg in segments if not seg.incident)}"
        )
    if samples:
        lines.append(f"bridge decisions during the soak: {samples[-1].bridge_decisions}")
    if growing:
        lines.append(
            f"\nRSS still growing over the second half (> {growth_limit:.0f} MiB/h): "
            + ", ".join(growing)
        )
    healthy = failures == 0 and not_ready_total == 0
    return "\n".join(lines), healthy, not growing


def write_samples(out: Path, samples: list[Sample], segments: list[Segment]) -> None:
    (out / "samples.json").write_text(
        json.dumps(
            {
                "samples": [asdict(smp) for smp in samples],
                "segments": [asdict(g) for g in segments],
            },
            indent=1,
        )
    )
    with (out / "samples.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["at", "elapsed_s", "component", "rss_mib", "ready", "why"])
        for smp in samples:
            for name, rss in smp.rss_mib.items():
                ready = smp.ready.get(name, False)
                why = smp.not_ready_why.get(name, "")
                w.writerow([smp.at, smp.elapsed_s, name, rss, int(ready), why])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--switch-minutes", type=float, default=6.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument(
        "--base-port",
        type=int,
        default=None,
        help=f"default DRIFTLOOP_BASE_PORT or {DEFAULT_BASE_PORT}",
    )
    parser.add_argument("--out", type=Path, default=None, help="default <state dir>/soak/<time>")
    parser.add_argument(
        "--growth-mib-per-hour",
        type=float,
        default=30.0,
        help="flag a component whose RSS grows faster than this over the second half",
    )
    parser.add_argument("--strict-memory", action="store_true", help="exit 2 on flagged growth")
    parser.add_argument("--down", action="store_true", help="stop the stack afterwards")
    args = parser.parse_args()

    overrides = {"base_port": args.base_port} if args.base_port else {}
    s = load_settings(StackSettings, **overrides).resolved()
    err = Console(stderr=True)
    out = args.out or s.state_dir / "soak" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    err.print(f"stack on base port {s.base_port}; reports in {out}")
    stack.up(s)
    run_bootstrap(s, force=False, console=err)
    wait_all_ready(s, err)
    ep = endpoints(s)
    airflow = observe.Airflow(ep)
    runs_before = {r.get("dag_run_id") for r in dag_runs(airflow) or []}

    schedule = schedule_for(args.minutes, args.switch_minutes)
    argv = locust_command(
        host=s.urls.nginx,
        users=args.users,
        spawn_rate=float(args.users),
        run_time_s=int(args.minutes * 60),
        schedule=schedule,
        report_dir=out,
    )
    err.print(f"locust: {args.users} users, {args.minutes:g} min, schedule {schedule}")
    log = (out / "locust.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    # stop early on SIGTERM as on Ctrl-C: locust stopped, the table printed for what was sampled
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    samples: list[Sample] = []
    runs: list[dict[str, Any]] = []
    try:
        next_at = t0
        while True:
            smp, runs = take_sample(s, ep, airflow, out, t0, runs)
            samples.append(smp)
            down = ", ".join(f"{k}: {v}" for k, v in smp.not_ready_why.items()) or "all ready"
            err.print(
                f"t+{smp.elapsed_s / 60:5.1f} min  requests {smp.requests} failed {smp.failures}"
                f"  champion v{smp.champion_version}  DAG runs {smp.dag_runs}  "
                f"kafka {smp.rss_mib.get('kafka', 0):.0f} MiB  redis {smp.redis_used_mib} MiB"
                f"  ({escape(down)})",
                soft_wrap=True,
            )
            if proc.poll() is not None:
                break
            next_at += args.sample_seconds
            while time.time() < next_at and proc.poll() is None:
                time.sleep(1.0)
            if proc.poll() is not None:
                # locust ended between samples: take one last sample of the end state
                continue
    except KeyboardInterrupt:
        err.print("interrupted: stopping locust")
    finally:
        if proc.poll() is None:
            # locust writes its reports on SIGTERM too (SIGINT is ignored in background jobs)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    requests, failures = locust_totals(out)
    new_runs = [r for r in runs if r.get("dag_run_id") not in runs_before]
    segments = segments_from(out, time.time(), new_runs, samples)
    write_samples(out, samples, segments)
    text, healthy, flat = report(
        samples, segments, requests, failures, args.sample_seconds, args.growth_mib_per_hour
    )
    print(text)
    (out / "soak.md").write_text(text + "\n")
    err.print(
        f"samples: {out / 'samples.json'} and {out / 'samples.csv'}; table: {out / 'soak.md'}"
    )
    if args.down:
        stack.down(s)
    if not healthy:
        return 1
    if args.strict_memory and not flat:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
