"""Build the headless locust command line, for callers that run locust as a subprocess.

``driftloop demo`` and the integration test use it, so the option names live here and in
:mod:`options` only::

    from driftloop_loadtest.command import locust_command, report_paths
    argv = locust_command(host=nginx_url, users=8, spawn_rate=8, run_time_s=300,
                          schedule="steady:30,sudden+concept", report_dir=Path("out"))
    subprocess.run(argv, check=False)
    report_paths(Path("out")).stats_csv   # out/locust_stats.csv

Locust writes its CSV files while running (every second) and its HTML report when it stops,
including on SIGINT/SIGTERM, so a caller may stop it early and still read the reports.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .dataset import default_data_home
from .options import CSV_PREFIX, HTML_NAME, SCHEDULE_LOG_NAME
from .scenarios import parse_schedule

__all__ = ["LOCUSTFILE", "ReportPaths", "locust_command", "report_paths"]

#: The package's locustfile (locust loads it by path; it imports this package normally).
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
#: Seconds users get to finish their current request when --run-time ends.
STOP_TIMEOUT_S = 5


@dataclass(frozen=True)
class ReportPaths:
    """Files a headless run leaves in its report directory."""

    directory: Path
    csv_prefix: Path
    stats_csv: Path
    failures_csv: Path
    exceptions_csv: Path
    html: Path
    schedule_log: Path


def report_paths(report_dir: Path) -> ReportPaths:
    prefix = report_dir / CSV_PREFIX
    return ReportPaths(
        directory=report_dir,
        csv_prefix=prefix,
        stats_csv=Path(f"{prefix}_stats.csv"),
        failures_csv=Path(f"{prefix}_failures.csv"),
        exceptions_csv=Path(f"{prefix}_exceptions.csv"),
        html=report_dir / HTML_NAME,
        schedule_log=report_dir / SCHEDULE_LOG_NAME,
    )


def _num(value: float) -> str:
    return f"{value:g}"


def locust_command(
    *,
    host: str,
    users: int,
    spawn_rate: float,
    run_time_s: int,
    schedule: str,
    report_dir: Path,
    feedback_share: float | None = None,
    feedback_delay_s: float | None = None,
    bad_share: float | None = None,
    drift_share: float | None = None,
    concept_factor: float | None = None,
    ramp_minutes: float | None = None,
    seed: int | None = None,
    data_home: Path | None = None,
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv for a headless locust run against ``host`` (the stack's nginx URL, never a replica).

    Parameters left ``None`` keep the locustfile's defaults (see loadtest/README.md).
    ``schedule`` is validated here, so a typo fails before any process starts. Reports go to
    :func:`report_paths` ``(report_dir)``; ``schedule.jsonl`` there records when each scenario
    actually started (wall clock), which is the true drift onset.

    Raises :class:`ValueError` naming the bad argument.
    """
    parse_schedule(schedule)
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    if spawn_rate <= 0:
        raise ValueError(f"spawn_rate must be > 0, got {spawn_rate}")
    if int(run_time_s) < 1:
        raise ValueError(f"run_time_s must be a whole number of seconds >= 1, got {run_time_s}")
    paths = report_paths(Path(report_dir))
    argv = [
        python, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host", host,
        "--users", str(users),
        "--spawn-rate", _num(spawn_rate),
        "--run-time", f"{int(run_time_s)}s",
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--csv", str(paths.csv_prefix),
        "--html", str(paths.html),
        "--schedule", schedule,
        "--schedule-log", str(paths.schedule_log),
    ]  # fmt: skip
    optional: list[tuple[str, float | int | None]] = [
        ("--feedback-share", feedback_share),
        ("--feedback-delay", feedback_delay_s),
        ("--bad-share", bad_share),
        ("--drift-share", drift_share),
        ("--concept-factor", concept_factor),
        ("--ramp-minutes", ramp_minutes),
        ("--seed", seed),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, _num(value)]
    home = data_home if data_home is not None else default_data_home()
    if home is not None:
        argv += ["--data-home", str(home)]
    argv += list(extra_args)
    return argv
