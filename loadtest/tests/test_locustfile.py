"""The locustfile end to end against a fake model API (no stack needed): ids are the API's,
the correlation id is echoed, feedback follows predictions with the answer's token, the
producer key and the right truth, drift starts on schedule, a 422 for a bad
body counts as a success, and the reports land where the command says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftloop_contracts import (
    API_KEY_HEADER,
    CORRELATION_ID_HEADER,
    TARGET_SCALE_USD,
    FeedbackApiKeySettings,
    HouseFeatures,
)
from driftloop_loadtest.command import locust_command, report_paths
from driftloop_loadtest.dataset import load_rows
from driftloop_loadtest.results import AGGREGATED, read_failures, read_schedule_log, read_stats
from driftloop_loadtest.scenarios import LATITUDE_FEATURE

schemas = pytest.importorskip("driftloop_model_api.schemas")
#: The key locust sends by default: the one the replicas would read from the same environment.
PRODUCER_KEY = FeedbackApiKeySettings().producer_key


@dataclass
class Seen:
    predictions: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    feedback: list[tuple[float, str, float]] = field(default_factory=list)
    invalid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind nginx

        def log_message(self, *args: object) -> None:
            pass

        def reply(
            self, status: int, body: dict[str, object], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            try:
                if self.path == "/predict":
                    features = HouseFeatures.model_validate_json(body or b"null")
                    assert "X-Request-ID" not in self.headers, "the API issues request ids"
                    rid = uuid.uuid4().hex
                    with seen.lock:
                        seen.predictions[rid] = (now, features.model_dump())
                    self.reply(
                        200,
                        {
                            "request_id": rid,
                            "median_house_value": 1.0e5,
                            "model_name": "fake",
                            "model_version": "1",
                            "feedback_token": f"token-of-{rid}",
                        },
                        {CORRELATION_ID_HEADER: self.headers[CORRELATION_ID_HEADER]},
                    )
                elif self.path == "/feedback":
                    if self.headers.get(API_KEY_HEADER) != PRODUCER_KEY:
                        self.reply(401, {"error": "missing_api_key"})
                        return
                    item = schemas.FeedbackRequest.model_validate_json(body or b"null")
                    if item.feedback_token != f"token-of-{item.request_id}":
                        self.reply(403, {"error": "invalid_feedback_token"})
                        return
                    with seen.lock:
                        seen.feedback.append((now, item.request_id, item.actual))
                    self.reply(202, {"request_id": item.request_id, "status": "accepted"})
                else:
                    self.reply(404, {"error": "not_found"})
            except ValidationError as exc:
                with seen.lock:
                    seen.invalid += 1
                self.reply(422, {"error": "invalid_input", "message": str(exc)[:200]})

    return Handler


@pytest.fixture
def fake_api() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_headless_run_against_a_fake_api(fake_api: tuple[str, Seen], tmp_path: Path) -> None:
    host, seen = fake_api
    report_dir = tmp_path / "reports"
    argv = locust_command(
        host=host, users=2, spawn_rate=2, run_time_s=7,
        schedule="steady:3,sudden+concept", report_dir=report_dir,
        feedback_share=1.0, feedback_delay_s=0.3, bad_share=0.2, drift_share=1.0, seed=5,
        extra_args=["--wait-min", "0.01", "--wait-max", "0.05"],
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    log = result.stdout[-3000:] + result.stderr[-3000:]
    paths = report_paths(report_dir)
    assert result.returncode == 0, log
    assert paths.html.is_file() and paths.stats_csv.is_file(), log

    stats = read_stats(paths.stats_csv)
    assert stats[AGGREGATED].failures == 0, read_failures(paths.failures_csv)
    assert stats["/predict"].requests > 20
    assert stats["/feedback"].requests > 10
    invalid = sum(s.requests for n, s in stats.items() if n.endswith("[invalid]"))
    assert invalid > 0 and invalid == seen.invalid  # each answered 422, counted a success

    # Every feedback names a request id the API answered, after it was predicted.
    for at, rid, _ in seen.feedback:
        assert rid in seen.predictions
        assert at >= seen.predictions[rid][0] + 0.25

    # Drift starts when the schedule log says; the truth is shifted from then on.
    switches = read_schedule_log(paths.schedule_log)
    assert [s["segment"] for s in switches] == ["steady", "sudden+concept"]
    onset = switches[1]["wall_time"]
    assert switches[1]["elapsed_s"] == 3.0  # the schedule's own switch time ...
    assert switches[1]["logged_elapsed_s"] >= 3.0  # ... announced once it had happened
    assert switches[1]["wall_time"] == pytest.approx(switches[0]["wall_time"] + 3.0)
    # The fake API stamps a request when it arrives, after the client chose its phase: on a
    # loaded machine that can be a fair fraction of a second later, so leave a second each side.
    margin = 1.0
    before = [f for t, f in seen.predictions.values() if t < onset - margin]
    after = [f for t, f in seen.predictions.values() if t > onset + margin]
    assert before and after
    min_lat = min(r[LATITUDE_FEATURE] for r in load_rows().rows)
    assert any(f[LATITUDE_FEATURE] < min_lat + 2.0 for f in before)
    assert all(f[LATITUDE_FEATURE] >= min_lat + 2.0 for f in after)  # drift_share=1.0

    targets = {round(t, 5) for t in load_rows().targets}
    pre = [a for _, rid, a in seen.feedback if seen.predictions[rid][0] < onset - margin]
    post = [a for _, rid, a in seen.feedback if seen.predictions[rid][0] > onset + margin]
    assert pre and post
    assert all(round(a / TARGET_SCALE_USD, 5) in targets for a in pre)
    assert all(round(a / (TARGET_SCALE_USD * 1.3), 5) in targets for a in post)
    assert any(round(a / TARGET_SCALE_USD, 5) not in targets for a in post)


def test_the_entry_point_for_locust_f_offers_the_packaged_user() -> None:
    """``locust -f loadtest/locustfile.py`` (people, Docker) finds the package's user class."""
    shim = Path(__file__).resolve().parents[1] / "locustfile.py"
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(shim), "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DriftloopUser" in result.stdout
