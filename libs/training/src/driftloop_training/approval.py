"""A person's answer to a promotion's approval request (DAG param ``approval=manual``).

With ``manual``, a challenger that passes the gate is not promoted until a person approves it.
The DAG's approval task (Airflow's human-in-the-loop ``HITLOperator``) shows the request of
:mod:`.approval_request` and hands the answer to ``decide``, which reads it with
:func:`answer_from_hitl` and passes it to ``retrain.decide(approval=...)``.

No answer within ``approval_timeout_minutes`` is a rejection: Airflow answers the request's
default, ``Reject``, with no user, which :func:`answer_from_hitl` reads as ``timed_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from driftloop_contracts.approval import APPROVE

#: What a person (or the timeout) answered to an approval request.
ApprovalOutcome = Literal["approved", "rejected", "timed_out"]


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


__all__ = ["ApprovalAnswer", "ApprovalOutcome", "answer_from_hitl"]
