"""A GET that times out is asked again; one that is refused or answers an error is not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driftloop_cli import observe


class _Slow(BaseHTTPRequestHandler):
    """Answers ``{"n": <request number>}``; the first ``slow`` requests only after ``delay_s``."""

    slow = 0
    delay_s = 1.0
    seen = 0
    status = 200

    def do_GET(self) -> None:
        cls = type(self)
        cls.seen += 1
        if cls.seen <= cls.slow:
            time.sleep(cls.delay_s)
        body = json.dumps({"n": cls.seen}).encode()
        try:
            self.send_response(cls.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up on a slow answer
            pass

    def log_message(self, *args: object) -> None: ...


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_Slow]]]:
    handler = type("Handler", (_Slow,), {"seen": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(observe, "TIMEOUT", 0.3)
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/x", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_timed_out_get_is_asked_again_and_its_answer_used(
    server: tuple[str, type[_Slow]],
) -> None:
    url, handler = server
    handler.slow = observe.TIMEOUT_TRIES - 1
    assert observe.get_json("test", url) == {"n": observe.TIMEOUT_TRIES}
    assert handler.seen == observe.TIMEOUT_TRIES


def test_a_get_that_keeps_timing_out_is_an_observation_error(
    server: tuple[str, type[_Slow]],
) -> None:
    url, handler = server
    handler.slow = 100
    with pytest.raises(observe.ObservationError, match="unreachable"):
        observe.get_json("test", url)
    assert handler.seen == observe.TIMEOUT_TRIES


def test_an_error_status_is_not_retried(server: tuple[str, type[_Slow]]) -> None:
    url, handler = server
    handler.status = 503
    with pytest.raises(observe.ObservationError, match="503"):
        observe.get_json("test", url)
    assert handler.seen == 1
