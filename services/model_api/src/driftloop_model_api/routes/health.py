"""Liveness, readiness and the Prometheus endpoint.

Ready means "a model is loaded": Kafka and Redis outages degrade (events wait in the buffer,
the cache is bypassed) but never stop predictions, so they show in the details, not the status.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers (supervisors restart it otherwise)."""
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {"description": "no model loaded yet"}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 with a model loaded, 503 before; details on the broker and the cache."""
    model = runtime.service.holder.current
    cache = runtime.service.cache
    body: dict[str, Any] = {
        "status": "ready" if model else "loading",
        "replica_id": runtime.settings.replica_id,
        "model_version": model.version if model else None,
        "model_error": runtime.reloader.last_error,
        "events": {
            "connected": runtime.publisher.connected,
            "buffered": runtime.publisher.buffered,
            "last_error": runtime.publisher.last_error,
        },
        "model_events_consumer": runtime.reloader.consumer_connected,
        "cache": {
            "enabled": cache.enabled,
            "available": cache.available,
            "last_error": cache.last_error,
        },
    }
    return JSONResponse(body, status_code=200 if model else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
