"""The bridge's exceptions, one family per kind of failure.

    BridgeError
     ├── AuthError              credentials missing or wrong          -> 401, nothing else happens
     ├── PayloadError           body is not a valid webhook payload   -> 422 naming each field
     ├── BodyTooLarge           body exceeds the configured limit     -> 413
     ├── RulesError             routing rules file unreadable/invalid -> start-up fails
     ├── StoreUnavailable       Redis unreachable                     -> 503 (the sender retries)
     └── TriggerError           Airflow could not create the run
          ├── TriggerUnavailable  transient (down, 5xx, timeout, auth) -> queued and retried
          └── TriggerRejected     permanent (the request itself is bad) -> dead-lettered at once

Lower-layer errors (redis, urllib3, the Airflow client) are wrapped at the call site, so
routes and the retry worker only ever see these. Every error that reaches HTTP is an
:class:`driftloop_service.ApiError`, answered in the one error body of all driftloop services::

    {"error": "invalid_payload", "message": "invalid Alertmanager webhook payload: ...",
     "detail": [{"field": "alerts.0.startsAt", "rule": "value_error", "message": "..."}]}
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from fastapi.responses import JSONResponse

from driftloop_service import BODY, ApiError, FieldProblem, error_response

log = structlog.get_logger(__name__)


class BridgeError(ApiError):
    """Base of every error the bridge raises on purpose."""


class AuthError(BridgeError):
    """The request did not prove it came from a configured sender."""

    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class PayloadError(BridgeError):
    """The body is not a payload of the expected format; ``problems`` name each field."""

    status_code = 422
    code = "invalid_payload"

    def __init__(self, message: str, problems: Iterable[FieldProblem] = ()) -> None:
        problems = tuple(problems)
        listed = "; ".join(f"{p.field}: {p.message}" for p in problems)
        super().__init__(f"{message}: {listed}" if listed else message, problems)


class BodyTooLarge(BridgeError):
    """The body is larger than ``DRIFTLOOP_BRIDGE_MAX_BODY_BYTES``."""

    status_code = 413
    code = "payload_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, [FieldProblem(BODY, "max_bytes", message)])


class RulesError(BridgeError):
    """The routing rules file cannot be read or does not validate."""


class StoreUnavailable(BridgeError):
    """Redis could not be reached; nothing was decided."""

    status_code = 503
    code = "store_unavailable"
    headers = {"Retry-After": "5"}

    def response(self) -> JSONResponse:
        # The cause (with Redis's address) goes to the log, not to the sender.
        log.warning("request_redis_unavailable", error=self.message)
        return error_response(
            self.status_code,
            self.code,
            "state store (Redis) unavailable; retry later",
            headers=self.headers,
        )


class TriggerError(BridgeError):
    """Airflow did not create the DAG run."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TriggerUnavailable(TriggerError):
    """A failure worth retrying: Airflow down, 5xx, timeout, token trouble, DAG not parsed yet."""


class TriggerRejected(TriggerError):
    """Airflow refused the request itself (400/422): retrying the same request cannot help."""
