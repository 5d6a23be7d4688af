"""Human approval of a promotion (DAG param ``approval=manual``), without Airflow.

With ``manual``, a challenger that passes the gate is not promoted until a person approves it.
The DAG's approval task (Airflow's human-in-the-loop ``HITLOperator``) shows the request built
here — both models' figures on the same holdout — and hands the answer to ``decide``, which
turns it into the decision via :func:`answer_from_hitl` and ``retrain.decide(approval=...)``.
A challenger the gate rejects is never put to a person (approving it could not promote it).

No answer within ``approval_timeout_minutes`` is a rejection: Airflow answers the request's
default, ``Reject``, with no user, which :func:`answer_from_hitl` reads as ``timed_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from driftloop_contracts import MODEL_NAME
from driftloop_contracts.approval import APPROVE, REJECT

from .retrain import ApprovalOutcome, EvaluateResult, RetrainParams, judge


class ApprovalAnswer(BaseModel):
    """What came back from the approval request."""

    model_config = ConfigDict(frozen=True)

    outcome: ApprovalOutcome
    #: The person who answered (their Airflow user name); ``None`` when the request timed out.
    by: str | None = None
    at: datetime | None = None
    timeout_minutes: float | None = None

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    def describe(self) -> str:
        """One phrase for the decision's reason (tag ``driftloop.decision_reason``)."""
        when = f" at {self.at:%Y-%m-%d %H:%M:%S %Z}".rstrip() if self.at else ""
        if self.outcome == "timed_out":
            limit = f" within {self.timeout_minutes:g} min" if self.timeout_minutes else ""
            return f"approval timed out: nobody answered{limit}"
        return f"{self.outcome} by {self.by or 'unknown user'}{when}"


def answer_from_hitl(
    payload: Mapping[str, Any], *, timeout_minutes: float | None = None
) -> ApprovalAnswer:
    """Read the approval task's result (Airflow's ``HITLTriggerEventSuccessPayload``).

    ``chosen_options`` holds ``Approve`` or ``Reject``; ``responded_by_user`` is ``{"id",
    "name"}`` for a person and ``None`` when Airflow applied the default at the timeout.
    Anything but a single ``Approve`` from a person is not an approval.
    """
    chosen = list(payload.get("chosen_options") or [])
    user = payload.get("responded_by_user")
    at = payload.get("responded_at")
    at = at if isinstance(at, datetime) else None
    if not user:
        return ApprovalAnswer(outcome="timed_out", at=at, timeout_minutes=timeout_minutes)
    by = str(user.get("name") or user.get("id") or "") if isinstance(user, Mapping) else str(user)
    outcome: ApprovalOutcome = "approved" if chosen == [APPROVE] else "rejected"
    return ApprovalAnswer(outcome=outcome, by=by or None, at=at, timeout_minutes=timeout_minutes)


class ApprovalRequest(BaseModel):
    """Subject and Markdown body of the request a person sees (Airflow UI, REST API)."""

    subject: str
    body: str


def _usd(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _r2(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def approval_request(
    evaluated: EvaluateResult,
    params: RetrainParams,
    *,
    dag_run_id: str,
    trigger: Mapping[str, Any] | None = None,
) -> ApprovalRequest | None:
    """The request for a person, or ``None`` when the gate rejects the challenger anyway."""
    ch = evaluated.challenger
    champ = evaluated.champion or {}
    promote, improvement, verdict = judge(
        float(ch["rmse_usd"]),
        float(champ["rmse_usd"]) if champ else None,
        min_improvement=params.min_improvement,
    )
    if not promote:
        return None
    gain = "no champion" if improvement is None else f"{improvement:+.1%} RMSE"
    subject = (
        f"Promote {MODEL_NAME} challenger? RMSE {_usd(ch['rmse_usd'])} vs "
        f"{_usd(champ.get('rmse_usd'))} USD ({gain})"
    )
    champion_name = (
        f"champion v{evaluated.champion_version}" if evaluated.champion_version else "no champion"
    )
    lines = [
        f"The retrained challenger passes the gate: {verdict}.",
        "",
        f"| same holdout ({evaluated.holdout_rows} newest labelled rows) | challenger "
        f"| {champion_name} |",
        "| --- | ---: | ---: |",
        f"| RMSE (USD) | {_usd(ch['rmse_usd'])} | {_usd(champ.get('rmse_usd'))} |",
        f"| MAE (USD) | {_usd(ch['mae_usd'])} | {_usd(champ.get('mae_usd'))} |",
        f"| R² | {_r2(ch['r2'])} | {_r2(champ.get('r2'))} |",
        f"| MLflow run | `{evaluated.run_id}` | `{evaluated.champion_run_id or '—'}` |",
        "",
        f"- improvement: {'—' if improvement is None else f'{improvement:.1%}'} "
        f"(required {params.min_improvement:.1%})",
        f"- DAG run: `{dag_run_id}`",
    ]
    if trigger and trigger.get("alertname"):
        lines.append(
            f"- triggered by alert `{trigger['alertname']}` "
            f"(fingerprint `{trigger.get('fingerprint', '—')}`)"
        )
    lines += [
        "",
        f"**{APPROVE}**: the challenger becomes `champion` and the replicas switch to it. "
        f"**{REJECT}**, or no answer within {params.approval_timeout_minutes:g} min: it is "
        "registered, tagged rejected with the reason, and the champion stays.",
    ]
    return ApprovalRequest(subject=subject, body="\n".join(lines))


__all__ = ["ApprovalAnswer", "ApprovalRequest", "answer_from_hitl", "approval_request"]
