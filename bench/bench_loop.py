"""How fast the loop closes: drift onset → new champion on every replica, per stage, over N runs.

Runs the same scenario as `driftloop demo` (steady traffic, then sudden covariate + concept
drift) ``--runs`` times on the local stack (started if needed; base port from
DRIFTLOOP_BASE_PORT, default 18000) and prints, per span of the loop budget
(:mod:`driftloop_cli.loop_budget`), the p50 and max next to the goal and the figures before
issue 15, then each run's DAG tasks (wait before each task, its run time). The 1-minute load
average is printed with every run: on a shared machine it explains most of the spread.

    uv run python bench/bench_loop.py [--runs 3] [--users 8] [--steady 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from driftloop_cli import loop_budget, observe, stack
from driftloop_cli.commands.bootstrap import run_bootstrap
from driftloop_cli.commands.loop import call_bridge
from driftloop_cli.components import LOCAL_BRIDGE_COOLDOWN_SECONDS
from driftloop_cli.demo import DemoOptions, DemoSummary, endpoints, run
from driftloop_cli.settings import StackSettings
from driftloop_cli.timeline import Observed, Stage

#: Seconds between the timeline's looks at each stage (the demo's 1 s would add up to 1 s of
#: observation delay to every stage).
POLL_S = 0.25


class Quiet:
    """Stage lines on stderr; no live status line (stdout keeps the comparison table)."""

    def stage(self, rec: Observed) -> None:
        print(f"  t+{rec.at:6.1f}s  {rec.title}: {rec.detail}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    def waiting(self, what: str, remaining_s: float) -> None: ...

    def waiting_stage(self, stage: Stage, elapsed_s: float) -> None: ...


def load1() -> float:
    return os.getloadavg()[0]


def fresh_champion(s: StackSettings) -> str | None:
    """Every run starts from a champion trained on the base data only, served by every replica,
    so an earlier run's adapted champion cannot make the steady phase look drifted."""
    run_bootstrap(s, force=True, console=Console(stderr=True))
    ep = endpoints(s)
    champion = observe.champion_version(ep)
    if champion is None:
        return "no champion registered after the bootstrap"
    want = str(champion["version"])
    deadline = time.monotonic() + 180
    while True:
        try:
            if set(observe.replica_versions(ep).values()) == {want}:
                return None
        except observe.ObservationError:  # a replica still loading its first model answers 503
            pass
        if time.monotonic() > deadline:
            return f"replicas did not switch to version {want}"
        time.sleep(0.5)


def open_bridge(s: StackSettings) -> None:
    """Each run is one incident of its own, as the first run is: release the brake (two
    triggers an hour at most, so a third run would be braked) and wait out the cooldown of the
    previous run's trigger (otherwise the bridge answers ``cooldown`` and the alert's next
    notification, a group interval later, is what triggers: measured 30 s more)."""
    ep = endpoints(s)
    call_bridge("POST", ep.bridge, "/brake/reset", s.bridge_webhook_token.get_secret_value())
    triggered = [
        datetime.fromisoformat(str(d["at"]).replace("Z", "+00:00"))
        for d in observe.bridge_decisions(ep, limit=500)
        if d.get("decision") == "triggered"
    ]
    if triggered:
        free_at = max(triggered) + timedelta(seconds=LOCAL_BRIDGE_COOLDOWN_SECONDS + 1)
        wait = (free_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            print(f"waiting {wait:.0f}s for the bridge's cooldown", file=sys.stderr, flush=True)
            time.sleep(wait)


def dag_tasks(
    s: StackSettings, summary: DemoSummary
) -> list[tuple[str, float | None, float | None]]:
    """The DAG run of this incident (the one that succeeded since onset), task by task."""
    airflow = observe.Airflow(endpoints(s))
    runs = [r for r in airflow.dag_runs_since(summary.onset_at - 5) if r.get("state") == "success"]
    if not runs:
        return []
    dag_run: dict[str, Any] = runs[0]
    tasks = [dict(t) for t in airflow.task_instances(str(dag_run["dag_run_id"]))]
    return loop_budget.task_breakdown(dag_run, tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--steady", type=int, default=30)
    args = parser.parse_args()

    s = StackSettings().resolved()
    stack.up(s)
    results: list[dict[str, float | None]] = []
    notes: list[str] = []
    failed = 0
    for i in range(1, args.runs + 1):
        error = fresh_champion(s)
        if error:
            print(error, file=sys.stderr)
            return 1
        open_bridge(s)
        before = load1()
        print(f"run {i}/{args.runs} (load average {before:.1f})", file=sys.stderr, flush=True)
        opts = DemoOptions(users=args.users, steady_s=args.steady, poll_s=POLL_S)
        summary = run(s, opts, Quiet())
        after = load1()
        at = {st["key"]: float(st["at"]) for st in summary.stages}
        spans = loop_budget.spans(at)
        results.append(spans)
        tasks = dag_tasks(s, summary) if "dag_succeeded" in at else []
        task_text = ", ".join(
            f"{name} {'?' if wait is None else f'{wait:.1f}'}+{'?' if took is None else f'{took:.1f}'}"
            for name, wait, took in tasks
        )
        notes.append(
            f"- run {i}: load average {before:.1f} → {after:.1f}; "
            + ", ".join(f"{k} {v if v is not None else '-'}" for k, v in spans.items())
            + (f"; DAG tasks (wait+run, s): {task_text}" if task_text else "")
            + f"; requests {summary.requests}, failed {summary.failed_requests}"
            + (f"; error: {summary.error}" if summary.error else "")
        )
        failed += bool(summary.error)

    print(f"\n## driftloop loop latency: {args.runs} runs, seconds\n")
    print(loop_budget.markdown_table(loop_budget.summarize(results)))
    print("\n" + "\n".join(notes))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
