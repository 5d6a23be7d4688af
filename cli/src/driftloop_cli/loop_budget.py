"""The loop's latency budget: drift onset → every replica on the new champion, split per stage.

The timeline (:mod:`driftloop_cli.timeline`) records when each stage was seen, in seconds since
onset; the budget is about the *spans between* stages, because each span is one part of the
system to profile: the drift consumer's windows, Prometheus + Alertmanager + the bridge, the
Airflow DAG, the replicas' reload. `bench/bench_loop.py` prints these spans over several runs
(p50 and max) next to the goal and the figures before the work of issue 15; docs/performance.md
has the measured table.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Span:
    """One budgeted span: from stage ``start`` (None: drift onset) to stage ``end``."""

    key: str
    title: str
    start: str | None
    end: str
    goal_s: float
    #: The same span in the demo run of the issue (44.8 s in all), before this work.
    previous_s: float


SPANS: tuple[Span, ...] = (
    Span("detect", "onset → drift detected", None, "drift_detected", 5.0, 8.9),
    Span(
        "alert_bridge",
        "detected → bridge triggered",
        "drift_detected",
        "bridge_triggered",
        3.0,
        5.2,
    ),
    Span(
        "dag", "bridge triggered → DAG succeeded", "bridge_triggered", "dag_succeeded", 12.0, 30.6
    ),
    Span("reload", "DAG succeeded → every replica", "dag_succeeded", "replicas_serving", 1.0, 0.1),
    Span(
        "total", "onset → every replica on the new champion", None, "replicas_serving", 25.0, 44.8
    ),
)


def spans(stage_at: Mapping[str, float]) -> dict[str, float | None]:
    """Each span's seconds from the stages' times since onset (``None``: a stage not reached)."""
    out: dict[str, float | None] = {}
    for s in SPANS:
        end = stage_at.get(s.end)
        start = 0.0 if s.start is None else stage_at.get(s.start)
        out[s.key] = None if end is None or start is None else round(end - start, 1)
    return out


@dataclass(frozen=True)
class SpanSummary:
    span: Span
    values: list[float]
    #: Runs that did not reach the span's end (a failed run counts, it is not left out).
    missing: int

    @property
    def p50(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def max(self) -> float | None:
        return max(self.values) if self.values else None

    @property
    def met(self) -> bool:
        return self.missing == 0 and self.p50 is not None and self.p50 <= self.span.goal_s


def summarize(runs: Sequence[Mapping[str, float | None]]) -> list[SpanSummary]:
    """p50 and max of every span over ``runs`` (each the output of :func:`spans`)."""
    out = []
    for s in SPANS:
        values = [v for r in runs if (v := r.get(s.key)) is not None]
        out.append(SpanSummary(s, values, len(runs) - len(values)))
    return out


def markdown_table(summaries: Sequence[SpanSummary]) -> str:
    """The bench's table: span, goal, before (issue 15), p50, max, each run, goal met."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        "| span | goal | before | p50 | max | runs | met |",
        "| --- | ---: | ---: | ---: | ---: | --- | :---: |",
    ]
    for sm in summaries:
        runs = ", ".join(fmt(v) for v in sm.values) + (
            f" (+{sm.missing} not reached)" if sm.missing else ""
        )
        lines.append(
            f"| {sm.span.title} | ≤{sm.span.goal_s:g} | {sm.span.previous_s:g} | {fmt(sm.p50)} "
            f"| {fmt(sm.max)} | {runs} | {'yes' if sm.met else 'no'} |"
        )
    return "\n".join(lines)


def _ts(raw: Any) -> float | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def task_breakdown(
    run: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]
) -> list[tuple[str, float | None, float | None]]:
    """Per task, in run order: (task, wait before it ran, its run time), seconds.

    The wait is from the previous task's end (the run's ``queued_at`` for the first) to this
    task's start: the scheduler's share (noticing the end, queueing, the worker forking the
    task process). The run time is Airflow's ``start_date`` → ``end_date`` of the task.
    """
    ordered = sorted(
        (t for t in tasks if _ts(t.get("start_date")) is not None),
        key=lambda t: _ts(t.get("start_date")) or 0.0,
    )
    previous_end = _ts(run.get("queued_at")) or _ts(run.get("start_date"))
    out = []
    for t in ordered:
        start, end = _ts(t.get("start_date")), _ts(t.get("end_date"))
        wait = None if previous_end is None or start is None else round(start - previous_end, 1)
        took = None if start is None or end is None else round(end - start, 1)
        out.append((str(t.get("task_id")), wait, took))
        previous_end = end
    return out
