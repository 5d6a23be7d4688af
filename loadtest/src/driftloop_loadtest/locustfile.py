"""Locust users for driftloop: predictions, delayed feedback, bad requests, drift scenarios.

Run against nginx (the stack's ``nginx_url``), never one replica::

    uv run locust -f loadtest/locustfile.py --host http://127.0.0.1:18000 \\
        --headless -u 8 -r 8 -t 5m --schedule "steady:30,sudden+concept"

Without ``--headless`` the same options appear in the web UI (http://127.0.0.1:8089).
What each request carries is decided by the pure functions in :mod:`scenarios`; this file
only does I/O and bookkeeping. See loadtest/README.md for every option.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from driftloop_contracts import API_KEY_HEADER, CORRELATION_ID_HEADER
from driftloop_loadtest.dataset import HousingRows, load_rows
from driftloop_loadtest.options import (
    CSV_PREFIX,
    DEFAULT_REPORT_DIR,
    HTML_NAME,
    RunConfig,
    add_arguments,
    run_config,
)
from driftloop_loadtest.scenarios import (
    FEEDBACK_ROUTE,
    PREDICT_ROUTE,
    BadRequest,
    Schedule,
    Segment,
    bad_request,
    plan_prediction,
)

log = logging.getLogger("driftloop.loadtest")

PREDICT = PREDICT_ROUTE
FEEDBACK = FEEDBACK_ROUTE
INVALID_SUFFIX = " [invalid]"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass
class _Run:
    """Per-process state of the current test: set on ``test_start``, read by every user."""

    config: RunConfig | None = None
    rows: HousingRows | None = None
    started: float = 0.0  # time.monotonic() at test start
    started_wall: float = 0.0  # time.time() at the same moment
    announcer: gevent.Greenlet | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


RUN = _Run()
_user_numbers = itertools.count(1)


# --------------------------------------------------------------------------- options & lifecycle


@events.init_command_line_parser.add_listener
def _add_options(parser: LocustArgumentParser, **_: object) -> None:
    add_arguments(parser)
    # Reports go to loadtest/reports/ unless --csv/--html say otherwise (web-UI runs too: the
    # CSV is written while running, the HTML when locust stops).
    parser.set_defaults(
        csv_prefix=str(DEFAULT_REPORT_DIR / CSV_PREFIX),
        html_file=str(DEFAULT_REPORT_DIR / HTML_NAME),
    )


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    try:
        RUN.config = run_config(options)
    except ValueError as exc:
        log.error("invalid load-test options: %s", exc)
        if options.headless:
            raise SystemExit(2) from None
    if not getattr(options, "master", False):  # a master runs no users: it needs no rows
        try:
            RUN.rows = load_rows(options.data_home or None)
        except RuntimeError as exc:
            log.error("%s", exc)
            raise SystemExit(2) from None
        log.info("loaded %d California housing rows", len(RUN.rows))
        # Loading blocked the event loop for seconds (importing scikit-learn); refresh gevent's
        # cached clock, or locust's --run-time timer (spawned next) would fire that much early.
        gevent.get_hub().loop.update_now()


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    try:
        # Re-read: the web UI may have changed the options since init.
        RUN.config = run_config(options)
    except ValueError as exc:
        log.error("invalid load-test options, stopping: %s", exc)
        RUN.config = None
        if environment.runner is not None:
            gevent.spawn_later(0, environment.runner.stop)
        return
    RUN.started, RUN.started_wall = time.monotonic(), time.time()
    RUN.announcer = gevent.spawn(_announce, RUN.config.schedule, RUN.config.schedule_log)
    log.info("schedule: %s", RUN.config.schedule)


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    if RUN.announcer is not None:
        RUN.announcer.kill(block=False)
        RUN.announcer = None


def _announce(schedule: Schedule, path: str) -> None:
    """Log each scenario switch once it has happened (and append it to ``path`` as JSON lines)."""
    for index, (start_s, segment) in enumerate(schedule.switches()):
        delay = start_s - RUN.elapsed()
        if delay > 0:
            gevent.sleep(delay)
        _record_switch(index, start_s, segment, path)


def _record_switch(index: int, start_s: float, segment: Segment, path: str) -> None:
    """Record when the segment began: every request picks its phase from the schedule by its own
    elapsed time, so the switch happened at ``start_s`` exactly, however late this greenlet woke
    (a loaded machine delays it); ``logged_*`` say when the line was written."""
    at = RUN.started_wall + start_s
    logged_elapsed = RUN.elapsed()
    log.info("scenario -> %s (segment %d, t=%.1fs)", segment.label, index + 1, start_s)
    if not path:
        return
    line = {
        "wall_time": at,
        "iso_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
        + f".{int(at % 1 * 1000):03d}Z",
        "elapsed_s": round(start_s, 3),
        "logged_elapsed_s": round(logged_elapsed, 3),
        "segment_index": index,
        "segment": segment.label,
        "duration_s": segment.duration_s,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


# --------------------------------------------------------------------------- the user


@dataclass(frozen=True)
class _PendingFeedback:
    due: float  # time.monotonic()
    request_id: str
    feedback_token: str
    actual_usd: float


class DriftloopUser(FastHttpUser):
    """One client: predicts, later reports the truth for some predictions, sometimes errs."""

    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        number = next(_user_numbers)
        cfg = self._config()
        self.rng = random.Random(cfg.seed * 1_000_003 + number) if cfg.seed else random.Random()
        self.pending: deque[_PendingFeedback] = deque()

    def wait_time(self) -> float:
        cfg = self._config()
        return self.rng.uniform(cfg.wait_min_s, cfg.wait_max_s)

    @staticmethod
    def _config() -> RunConfig:
        if RUN.config is None:
            raise RuntimeError("the load-test options are invalid; see the log")
        return RUN.config

    @task
    def drive(self) -> None:
        """One iteration: feedback that fell due, then one prediction or one bad request."""
        cfg = self._config()
        self._send_due_feedback()
        assert RUN.rows is not None
        features, target = RUN.rows.sample(self.rng)
        if cfg.bad_share and self.rng.random() < cfg.bad_share:
            self._send_bad(bad_request(self.rng, features))
            return
        elapsed = RUN.elapsed()
        phase = cfg.schedule.phase_at(elapsed)
        planned = plan_prediction(self.rng, features, target, phase, elapsed, cfg.drift)
        issued = self._predict(planned.features)
        if issued is not None and self.rng.random() < cfg.feedback_share:
            due = time.monotonic() + cfg.feedback_delay_s
            request_id, token = issued
            self.pending.append(_PendingFeedback(due, request_id, token, planned.actual_usd))

    def _predict(self, features: dict[str, float]) -> tuple[str, str] | None:
        """POST /predict; the request id and feedback token of the answer, ``None`` on failure.

        The API issues the id; ours goes in ``X-Correlation-ID`` and must come back there.
        """
        correlation = f"lt-{uuid.uuid4().hex}"
        headers = {**JSON_HEADERS, CORRELATION_ID_HEADER: correlation}
        body = json.dumps(features)
        with self.client.post(
            PREDICT, data=body, headers=headers, name=PREDICT, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"expected 200, got {resp.status_code}: {_snippet(resp.text)}")
                return None
            try:
                reply = resp.json()
                answered_id = str(reply["request_id"])
                token = str(reply["feedback_token"])
                value = float(reply["median_house_value"])
            except (ValueError, KeyError, TypeError) as exc:
                resp.failure(f"unexpected reply {_snippet(resp.text)}: {exc}")
                return None
            echoed = resp.headers.get(CORRELATION_ID_HEADER)
            if echoed != correlation:
                resp.failure(f"{CORRELATION_ID_HEADER} {echoed!r} does not echo {correlation!r}")
                return None
            if not math.isfinite(value):
                resp.failure(f"median_house_value is not finite: {value}")
                return None
            resp.success()
            return answered_id, token

    def _send_due_feedback(self) -> None:
        now = time.monotonic()
        while self.pending and self.pending[0].due <= now:
            item = self.pending.popleft()
            body = json.dumps(
                {
                    "request_id": item.request_id,
                    "actual": item.actual_usd,
                    "feedback_token": item.feedback_token,
                }
            )
            with self.client.post(
                FEEDBACK, data=body, headers=self._producer_headers(), name=FEEDBACK,
                catch_response=True,
            ) as resp:  # fmt: skip
                if resp.status_code == 202:
                    resp.success()
                else:
                    resp.failure(f"expected 202, got {resp.status_code}: {_snippet(resp.text)}")

    def _producer_headers(self) -> dict[str, str]:
        """JSON headers plus the label producer's API key (feedback is sent as a producer)."""
        return {**JSON_HEADERS, API_KEY_HEADER: self._config().feedback_api_key}

    def _send_bad(self, bad: BadRequest) -> None:
        """An invalid body on purpose: a 422 is the right answer, anything else a failure."""
        with self.client.post(
            bad.route,
            # locust annotates ``data`` as ``str | dict``, but its docstring and geventhttpclient
            # take bytes, which an invalid body must stay (sent exactly as built).
            data=bad.body,  # type: ignore[arg-type]
            headers=self._producer_headers(),
            name=bad.route + INVALID_SUFFIX,
            catch_response=True,
        ) as resp:
            if resp.status_code == 422:
                resp.success()
            else:
                resp.failure(
                    f"{bad.case}: expected 422, got {resp.status_code}: {_snippet(resp.text)}"
                )


def _snippet(text: str | None, limit: int = 200) -> str:
    return (text or "")[:limit].replace("\n", " ")


if __name__ == "__main__":  # pragma: no cover - convenience: `python .../locustfile.py`
    sys.exit("run me with: uv run locust -f loadtest/locustfile.py (see loadtest/README.md)")
