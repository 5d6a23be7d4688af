"""``POST /webhooks/grafana`` and ``POST /webhooks/alertmanager``: authenticate, parse, decide.

Both answer 202 with one decision per alert as soon as each trigger is either created or
safely queued; 401 for bad credentials (nothing else happens); 422 naming the problem for a
body that is not a valid payload; 503 when Redis is down (both senders retry on 5xx).

A 503 means nothing was decided: no claim, no queue entry, no run. Alertmanager retries the
notification (and re-sends it at every ``group_interval`` until one succeeds), Grafana does the
same; when Redis is back the re-sent alert is claimed once and its deterministic run id makes
any further copy a ``duplicate``, so an outage costs a delay, never a second DAG run. Each 503
is counted as ``driftloop_bridge_decisions_total{decision="unavailable"}`` and
``driftloop_bridge_redis_errors_total{operation="webhook"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel

from ..decisions import Decision
from ..deps import AlertmanagerBody, BridgeDep, GrafanaBody
from ..errors import PayloadError, StoreUnavailable
from ..payloads import Source, parse_alertmanager, parse_grafana

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookResponse(BaseModel):
    source: Source
    alerts: int
    decisions: list[Decision]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong credentials; nothing was recorded"},
    413: {"description": "Body larger than the configured limit"},
    422: {"description": "Not a valid payload; the body names each problem"},
    503: {"description": "Redis unavailable; retry later"},
}


async def _handle(bridge: BridgeDep, source: Source, body: bytes) -> WebhookResponse:
    parse = parse_grafana if source == "grafana" else parse_alertmanager
    try:
        alerts = parse(body)
    except PayloadError:
        bridge.metrics.decided(source, "invalid")
        raise
    try:
        decisions = await bridge.dispatcher.handle(source, alerts)
    except StoreUnavailable:
        bridge.metrics.decided(source, "unavailable")
        bridge.metrics.redis_failed("webhook")
        raise
    bridge.metrics.redis_ok()
    return WebhookResponse(source=source, alerts=len(alerts), decisions=decisions)


@router.post(
    "/grafana",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookResponse,
    responses=_RESPONSES,
)
async def grafana_webhook(bridge: BridgeDep, body: GrafanaBody) -> WebhookResponse:
    """Grafana unified alerting webhook contact point (payload version "1")."""
    return await _handle(bridge, "grafana", body)


@router.post(
    "/alertmanager",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookResponse,
    responses=_RESPONSES,
)
async def alertmanager_webhook(bridge: BridgeDep, body: AlertmanagerBody) -> WebhookResponse:
    """Prometheus Alertmanager ``webhook_config`` receiver (payload version "4")."""
    return await _handle(bridge, "alertmanager", body)
