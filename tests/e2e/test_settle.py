"""One retrain per incident, end to end: the loop closes once and then stays settled.

The demo's drift (sudden covariate shift + concept drift in the feedback) runs as in
test_closed_loop; after every stage of the timeline was observed (one DAG run, a new champion on
every replica, drift back under, the alert resolved), the traffic *stays in the drifted regime*
for ``SETTLE_S`` more seconds while :mod:`driftloop_cli.settle` watches Airflow, the bridge, the
registry and Alertmanager. Before the settle work this promoted a second version about 130 s
after the first. Now: exactly one DAG run for the incident, no second promotion, no retraining
alert firing at the end, no failed request.

It failed intermittently until the consumer judged a small reference as small: the promoted
champion's reference is the regime's ~300 rows, against which a stationary window declared drift
on 12.7% of windows, and once the 120 s cooldown expired a feature's drift alert triggered a
second run. Thresholds widened for the sample size and the training frame's Wasserstein scale
bring that to 0.30% (docs/drift.md, "Small references").
"""

from __future__ import annotations

import pytest

from driftloop_cli.demo import DemoOptions, run
from driftloop_cli.timeline import Observed

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

#: Longer than the measured second promotion (130 s after the first) with margin, and longer
#: than the warm-up takes at the demo's traffic (300 labelled rows, 2 windows).
SETTLE_S = 240


class Recorder:
    def stage(self, rec: Observed) -> None:
        print(f"t+{rec.at:6.1f}s {rec.title}: {rec.detail}", flush=True)

    def note(self, message: str) -> None:
        print(message, flush=True)

    def waiting(self, what: str, remaining_s: float) -> None:
        pass

    def waiting_stage(self, stage: object, elapsed_s: float) -> None:
        pass


def test_one_run_per_incident_while_the_drift_persists(stack, base_champion, tmp_path) -> None:
    summary = run(
        stack.settings,
        DemoOptions(
            users=6, steady_s=20, max_run_s=600 + SETTLE_S, settle_s=SETTLE_S, report_dir=tmp_path
        ),
        Recorder(),
    )
    assert summary.error is None, summary.error
    settled = summary.settle
    assert settled is not None
    run_ids = [s["detail"] for s in summary.stages if s["key"] == "one_run"]
    assert len(settled["dag_runs"]) == 1 and settled["dag_runs"][0] in run_ids[0], settled
    assert settled["champions"] == [summary.new_champion], settled
    assert settled["retrain_alerts_at_end"] == [], settled
    assert summary.failed_requests == 0
    print(
        f"\n[settle] recovery {summary.time_to_recover_s}s; then {SETTLE_S}s in the drifted "
        f"regime: runs {settled['dag_runs']}, champions {settled['champions']}, bridge "
        f"decisions {settled['decisions']}, requests {summary.requests}, failed "
        f"{summary.failed_requests}"
    )
