"""The product's main job, end to end on the real local stack.

Steady traffic through nginx, then sudden covariate drift with concept drift in the feedback.
Every stage of the loop must be observed, in order, within its deadline: drift detected → alert
firing → bridge trigger → DAG success → promotion → every replica on the new champion → drift back
under the thresholds → alert resolved → one DAG run for the incident, each stage linked to the one
before (driftloop_cli.timeline). No request may fail, and every published event must be consumed.
Recovery (onset → every replica on the new champion) must take at most 90 s; the ≤60 s goal is
tracked by bench/bench_loop.py.
"""

from __future__ import annotations

import pytest

from driftloop_cli import observe
from driftloop_cli.demo import DemoOptions, endpoints, run
from driftloop_cli.timeline import STAGES, Observed

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RECOVERY_BOUND_S = 90


class Recorder:
    def __init__(self) -> None:
        self.stages: list[Observed] = []
        self.notes: list[str] = []

    def stage(self, rec: Observed) -> None:
        self.stages.append(rec)
        print(f"t+{rec.at:6.1f}s {rec.title}: {rec.detail}", flush=True)

    def note(self, message: str) -> None:
        self.notes.append(message)
        print(message, flush=True)

    def waiting(self, what: str, remaining_s: float) -> None:
        pass

    def waiting_stage(self, stage, elapsed_s: float) -> None:
        pass


def test_the_loop_closes_with_no_failed_request(stack, base_champion, tmp_path) -> None:
    recorder = Recorder()
    summary = run(
        stack.settings,
        DemoOptions(users=6, steady_s=20, max_run_s=600, report_dir=tmp_path),
        recorder,
    )
    assert summary.error is None, summary.error
    assert [s["key"] for s in summary.stages] == [s.key for s in STAGES]
    times = [s["at"] for s in summary.stages]
    assert times == sorted(times)

    # a new champion, served by every replica
    assert summary.new_champion and summary.new_champion != summary.start_champion
    versions = observe.replica_versions(endpoints(stack.settings))
    assert set(versions.values()) == {summary.new_champion}, versions

    # nothing failed and nothing was lost
    assert summary.requests > 100
    assert summary.failed_requests == 0
    ev = summary.events
    assert ev["predictions_dropped"] == 0 and ev["predictions_failed"] == 0
    assert ev["feedback_dropped"] == 0 and ev["feedback_failed"] == 0
    assert ev["predictions_published"] > 0
    assert ev["predictions_consumed"] == ev["predictions_published"], ev
    assert ev["feedback_consumed"] == ev["feedback_published"], ev

    assert summary.time_to_recover_s is not None
    assert summary.time_to_recover_s <= RECOVERY_BOUND_S, summary.stages
    assert (tmp_path / "summary.json").exists() and (tmp_path / "summary.md").exists()
