"""``/health/live`` and ``/health/ready`` in the shared vocabulary (:mod:`driftloop_service.health`).

Ready means "a model is loaded": a Kafka outage degrades (events wait in the buffer) and a
Redis outage only refuses labels; neither stops predictions, so they show in the details.
"""

from __future__ import annotations

from fastapi import Request

from driftloop_service import Readiness, health_router

from ..deps import get_runtime


async def readiness(request: Request) -> Readiness:
    """Not ready until a champion is loaded; details on the broker and the (in-process) cache."""
    runtime = get_runtime(request)
    model = runtime.service.holder.current
    cache = runtime.service.cache
    problems = []
    if model is None:
        error = runtime.reloader.last_error
        problems.append("no model loaded yet" + (f" ({error})" if error else ""))
    return Readiness(
        problems,
        {
            "replica_id": runtime.settings.replica_id,
            "model_version": model.version if model else None,
            "model_error": runtime.reloader.last_error,
            "events": {
                "connected": runtime.publisher.connected,
                "buffered": runtime.publisher.buffered,
                "buffered_by_topic": runtime.publisher.buffered_by_topic(),
                "last_error": runtime.publisher.last_error,
            },
            "model_events_consumer": runtime.reloader.consumer_connected,
            "cache": {"enabled": cache.enabled, "entries": len(cache)},
        },
    )


router = health_router(readiness)
