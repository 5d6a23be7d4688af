"""``GET /brake`` and ``POST /brake/reset``: see and release the circuit breaker (:mod:`..brake`).

Both need the webhook bearer token: the state names the runs that counted, and a reset lets
the loop retrain again, which is as much power as sending an alert. 401 without it; 503 when
Redis is down (nothing was changed).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..brake import BrakeResetResponse, BrakeState
from ..deps import BridgeDep, Operator

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
    """Release the brake and forget the window's triggers; answers the state before and after."""
    return await bridge.brake.reset()
