"""The nginx template renders, and nginx itself accepts the result."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from driftloop_cli.nginx_config import render

TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "nginx.conf.template"


def test_render_fills_every_placeholder(tmp_path: Path) -> None:
    text = render(
        TEMPLATE, listen_port=31900, replica_ports=[31910, 31911], state_dir=tmp_path / "nginx"
    )
    assert "listen 127.0.0.1:31900;" in text
    assert "server 127.0.0.1:31910 max_fails=1 fail_timeout=2s;" in text
    assert "server 127.0.0.1:31911 max_fails=1 fail_timeout=2s;" in text
    assert f"pid {tmp_path / 'nginx'}/nginx.pid;" in text
    assert "client_max_body_size 1m;" in text
    assert "least_conn;" in text and "non_idempotent" in text
    assert "$upstream_response_time" in text and "$$" not in text


def test_no_replicas_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        render(TEMPLATE, listen_port=1, replica_ports=[], state_dir=tmp_path)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render(TEMPLATE, listen_port=31900, replica_ports=[31910], state_dir=tmp_path / "state")
    )
    result = subprocess.run(
        ["nginx", "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_template_forwards_exactly_the_public_routes() -> None:
    import re

    from driftloop_cli.nginx_config import PUBLIC_ROUTES

    for path in (TEMPLATE, TEMPLATE.parents[1] / "docker" / "nginx" / "nginx.conf"):
        forwarded = re.findall(
            r"location = (\S+) \{[^{}]*?proxy_pass http://model_api;\s*\}", path.read_text()
        )
        assert sorted(forwarded) == sorted(PUBLIC_ROUTES), path
        assert path.read_text().count("proxy_pass http") == len(PUBLIC_ROUTES), path


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_real_nginx_issues_ids_and_hides_internal_routes(tmp_path: Path) -> None:
    """The rendered config in a real nginx, in front of a recording upstream: the client's
    X-Request-ID never reaches the replica (nginx's own does, 32 hex), the client's id goes up
    as X-Correlation-ID, and /metrics, /health/* and unknown paths are a JSON 404 at nginx."""
    import json
    import re
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    seen: list[tuple[str, str | None, str | None]] = []

    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            seen.append(
                (self.path, self.headers.get("X-Request-ID"), self.headers.get("X-Correlation-ID"))
            )
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen_port = probe.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render(
            TEMPLATE,
            listen_port=listen_port,
            replica_ports=[upstream.server_address[1]],
            state_dir=tmp_path / "state",
        )
    )
    nginx = subprocess.Popen(
        ["nginx", "-c", str(conf), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"]
    )
    try:
        url = f"http://127.0.0.1:{listen_port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/nginx/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
        r = httpx.post(f"{url}/predict", json={}, headers={"X-Request-ID": "my-chosen-id"})
        assert r.status_code == 200
        c = httpx.post(f"{url}/feedback", json={}, headers={"X-Correlation-ID": "trace-1"})
        assert c.status_code == 200
        (p_path, p_id, p_corr), (f_path, f_id, f_corr) = seen
        assert (p_path, p_corr) == ("/predict", "my-chosen-id")
        assert (f_path, f_corr) == ("/feedback", "trace-1")
        assert p_id and f_id and p_id != f_id
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in (p_id, f_id))
        assert r.headers.get_list("x-request-id") == [p_id]  # the issued id, once
        for path in ("/metrics", "/health/ready", "/health/live", "/predict/", "/nope"):
            hidden = httpx.get(f"{url}{path}")
            assert hidden.status_code == 404, path
            assert re.fullmatch(r"[0-9a-f]{32}", hidden.headers["x-request-id"])
            assert json.loads(hidden.text) == {
                "error": "http_error",
                "message": "Not Found",
                "detail": [],
            }
        assert len(seen) == 2  # none of them reached the replica
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()
