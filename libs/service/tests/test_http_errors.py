"""Every error answer has the one body shape, and validation errors name the field."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.testclient import TestClient

from driftloop_service import ApiError, FieldProblem, install_error_handlers


class Teapot(ApiError):
    status_code = 418
    code = "teapot"
    headers = {"Retry-After": "3"}


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/items")
    async def items(limit: Annotated[int, Query(ge=1, le=10)] = 5) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/teapot")
    async def teapot() -> None:
        raise Teapot("short and stout", [FieldProblem("spout", "present", "needs a spout")])

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "no such thing")

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret internals")

    return app


def assert_shape(body: dict[str, object]) -> None:
    assert set(body) == {"error", "message", "detail"}, body
    assert isinstance(body["detail"], list)


def test_validation_errors_name_the_field_and_rule() -> None:
    client = TestClient(make_app())
    r = client.get("/items", params={"limit": 50})
    assert r.status_code == 422
    body = r.json()
    assert_shape(body)
    assert body["error"] == "invalid_input"
    assert body["detail"][0]["field"] == "query.limit"
    assert body["detail"][0]["rule"] == "less_than_equal"
    assert "query.limit" in body["message"]


def test_api_errors_carry_status_code_problems_and_headers() -> None:
    r = TestClient(make_app()).get("/teapot")
    assert r.status_code == 418 and r.headers["retry-after"] == "3"
    assert r.json() == {
        "error": "teapot",
        "message": "short and stout",
        "detail": [{"field": "spout", "rule": "present", "message": "needs a spout"}],
    }


def test_http_exceptions_and_unknown_routes() -> None:
    client = TestClient(make_app())
    r = client.get("/missing")
    assert r.status_code == 404
    assert r.json() == {"error": "http_error", "message": "no such thing", "detail": []}
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "http_error"


def test_unexpected_errors_are_500_without_a_traceback() -> None:
    r = TestClient(make_app(), raise_server_exceptions=False).get("/bug")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "message": "internal error", "detail": []}
    assert "secret" not in r.text
