"""``/health/live`` and ``/health/ready`` (ready = Redis reachable) in the shared vocabulary."""

from __future__ import annotations

from fastapi import Request

from driftloop_service import Readiness, health_router

from ..deps import get_bridge
from ..errors import StoreUnavailable


async def readiness(request: Request) -> Readiness:
    """Ready when Redis answers: without it the bridge can decide nothing durably."""
    bridge = get_bridge(request)
    try:
        pending, dead = await bridge.queue.refresh_gauges()
    except StoreUnavailable as exc:
        return Readiness(
            [f"redis unavailable: {exc}"],
            {"redis": "unavailable", "pending_triggers": None, "dead_letters": None},
        )
    return Readiness([], {"redis": "ok", "pending_triggers": pending, "dead_letters": dead})


router = health_router(readiness)
