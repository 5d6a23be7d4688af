"""Per-instance Prometheus registries: no module-global metrics anywhere.

Every app builds its metrics on its own :class:`CollectorRegistry` (tests build many apps in
one process, and two apps must never share a counter), and serves exactly that registry on
``/metrics``. ``driftloop_retries_total{operation}`` is the one retry counter every service
exports; :func:`retry_counter` gives the hook :func:`~driftloop_service.retry.retrying` calls.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from .retry import RetryHook

__all__ = ["RetryCounter", "metrics_router", "new_registry"]

# ``*_created`` series double the exposition size and nothing here reads them.
disable_created_metrics()


def new_registry(*, process: bool = True) -> CollectorRegistry:
    """A fresh registry with the process and platform collectors (``process_*``, ``python_*``)."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


class RetryCounter:
    """``driftloop_retries_total{operation}`` on one registry; ``hook(op)`` feeds it."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str] | None = None) -> None:
        self._const = dict(labels or {})
        self._counter = Counter(
            "driftloop_retries_total",
            "Failed attempts that will be retried, by operation",
            [*self._const, "operation"],
            registry=registry,
        )

    def hook(self, operation: str) -> RetryHook:
        child = self._counter.labels(*self._const.values(), operation)

        def count(attempt: int, error: BaseException, delay: float) -> None:
            child.inc()

        return count


def metrics_router(registry_of: Callable[[Request], CollectorRegistry]) -> APIRouter:
    """``GET /metrics`` serving the registry ``registry_of(request)`` returns."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry_of(request)), media_type=CONTENT_TYPE_LATEST)

    return router
