"""``GET /decisions``, ``/pending`` and ``/dead-letters``: what the bridge did and still owes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ..decisions import DecisionsResponse
from ..deps import BridgeDep

router = APIRouter(tags=["audit"])

Limit = Annotated[int, Query(ge=1, le=1000, description="how many, newest first")]


class TriggerView(BaseModel):
    dag_id: str
    dag_run_id: str
    source: str
    alertname: str
    rule: str
    first_seen: float
    attempts: int
    last_error: str
    extra: dict[str, Any]


class TriggersResponse(BaseModel):
    count: int
    triggers: list[TriggerView]


@router.get("/decisions", response_model=DecisionsResponse)
async def recent_decisions(bridge: BridgeDep, limit: Limit = 50) -> DecisionsResponse:
    """Recent decisions: time, source, alert, rule, decision, reason, dag_run_id, outcome."""
    decisions = await bridge.decisions.recent(limit)
    return DecisionsResponse(count=len(decisions), decisions=decisions)


def _views(items: list[Any]) -> TriggersResponse:
    views = [TriggerView.model_validate(i, from_attributes=True) for i in items]
    return TriggersResponse(count=len(views), triggers=views)


@router.get("/pending", response_model=TriggersResponse)
async def pending_triggers(bridge: BridgeDep, limit: Limit = 100) -> TriggersResponse:
    """Triggers Airflow has not accepted yet (oldest first)."""
    return _views(await bridge.queue.pending(limit))


@router.get("/dead-letters", response_model=TriggersResponse)
async def dead_letters(bridge: BridgeDep, limit: Limit = 100) -> TriggersResponse:
    """Triggers given up on, with the reason in ``last_error`` (newest first)."""
    return _views(await bridge.queue.dead_letters(limit))
