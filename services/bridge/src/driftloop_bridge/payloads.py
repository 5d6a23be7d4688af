"""Grafana and Alertmanager webhook payloads, parsed into one :class:`Alert`.

Formats, from the senders' own sources (not from memory):

* Prometheus Alertmanager ``webhook_config``: ``notify/webhook/webhook.go`` (``Message`` =
  ``template.Data`` + ``version: "4"``, ``groupKey``, ``truncatedAlerts``) and
  ``template/template.go`` (``Data``: receiver, status, alerts, groupLabels, commonLabels,
  commonAnnotations, externalURL; ``Alert``: status, labels, annotations, startsAt, endsAt,
  generatorURL, fingerprint) in prometheus/alertmanager.
* Grafana unified alerting webhook contact point: ``receivers/webhook/v1/webhook.go``
  (``webhookMessage`` = ``ExtendedData`` + ``version: "1"``, groupKey, truncatedAlerts, orgId,
  title, state, message) and ``templates/template_data.go`` (``ExtendedAlert`` adds
  silenceURL, dashboardURL, panelURL, ``values`` (map of float64), valueString, imageURL,
  orgId) in grafana/alerting.

Unknown extra fields are tolerated (both senders add fields over time); the fields the bridge
relies on are required and typed, and a violation is a :class:`PayloadError` naming each one.
An ``endsAt`` of Go's zero time (``0001-01-01T00:00:00Z``) means "not ended" and becomes None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic_core import from_json

from driftloop_service import BODY, FieldProblem, validation_problems

from .errors import PayloadError

Source = Literal["grafana", "alertmanager"]
AlertStatus = Literal["firing", "resolved"]

ALERTMANAGER_VERSION = "4"
GRAFANA_VERSION = "1"
_GO_ZERO_YEAR = 1


@dataclass(frozen=True)
class Alert:
    """One alert, whichever system sent it: what routing, dedupe and the DAG's conf need."""

    source: Source
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    group_key: str
    receiver: str = ""
    generator_url: str = ""
    values: dict[str, float | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


Labels = dict[StrictStr, StrictStr]


def _rfc3339_string(value: Any) -> Any:
    # Both senders write RFC 3339 strings; a number would otherwise be read as a Unix time.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_string)]


class _AlertBody(_Model):
    status: AlertStatus
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: Timestamp
    endsAt: Timestamp | None = None
    generatorURL: StrictStr = ""
    fingerprint: StrictStr = ""


class AlertmanagerAlert(_AlertBody):
    """``template.Alert`` from prometheus/alertmanager template/template.go."""


class GrafanaAlert(_AlertBody):
    """``templates.ExtendedAlert`` from grafana/alerting templates/template_data.go."""

    values: dict[StrictStr, StrictFloat | None] | None = None
    valueString: StrictStr = ""
    silenceURL: StrictStr = ""
    dashboardURL: StrictStr = ""
    panelURL: StrictStr = ""
    orgId: StrictInt | None = None


class _Envelope(_Model):
    receiver: StrictStr = ""
    status: AlertStatus | None = None
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: StrictStr = ""
    version: StrictStr | None = None
    groupKey: StrictStr = ""
    truncatedAlerts: StrictInt = 0


class AlertmanagerWebhook(_Envelope):
    """Alertmanager ``webhook_config`` body (prometheus/alertmanager notify/webhook/webhook.go)."""

    alerts: Annotated[list[AlertmanagerAlert], Field(min_length=1)]


class GrafanaWebhook(_Envelope):
    """Grafana webhook contact point body (grafana/alerting receivers/webhook/v1/webhook.go)."""

    alerts: Annotated[list[GrafanaAlert], Field(min_length=1)]
    orgId: StrictInt | None = None
    title: StrictStr = ""
    state: StrictStr = ""
    message: StrictStr = ""


_UTF8_BOM = b"\xef\xbb\xbf"


def _decode(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a :class:`PayloadError` (422) whatever the bytes are.

    pydantic-core's parser, not ``json``: it stops at a fixed nesting depth (``json`` recurses
    until Python raises RecursionError, which was a 500), accepts only UTF-8 (RFC 8259; a
    leading BOM is tolerated as before) and refuses lone surrogates, which would fail later
    when a label is written to Redis or into the response.
    """
    try:
        raw = from_json(body.removeprefix(_UTF8_BOM))
    except Exception as exc:  # whatever the parser raises, the body is bad input, not a bug
        raise PayloadError(
            f"body is not valid JSON: {exc}", [FieldProblem(BODY, "json", "not valid JSON")]
        ) from None
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise PayloadError(
            "body must be a JSON object",
            [FieldProblem(BODY, "object_type", f"expected an object, got {got}")],
        )
    return raw


def _ends_at(value: datetime | None) -> datetime | None:
    if value is None or value.year <= _GO_ZERO_YEAR:
        return None
    return _aware(value)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _finite(values: dict[str, float | None] | None) -> dict[str, float | None]:
    # Grafana's values are float64; NaN/inf (NoData, division by zero) cannot travel as JSON
    # to Airflow, so they become null.
    return {
        k: (v if v is not None and math.isfinite(v) else None) for k, v in (values or {}).items()
    }


def _check_version(found: str | None, expected: str, sender: str) -> None:
    if found is not None and found != expected:
        raise PayloadError(
            f"unsupported {sender} webhook version",
            [
                FieldProblem(
                    "version",
                    "supported_version",
                    f"expected {expected!r} for the {sender} format, got {found!r}",
                )
            ],
        )


def parse_alertmanager(body: bytes) -> list[Alert]:
    """Alertmanager webhook (version "4") body -> alerts. Raises :class:`PayloadError`."""
    return _parse(body, AlertmanagerWebhook, "alertmanager", "Alertmanager", ALERTMANAGER_VERSION)


def parse_grafana(body: bytes) -> list[Alert]:
    """Grafana unified-alerting webhook (version "1") body -> alerts."""
    return _parse(body, GrafanaWebhook, "grafana", "Grafana", GRAFANA_VERSION)


def _parse(
    body: bytes,
    model: type[AlertmanagerWebhook | GrafanaWebhook],
    source: Source,
    sender: str,
    version: str,
) -> list[Alert]:
    raw = _decode(body)
    try:
        msg = model.model_validate(raw)
    except ValidationError as exc:
        raise PayloadError(f"invalid {sender} webhook payload", validation_problems(exc)) from None
    _check_version(msg.version, version, sender)
    return [
        Alert(
            source=source,
            status=a.status,
            labels=dict(a.labels),
            annotations=dict(a.annotations),
            starts_at=_aware(a.startsAt),
            ends_at=_ends_at(a.endsAt),
            fingerprint=a.fingerprint,
            group_key=msg.groupKey,
            receiver=msg.receiver,
            generator_url=a.generatorURL,
            values=_finite(getattr(a, "values", None)),  # Grafana only
        )
        for a in msg.alerts
    ]
