"""The loop budget's arithmetic: spans between timeline stages, their p50/max, Airflow task gaps."""

from __future__ import annotations

from typing import Any

from driftloop_cli import loop_budget

STAGES = {
    "drift_detected": 4.0,
    "alert_firing": 5.0,
    "bridge_triggered": 6.5,
    "dag_succeeded": 17.0,
    "promoted": 17.2,
    "replicas_serving": 17.6,
}


def test_spans_are_differences_between_consecutive_budget_stages() -> None:
    assert loop_budget.spans(STAGES) == {
        "detect": 4.0,
        "alert_bridge": 2.5,
        "dag": 10.5,
        "reload": 0.6,
        "total": 17.6,
    }


def test_a_stage_not_reached_leaves_its_spans_empty() -> None:
    partial = {"drift_detected": 4.0, "alert_firing": 5.0, "bridge_triggered": 6.5}
    got = loop_budget.spans(partial)
    assert got["alert_bridge"] == 2.5
    assert got["dag"] is None and got["reload"] is None and got["total"] is None


def test_summary_takes_the_median_and_max_and_counts_a_failed_run_against_the_goal() -> None:
    runs = [
        loop_budget.spans(STAGES),
        loop_budget.spans({**STAGES, "replicas_serving": 30.0}),
        loop_budget.spans({**STAGES, "replicas_serving": 20.0}),
    ]
    total = next(s for s in loop_budget.summarize(runs) if s.span.key == "total")
    assert (total.p50, total.max, total.missing, total.met) == (20.0, 30.0, 0, True)
    runs.append(loop_budget.spans({"drift_detected": 3.0}))
    total = next(s for s in loop_budget.summarize(runs) if s.span.key == "total")
    assert total.missing == 1 and not total.met
    table = loop_budget.markdown_table(loop_budget.summarize(runs))
    assert "| onset → every replica on the new champion | ≤25 | 44.8 |" in table
    assert "(+1 not reached)" in table


def test_task_breakdown_splits_scheduler_wait_from_task_run_time() -> None:
    run = {"queued_at": "2026-12-06T10:00:00Z"}
    tasks: list[dict[str, Any]] = [
        {
            "task_id": "train",
            "start_date": "2026-12-06T10:00:03.5Z",
            "end_date": "2026-12-06T10:00:06Z",
        },
        {
            "task_id": "collect",
            "start_date": "2026-12-06T10:00:01Z",
            "end_date": "2026-12-06T10:00:02Z",
        },
        {"task_id": "announce", "start_date": None, "end_date": None},
    ]
    assert loop_budget.task_breakdown(run, tasks) == [
        ("collect", 1.0, 1.0),
        ("train", 1.5, 2.5),
    ]
