"""``/health/live``, ``/health/ready`` (ready = Redis reachable) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import BridgeDep
from ..errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(bridge: BridgeDep) -> JSONResponse:
    """Ready when Redis answers: without it the bridge can decide nothing durably."""
    try:
        pending, dead = await bridge.queue.refresh_gauges()
    except StoreUnavailable as exc:
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": str(exc)})
    return JSONResponse(
        content={
            "status": "ready",
            "redis": "ok",
            "pending_triggers": pending,
            "dead_letters": dead,
        }
    )


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
