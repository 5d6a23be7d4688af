"""``/health/live`` and ``/health/ready`` in the shared vocabulary (:mod:`driftloop_service.health`).

Ready means consuming, a reference profile loaded, and every sink writing; otherwise 503 with
one line per problem (e.g. ``sink influxdb failing: ...``).
"""

from __future__ import annotations

from fastapi import Request

from driftloop_service import Readiness, health_router

from ..deps import get_loop


async def readiness(request: Request) -> Readiness:
    loop = get_loop(request)
    problems: list[str] = []
    if loop is None:
        problems.append("starting")
    else:
        if not loop.status.consumer_started:
            problems.append(
                "kafka consumer not running"
                + (f" ({loop.status.last_error})" if loop.status.last_error else "")
            )
        if loop.reference_version is None:
            problems.append(
                "no reference profile"
                + (f" ({loop.references.last_error})" if loop.references.last_error else "")
            )
        for sink, error in loop.status.failing_sinks.items():
            problems.append(f"sink {sink} failing: {error}")
    return Readiness(
        problems,
        {
            "model_version": loop.reference_version if loop else None,
            "assigned": loop.status.assigned if loop else [],
        },
    )


router = health_router(readiness)
