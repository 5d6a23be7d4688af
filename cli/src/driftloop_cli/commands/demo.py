"""Console rendering of the demo timeline (the logic lives in ..demo and ..timeline)."""

from __future__ import annotations

import time

from rich.console import Console

from ..demo import DemoOptions, DemoSummary, endpoints, run
from ..settings import StackSettings
from ..timeline import Observed, Stage


class Printer:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.status = console.status("starting…")
        self._t0 = time.time()

    def __enter__(self) -> Printer:
        self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.status.stop()

    def stage(self, rec: Observed) -> None:
        self.console.print(f"[bold green]t+{rec.at:6.1f}s[/]  ✔ {rec.title}: {rec.detail}")

    def note(self, message: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/]  {message}")

    def waiting(self, what: str, remaining_s: float) -> None:
        self.status.update(f"{what}: drift starts in {remaining_s:.0f}s")

    def waiting_stage(self, stage: Stage, elapsed_s: float) -> None:
        self.status.update(
            f"t+{elapsed_s:.0f}s waiting for: {stage.title} (deadline {stage.deadline_s:.0f}s)"
        )


def run_demo(s: StackSettings, opts: DemoOptions, console: Console) -> DemoSummary | None:
    try:
        with Printer(console) as printer:
            summary = run(s, opts, printer)
    except RuntimeError as exc:  # no champion, replicas never ready, locust failed to start
        console.print(f"[red]error:[/] {exc}")
        return None
    ep = endpoints(s)
    console.print()
    console.print(
        (s.state_dir and summary.report_dir)
        and f"summary: {summary.report_dir}/summary.md (and summary.json)"
    )
    console.print(
        f"requests: {summary.requests}, failed: {summary.failed_requests}; "
        f"time to recover: {summary.time_to_recover_s} s"
    )
    console.print("events: " + ", ".join(f"{k}={v:.0f}" for k, v in summary.events.items()))
    console.print(
        "where to look: "
        f"Prometheus {ep.prometheus}/alerts · Alertmanager {ep.alertmanager} · "
        f"MLflow {ep.mlflow} · Airflow {ep.airflow} (user {s.airflow_username}) · "
        f"API {ep.nginx}/docs · Grafana: with Docker only, http://127.0.0.1:38003"
    )
    if summary.error:
        console.print(f"[red]error:[/] {summary.error}")
    return summary
