"""The approval request a person sees (DAG param ``approval=manual``): both models' figures.

Built from ``evaluate``'s result, so the person compares exactly what the gate compared:
challenger and champion on the same holdout. A challenger the gate rejects is never put to a
person (approving it could not promote it): :func:`approval_request` returns ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from driftloop_contracts import MODEL_NAME
from driftloop_contracts.approval import APPROVE, REJECT

from .retrain import EvaluateResult, RetrainParams, judge


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


__all__ = ["ApprovalRequest", "approval_request"]
