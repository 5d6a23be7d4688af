"""FastAPI dependencies: the bridge's components, and the authenticated raw body of a webhook.

Authentication happens here, before a route runs: a refused request raises
:class:`AuthError` (-> 401) having read the body and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from .auth import AuthConfig, verify_bearer, verify_request
from .brake import Brake
from .decisions import DecisionLog
from .dispatcher import Dispatcher
from .errors import AuthError, BodyTooLarge
from .metrics import BridgeMetrics
from .retry_queue import RetryQueue
from .settings import BridgeSettings
from .store import Clock


@dataclass
class Bridge:
    """Everything a request handler may need, built once by the app's lifespan."""

    settings: BridgeSettings
    redis: Redis
    auth: AuthConfig
    dispatcher: Dispatcher
    queue: RetryQueue
    decisions: DecisionLog
    clock: Clock
    metrics: BridgeMetrics
    brake: Brake


def get_bridge(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


BridgeDep = Annotated[Bridge, Depends(get_bridge)]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _authenticated_body(request: Request, bridge: Bridge, source: str) -> bytes:
    body = await read_body(request, bridge.settings.max_body_bytes)
    try:
        verify_request(
            headers=request.headers,
            body=body,
            config=bridge.auth,
            check_hmac=source == "grafana",
            clock=bridge.clock,
        )
    except AuthError:
        bridge.metrics.decided(source, "unauthorized")
        raise
    return body


async def grafana_body(request: Request, bridge: BridgeDep) -> bytes:
    return await _authenticated_body(request, bridge, "grafana")


async def alertmanager_body(request: Request, bridge: BridgeDep) -> bytes:
    return await _authenticated_body(request, bridge, "alertmanager")


async def operator(request: Request, bridge: BridgeDep) -> None:
    """The same bearer token as the webhooks: whoever may trigger retraining may release it."""
    try:
        verify_bearer(request.headers, bridge.auth)
    except AuthError:
        bridge.metrics.decided("operator", "unauthorized")
        raise


Operator = Depends(operator)

GrafanaBody = Annotated[bytes, Depends(grafana_body)]
AlertmanagerBody = Annotated[bytes, Depends(alertmanager_body)]
