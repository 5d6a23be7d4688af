"""The model API's errors, and the handlers that turn them into HTTP answers.

Every failure a client can cause is a 4xx whose body names the field and the rule it broke;
nothing a client sends can produce a 500 or a traceback::

    ModelApiError                   base of everything raised on purpose here
     ├── ClientError                the client must change its request (4xx)
     │    ├── InvalidInput          422: one or more fields break a rule
     │    ├── PayloadTooLarge       413: body over the configured limit
     │    └── UnsupportedMediaType  415: a body that does not claim to be JSON
     ├── ModelNotReady              503: no champion loaded yet (nginx tries another replica)
     └── ModelLoadError             a version could not be fetched or does not fit the schema

Every answer uses the one error body of all driftloop services
(:mod:`driftloop_service.http_errors`)::

    {"error": "invalid_input",
     "message": "average_rooms: greater_than_equal: Input should be greater than or equal to 0.1",
     "detail": [{"field": "average_rooms", "rule": "greater_than_equal",
                 "message": "Input should be greater than or equal to 0.1"}]}
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from driftloop_service import BODY, ApiError, FieldProblem, problems_from_errors

__all__ = [
    "BODY",
    "ClientDisconnected",
    "ClientError",
    "FieldProblem",
    "InvalidInput",
    "ModelApiError",
    "ModelLoadError",
    "ModelNotReady",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "problems_from_errors",
]


class ModelApiError(ApiError):
    """Base of every error the model API raises on purpose (answered in the shared shape)."""


class ClientError(ModelApiError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    status_code = 400
    code = "bad_request"


class InvalidInput(ClientError):
    """One or more fields break a rule (type, bound, presence, finiteness, size)."""

    status_code = 422
    code = "invalid_input"

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        problems = tuple(problems)
        super().__init__("; ".join(p.render() for p in problems) or "invalid input", problems)

    @classmethod
    def one(cls, field: str, rule: str, message: str) -> InvalidInput:
        return cls([FieldProblem(field, rule, message)])

    @classmethod
    def from_validation_error(cls, exc: ValidationError, prefix: str = "") -> InvalidInput:
        """Map pydantic's errors onto field problems (``rows.3.average_rooms`` style paths)."""
        return cls(problems_from_errors(exc.errors(include_url=False), prefix))


class PayloadTooLarge(ClientError):
    """The body is over ``max_body_bytes``."""

    status_code = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        rule = "max_bytes"
        text = f"the body must be at most {limit} bytes"
        super().__init__(f"{BODY}: {rule}: {text}", [FieldProblem(BODY, rule, text)])


class UnsupportedMediaType(ClientError):
    """A Content-Type that is not JSON (a missing one is accepted as JSON)."""

    status_code = 415
    code = "unsupported_media_type"

    def __init__(self, content_type: str) -> None:
        rule = "json_content_type"
        text = f"expected application/json, got {content_type[:80]!r}"
        super().__init__(
            f"Content-Type: {rule}: {text}", [FieldProblem("Content-Type", rule, text)]
        )


class ClientDisconnected(ClientError):
    """The client went away before sending its whole body: nothing was done with it."""

    code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("the client disconnected before the body was complete")


class ModelNotReady(ModelApiError):
    """No model is loaded yet; the replica is alive but not ready."""

    status_code = 503
    code = "model_not_ready"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("no model is loaded yet; try again shortly")


class ModelLoadError(ModelApiError):
    """A model version could not be fetched, deserialised, or does not take our features."""

    code = "model_load_error"
