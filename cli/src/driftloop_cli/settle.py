"""After the loop closed: does it stay settled while traffic stays in the drifted regime?

The timeline (:mod:`driftloop_cli.timeline`) ends at "exactly one DAG run for the incident".
That is a moment; a loop that does not settle promotes again a few minutes later (measured
before the settle work: a second promotion 130 s after the first, in the same regime). With
``DemoOptions.settle_s = S`` (tests/e2e/test_settle.py) the traffic keeps running in the drifted
regime for S more seconds after the timeline completed, and this module watches, every few seconds: the DAG runs since onset (Airflow), the bridge's decisions since
onset, the champion alias and the retraining alerts. The run fails if another DAG run starts
or the champion moves; the figures are kept in the demo's summary either way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import observe
from .timeline import ONSET_SLACK_S, LoopState, _timestamp


class NotSettled(RuntimeError):
    """Another DAG run or another promotion happened while the traffic stayed drifted."""


@dataclass
class SettleReport:
    """What the settle period saw (the demo's summary keeps it as ``settle``)."""

    seconds: float
    dag_runs: list[str] = field(default_factory=list)
    champions: list[str] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)
    retrain_alerts_at_end: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "dag_runs": self.dag_runs,
            "champions": self.champions,
            "decisions": self.decisions,
            "retrain_alerts_at_end": self.retrain_alerts_at_end,
        }


def watch(
    ep: observe.Endpoints,
    st: LoopState,
    seconds: float,
    on_note: Callable[[str], None],
    *,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SettleReport:
    """Watch for ``seconds``; raise :class:`NotSettled` at the first second run or promotion.

    An unreachable Airflow, bridge or MLflow raises :class:`observe.ObservationError`: a
    component we cannot see is not evidence that nothing happened.
    """
    airflow = observe.Airflow(ep)
    report = SettleReport(seconds=seconds)
    started = clock()
    while True:
        runs = [
            str(r.get("dag_run_id")) for r in airflow.dag_runs_since(st.onset_wall - ONSET_SLACK_S)
        ]
        champion = observe.champion_version(ep)
        version = str(champion["version"]) if champion else ""
        report.dag_runs = sorted(set(runs))
        if version and version not in report.champions:
            report.champions.append(version)
        if report.dag_runs != [st.dag_run_id]:
            raise NotSettled(
                f"DAG runs since onset: {report.dag_runs}, expected only {st.dag_run_id}"
            )
        if version != st.new_version:
            raise NotSettled(f"champion moved from {st.new_version} to {version or 'none'}")
        if clock() - started >= seconds:
            break
        sleep(poll_s)
    decisions = [
        d
        for d in observe.bridge_decisions(ep, limit=1000)
        if _timestamp(d) >= st.onset_wall - ONSET_SLACK_S
    ]
    report.decisions = dict(Counter(str(d.get("decision")) for d in decisions))
    report.retrain_alerts_at_end = sorted(
        str(a.get("labels", {}).get("alertname", "?")) for a in observe.active_retrain_alerts(ep)
    )
    on_note(
        f"settled for {seconds:.0f}s in the drifted regime: runs {report.dag_runs}, champion "
        f"{report.champions}, bridge decisions {report.decisions}, retrain alerts firing at the "
        f"end {report.retrain_alerts_at_end or 'none'}"
    )
    return report
