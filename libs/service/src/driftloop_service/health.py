"""``/health/live`` and ``/health/ready``, answered the same way by every service.

Vocabulary (documented in README.md and docs/api.md):

* ``GET /health/live`` -> 200 ``{"status": "alive"}`` whenever the process answers; a
  supervisor restarts it otherwise. It checks nothing else on purpose.
* ``GET /health/ready`` -> 200 ``{"status": "ready", "problems": [], ...details}`` when the
  service can do its job, else 503 ``{"status": "not_ready", "problems": ["..."], ...}`` with
  one human-readable line per reason. ``details`` are the service's own facts (model version,
  pending triggers, assigned partitions, ...) at the top level of the body; degraded-but-working
  dependencies show there, not in the status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

__all__ = ["LiveBody", "Readiness", "ReadyBody", "health_router"]


class LiveBody(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyBody(BaseModel, extra="allow"):
    """OpenAPI schema of ``/health/ready``; service details are extra top-level keys."""

    status: Literal["ready", "not_ready"]
    problems: list[str]


@dataclass
class Readiness:
    """What a service reports: why it is not ready (empty = ready), and its own details."""

    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.problems

    def body(self) -> dict[str, Any]:
        status = "ready" if self.ready else "not_ready"
        return {"status": status, "problems": list(self.problems), **self.details}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=200 if self.ready else 503)


ReadinessCheck = Callable[[Request], Awaitable[Readiness]]


def health_router(check: ReadinessCheck) -> APIRouter:
    """The two health routes; ``check(request)`` builds the service's :class:`Readiness`."""
    router = APIRouter(tags=["health"])

    @router.get("/health/live", response_model=LiveBody)
    async def live() -> LiveBody:
        """The process answers (supervisors restart it otherwise)."""
        return LiveBody()

    @router.get(
        "/health/ready",
        response_model=ReadyBody,
        responses={503: {"model": ReadyBody, "description": "not ready; `problems` says why"}},
    )
    async def ready(request: Request) -> JSONResponse:
        """200 when the service can do its job; 503 listing the problems otherwise."""
        return (await check(request)).response()

    return router
