"""Locust for ``bench/saturation.py``: the project's users, stepped up by a load shape.

The users are :class:`driftloop_loadtest.locustfile.DriftloopUser` unchanged (predictions,
delayed feedback, a few invalid bodies), so the bench offers the traffic the demo offers. One
locust process runs every step (no restart between steps, so a backlog built in one step is
still there at the next), and this file adds two things:

- :class:`StepShape`: ``--saturation-users 2,4,8`` users, ``--saturation-step-seconds`` each;
- a per-step recorder: every request is filed under its step by the time it ended, skipping
  the first ``--saturation-settle-seconds`` of each step (users spawning, queues filling), and
  at the end ``--saturation-out`` gets, per step, the requests, failures and latency
  percentiles of that step only (locust's own CSV percentiles are cumulative or a 10 s window).

Steps are counted from the test start the package's locustfile records
(``driftloop_loadtest.locustfile.RUN.started_wall``, also the first line of ``schedule.jsonl``),
so the bench's metric snapshots and this file agree on where each step begins.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

from driftloop_loadtest.locustfile import RUN, DriftloopUser

__all__ = ["DriftloopUser", "StepShape"]


class _Steps:
    """Per-step latencies (ms) and failure counts of this process, filled by the listener."""

    def __init__(self) -> None:
        self.users: list[int] = []
        self.step_s = 60.0
        self.settle_s = 10.0
        self.out = ""
        self.latencies: dict[int, list[float]] = {}
        self.failures: dict[int, int] = {}

    def step_of(self, wall: float) -> int | None:
        """The step a request ending at ``wall`` belongs to; ``None`` while settling/outside."""
        if not RUN.started_wall:
            return None
        elapsed = wall - RUN.started_wall
        index = int(elapsed // self.step_s)
        if elapsed < 0 or index >= len(self.users) or elapsed - index * self.step_s < self.settle_s:
            return None
        return index


STEPS = _Steps()


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (``None`` for no data)."""
    if not sorted_ms:
        return None
    rank = max(1, int(-(-q * len(sorted_ms) // 1)))  # ceil(q * n), at least 1
    return sorted_ms[min(rank, len(sorted_ms)) - 1]


@events.init_command_line_parser.add_listener
def _add_options(parser: LocustArgumentParser, **_: object) -> None:
    parser.add_argument("--saturation-users", default="2,4,8", include_in_web_ui=False)
    parser.add_argument(
        "--saturation-step-seconds", type=float, default=60.0, include_in_web_ui=False
    )
    parser.add_argument(
        "--saturation-settle-seconds", type=float, default=10.0, include_in_web_ui=False
    )
    parser.add_argument("--saturation-out", default="", include_in_web_ui=False)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    STEPS.users = [int(u) for u in str(options.saturation_users).split(",") if u.strip()]
    STEPS.step_s = float(options.saturation_step_seconds)
    STEPS.settle_s = float(options.saturation_settle_seconds)
    STEPS.out = str(options.saturation_out)


@events.request.add_listener
def _on_request(response_time: float, exception: BaseException | None, **_: Any) -> None:
    step = STEPS.step_of(time.time())
    if step is None:
        return
    STEPS.latencies.setdefault(step, []).append(float(response_time))
    if exception is not None:
        STEPS.failures[step] = STEPS.failures.get(step, 0) + 1


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    """Write what each step measured (called once, when the shape ends or locust is stopped)."""
    if not STEPS.out:
        return
    rows = []
    for index, users in enumerate(STEPS.users):
        lat = sorted(STEPS.latencies.get(index, []))
        rows.append(
            {
                "index": index,
                "users": users,
                "requests": len(lat),
                "failures": STEPS.failures.get(index, 0),
                "p50_ms": _percentile(lat, 0.50),
                "p99_ms": _percentile(lat, 0.99),
            }
        )
    body = {
        "started_wall": RUN.started_wall,
        "step_s": STEPS.step_s,
        "settle_s": STEPS.settle_s,
        "steps": rows,
    }
    Path(STEPS.out).write_text(json.dumps(body, indent=1), encoding="utf-8")


class StepShape(LoadTestShape):
    """``users[i]`` users during step ``i`` (all spawned within a second), then stop."""

    def tick(self) -> tuple[int, float] | None:
        index = int(self.get_run_time() // STEPS.step_s)
        if index >= len(STEPS.users):
            return None
        users = STEPS.users[index]
        return users, float(max(users, 1))
