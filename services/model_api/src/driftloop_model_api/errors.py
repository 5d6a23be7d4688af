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

Body shape of every error answer::

    {"error": "invalid_input",
     "message": "average_rooms: greater_than_equal: Input should be greater than or equal to 0.1",
     "detail": [{"field": "average_rooms", "rule": "greater_than_equal",
                 "message": "Input should be greater than or equal to 0.1"}]}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)

#: Field name used when the problem is the body as a whole (empty, not JSON, not an object).
BODY = "body"


@dataclass(frozen=True)
class FieldProblem:
    """One broken rule: which field (dotted path), which rule (a stable code), and why."""

    field: str
    rule: str
    message: str

    def render(self) -> str:
        return f"{self.field}: {self.rule}: {self.message}"


class ModelApiError(Exception):
    """Base of every error the model API raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, problems: Iterable[FieldProblem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "message": self.message,
            "detail": [asdict(p) for p in self.problems],
        }


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

    def __init__(self) -> None:
        super().__init__("no model is loaded yet; try again shortly")


class ModelLoadError(ModelApiError):
    """A model version could not be fetched, deserialised, or does not take our features."""

    code = "model_load_error"


def _field_path(loc: Iterable[Any], prefix: str) -> str:
    parts = [str(p) for p in loc if p != "body"]
    if prefix:
        parts.insert(0, prefix)
    return ".".join(parts) or BODY


def problems_from_errors(errors: Iterable[Any], prefix: str = "") -> list[FieldProblem]:
    return [
        FieldProblem(
            _field_path(err.get("loc", ()), prefix),
            str(err.get("type", "invalid")),
            str(err.get("msg", "invalid value")),
        )
        for err in errors
    ]


def _json(exc: ModelApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _handle_model_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelApiError)
    return _json(exc)


async def _handle_request_validation(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own validation (query/path/header parameters): same shape as ours.
    assert isinstance(exc, RequestValidationError)
    return _json(InvalidInput(problems_from_errors(exc.errors())))


async def _handle_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = {"error": "http_error", "message": str(exc.detail), "detail": []}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: log it with the request id, answer without a traceback.
    log.error(
        "unhandled_error",
        path=request.url.path,
        request_id=request.headers.get("x-request-id"),
        exc_info=exc,
    )
    return JSONResponse(
        {"error": "internal_error", "message": "internal error", "detail": []}, status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; called once by :func:`driftloop_model_api.app.create_app`."""
    app.add_exception_handler(ModelApiError, _handle_model_api_error)
    app.add_exception_handler(RequestValidationError, _handle_request_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(Exception, _handle_unexpected)
