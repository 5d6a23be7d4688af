"""`driftloop status` shows readiness and the service's own reasons, not only liveness."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driftloop_cli.components import Component
from driftloop_cli.health import readiness


def serve(status: int, body: object) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(status if self.path == "/health/ready" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def not_ready() -> Iterator[str]:
    body = {"status": "not_ready", "problems": ["consumer not running", "no reference"]}
    yield from serve(503, body)


@pytest.fixture
def ready() -> Iterator[str]:
    yield from serve(200, {"status": "ready", "problems": []})


def service(url: str) -> Component:
    return Component(
        "drift-consumer", ["x"], None, url, "http:/health/live", readiness_path="/health/ready"
    )


def test_a_service_that_is_not_ready_says_why(not_ready: str) -> None:
    h = readiness(service(not_ready))
    assert h is not None and not h.healthy
    assert h.detail == "consumer not running; no reference"


def test_a_ready_service(ready: str) -> None:
    h = readiness(service(ready))
    assert h is not None and h.healthy


def test_an_unreachable_service_is_not_ready() -> None:
    h = readiness(service("http://127.0.0.1:9"))
    assert h is not None and not h.healthy and "/health/ready" in h.detail


def test_infrastructure_has_no_readiness() -> None:
    assert readiness(Component("redis", ["x"], 1, "redis://x", "redis")) is None
