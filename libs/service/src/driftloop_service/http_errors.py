"""One error body for every 4xx/5xx of every driftloop service, and the handlers that make it.

Body shape (documented in README.md and docs/api.md)::

    {"error": "invalid_input",                       a stable code (snake_case)
     "message": "average_rooms: greater_than_equal: Input should be greater than or equal to 0.1",
     "detail": [{"field": "average_rooms",           dotted path; "body" for the body as a whole
                 "rule": "greater_than_equal",        a stable rule code (pydantic's error type)
                 "message": "Input should be greater than or equal to 0.1"}]}

``detail`` is a list (empty when no field is at fault); ``message`` is the whole story in one
line for a person. A service raises an :class:`ApiError` subclass (or maps its own errors onto
:func:`error_response`); :func:`install_error_handlers` gives FastAPI's own failures the same
shape: request validation (422 naming each field), ``HTTPException`` (``http_error``, e.g. a
404) and anything unexpected (500 ``internal_error``, logged, never a traceback in the body).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "BODY",
    "ApiError",
    "ErrorBody",
    "FieldProblem",
    "ProblemDetail",
    "error_body",
    "error_response",
    "install_error_handlers",
    "invalid_input_response",
    "problems_from_errors",
    "validation_problems",
]

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


class ProblemDetail(BaseModel):
    """OpenAPI schema of one ``detail`` item."""

    field: str
    rule: str
    message: str


class ErrorBody(BaseModel):
    """OpenAPI schema of every error answer (use in ``responses={...: {"model": ErrorBody}}``)."""

    error: str
    message: str
    detail: list[ProblemDetail]


def error_body(code: str, message: str, problems: Iterable[FieldProblem] = ()) -> dict[str, Any]:
    return {"error": code, "message": message, "detail": [asdict(p) for p in problems]}


def error_response(
    status_code: int,
    code: str,
    message: str,
    problems: Iterable[FieldProblem] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, problems),
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


class ApiError(Exception):
    """An error with its HTTP answer: subclass it with ``status_code`` and ``code``."""

    status_code = 500
    code = "internal_error"
    #: Extra response headers (e.g. ``Retry-After`` on a 503).
    headers: Mapping[str, str] | None = None

    def __init__(self, message: str, problems: Iterable[FieldProblem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.problems)

    def response(self) -> JSONResponse:
        return error_response(
            self.status_code, self.code, self.message, self.problems, self.headers
        )


def _field_path(loc: Iterable[Any], prefix: str) -> str:
    parts = [str(p) for p in loc if p != BODY]
    if prefix:
        parts.insert(0, prefix)
    return ".".join(parts) or BODY


def problems_from_errors(errors: Iterable[Any], prefix: str = "") -> list[FieldProblem]:
    """pydantic's ``errors()`` as field problems (``rows.3.average_rooms`` style paths)."""
    return [
        FieldProblem(
            _field_path(err.get("loc", ()), prefix),
            str(err.get("type", "invalid")),
            str(err.get("msg", "invalid value")),
        )
        for err in errors
    ]


def validation_problems(exc: ValidationError, prefix: str = "") -> list[FieldProblem]:
    return problems_from_errors(exc.errors(include_url=False), prefix)


def invalid_input_response(problems: Iterable[FieldProblem]) -> JSONResponse:
    """422 ``invalid_input`` whose message lists every problem."""
    problems = tuple(problems)
    message = "; ".join(p.render() for p in problems) or "invalid input"
    return error_response(422, "invalid_input", message, problems)


async def _handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _handle_request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid_input_response(problems_from_errors(exc.errors()))


async def _handle_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, "http_error", str(exc.detail), (), exc.headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: log it with the request id, answer without a traceback.
    log.error(
        "unhandled_error",
        path=request.url.path,
        request_id=request.headers.get("x-request-id"),
        exc_info=exc,
    )
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Give every error answer of ``app`` the one body shape (call once in ``create_app``)."""
    app.add_exception_handler(ApiError, _handle_api_error)
    app.add_exception_handler(RequestValidationError, _handle_request_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(Exception, _handle_unexpected)
