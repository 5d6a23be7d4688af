"""The load test's own command-line options, shown in locust's web UI too, and their validation.

Defaults here are the single source: the locustfile registers them, :mod:`command` builds a
command line from them, the README lists them. Float options keep float defaults because the
web UI converts a submitted value with ``type(default)(value)``.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from driftloop_contracts import FeedbackApiKeySettings

from .dataset import default_data_home
from .scenarios import SCENARIO_CHOICES, DriftSettings, Schedule, ScheduleError, resolve_schedule

if TYPE_CHECKING:  # locust is imported by the locustfile that calls us, not at import time
    from locust.argument_parser import LocustArgumentParser

__all__ = ["DEFAULT_REPORT_DIR", "RunConfig", "add_arguments", "run_config"]

#: Where headless runs write ``locust_stats.csv`` & co. and ``locust.html`` unless told otherwise.
DEFAULT_REPORT_DIR = Path(__file__).resolve().parents[2] / "reports"
#: File-name prefix of the CSV reports inside a report directory (``<prefix>_stats.csv``).
CSV_PREFIX = "locust"
HTML_NAME = "locust.html"
SCHEDULE_LOG_NAME = "schedule.jsonl"


@dataclass(frozen=True)
class RunConfig:
    """Everything a user needs to decide its requests, validated once per test start."""

    schedule: Schedule
    drift: DriftSettings
    feedback_share: float
    feedback_delay_s: float
    bad_share: float
    wait_min_s: float
    wait_max_s: float
    seed: int
    schedule_log: str
    #: Sent as X-API-Key with every POST /feedback (a label producer's key).
    feedback_api_key: str


def add_arguments(parser: LocustArgumentParser) -> None:
    """Register the options on locust's parser (``init_command_line_parser`` listener)."""
    # On the parser itself, not an argument group: only LocustArgumentParser.add_argument
    # understands include_in_web_ui, and the web UI lists the parser's own actions.
    g = parser
    g.add_argument(
        "--scenario",
        default="steady",
        choices=list(SCENARIO_CHOICES),
        help="Scenario for the whole run (ignored when --schedule is given).",
    )
    g.add_argument(
        "--schedule",
        default="",
        help="Scenario switches over time, e.g. 'steady:30,sudden+concept:0' "
        "(scenario[+scenario][:duration] segments; the last holds until the end).",
    )
    g.add_argument(
        "--drift-share",
        type=float,
        default=DriftSettings.drift_share,
        help="Share of /predict requests whose features drift in sudden/gradual (0-1).",
    )
    g.add_argument(
        "--income-factor",
        type=float,
        default=DriftSettings.income_factor,
        help="median_income_in_block multiplier at full drift.",
    )
    g.add_argument(
        "--latitude-shift",
        type=float,
        default=DriftSettings.latitude_shift,
        help="Degrees added to block_latitude at full drift (clipped into the contract bounds).",
    )
    g.add_argument(
        "--ramp-minutes",
        type=float,
        default=DriftSettings.ramp_minutes,
        help="Minutes for gradual drift to reach full strength.",
    )
    g.add_argument(
        "--concept-factor",
        type=float,
        default=DriftSettings.concept_factor,
        help="Multiplier of the true value sent as feedback during concept drift.",
    )
    g.add_argument(
        "--feedback-share",
        type=float,
        default=0.5,
        help="Share of successful predictions that later get POST /feedback (0-1).",
    )
    g.add_argument(
        "--feedback-delay",
        type=float,
        default=2.0,
        help="Seconds between a prediction and its feedback.",
    )
    g.add_argument(
        "--bad-share",
        type=float,
        default=0.02,
        help="Share of requests that are invalid on purpose (a 422 counts as success).",
    )
    g.add_argument(
        "--wait-min", type=float, default=0.05, help="Minimum think time per user, seconds."
    )
    g.add_argument(
        "--wait-max", type=float, default=0.2, help="Maximum think time per user, seconds."
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Random seed for row sampling and drift choices (0: a different run each time).",
    )
    g.add_argument(
        "--data-home",
        default=str(default_data_home() or ""),
        include_in_web_ui=False,
        help="scikit-learn data directory holding the California housing cache (default: "
        "$SCIKIT_LEARN_DATA, else ../shared/data/scikit_learn_data). Nothing is downloaded.",
    )
    g.add_argument(
        "--feedback-api-key",
        default="",
        include_in_web_ui=False,
        help="X-API-Key sent with POST /feedback (default: the first of "
        "DRIFTLOOP_MODEL_API_FEEDBACK_API_KEYS, the variable the replicas read; else the local "
        "default). Prefer the variable: a command-line value shows in the process list.",
    )
    g.add_argument(
        "--schedule-log",
        default="",
        include_in_web_ui=False,
        help="Append one JSON line per scenario switch to this file (wall time, segment).",
    )


def _share(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--{name} must be within [0, 1], got {value}")
    return value


def run_config(options: Namespace) -> RunConfig:
    """Validate parsed options (CLI or web UI) into a :class:`RunConfig`.

    Raises :class:`ValueError` (or :class:`ScheduleError`) with a message naming the option.
    """
    try:
        schedule = resolve_schedule(scenario=options.scenario, schedule=options.schedule)
    except ScheduleError as exc:
        flag = "--schedule" if (options.schedule or "").strip() else "--scenario"
        raise ScheduleError(f"{flag}: {exc}") from None
    try:
        drift = DriftSettings(
            drift_share=options.drift_share,
            income_factor=options.income_factor,
            latitude_shift=options.latitude_shift,
            ramp_minutes=options.ramp_minutes,
            concept_factor=options.concept_factor,
        )
    except ValueError as exc:
        raise ValueError(f"--{str(exc).replace('_', '-')}") from None
    if options.feedback_delay < 0:
        raise ValueError(f"--feedback-delay must be >= 0, got {options.feedback_delay}")
    if not 0.0 <= options.wait_min <= options.wait_max:
        raise ValueError(
            f"--wait-min/--wait-max need 0 <= min <= max, got {options.wait_min}, "
            f"{options.wait_max}"
        )
    return RunConfig(
        schedule=schedule,
        drift=drift,
        feedback_share=_share("feedback-share", options.feedback_share),
        feedback_delay_s=options.feedback_delay,
        bad_share=_share("bad-share", options.bad_share),
        wait_min_s=options.wait_min,
        wait_max_s=options.wait_max,
        seed=options.seed,
        schedule_log=options.schedule_log or "",
        feedback_api_key=getattr(options, "feedback_api_key", "")
        or FeedbackApiKeySettings().producer_key,
    )
