"""``GET /brake`` and ``POST /brake/reset``: see and release the circuit breaker (:mod:`..brake`).

Both need the webhook bearer token: the state names the runs that counted, and a reset lets
the loop retrain again, which is as much power as sending an alert. 401 without it; 503 when
Redis is down (nothing was changed).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter

from ..brake import BrakeResetResponse, BrakeState
from ..decisions import Decision
from ..deps import BridgeDep, Operator
from ..errors import StoreUnavailable

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/brake", tags=["brake"], dependencies=[Operator])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token; nothing was changed"},
    503: {"description": "Redis unavailable; nothing was changed"},
}


@router.get("", response_model=BrakeState, responses=_RESPONSES)
async def brake_state(bridge: BridgeDep) -> BrakeState:
    """Engaged or not, since and until when, and the accepted triggers inside the window."""
    return await bridge.brake.state()


@router.post("/reset", response_model=BrakeResetResponse, responses=_RESPONSES)
async def reset_brake(bridge: BridgeDep) -> BrakeResetResponse:
    """Release the brake and forget the window's triggers; answers the state before and after.

    The reset joins the audit trail (``GET /decisions``, decision ``brake_reset``): a person
    reading why retraining resumed sees who let it, not only the alerts that followed.
    """
    result = await bridge.brake.reset()
    was = result.was
    decision = Decision(
        at=bridge.decisions.now(),
        source="operator",
        alertname="",
        decision="brake_reset",
        reason=(
            f"POST /brake/reset: was {'engaged' if was.engaged else 'not engaged'}"
            f" with {was.triggers_in_window} trigger(s) in the window"
            + (f", since {was.since:%Y-%m-%dT%H:%M:%SZ}" if was.since else "")
        ),
    )
    try:
        await bridge.decisions.record(decision)
    except StoreUnavailable as exc:  # the reset stands; only its audit line is lost
        log.warning("decisions_record_failed", error=str(exc), decision="brake_reset")
    return result
