"""The command line `driftloop demo` runs: right flags, parseable by locust with our options,
reports where the caller expects them, and a bad schedule caught before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from locust.argument_parser import get_empty_argument_parser, setup_parser_arguments

from driftloop_loadtest.command import LOCUSTFILE, locust_command, report_paths
from driftloop_loadtest.options import add_arguments, run_config
from driftloop_loadtest.scenarios import ScheduleError


def build(tmp_path: Path, **overrides: Any) -> list[str]:
    """``locust_command`` with test defaults; ``overrides`` (any of its keywords, some of them
    deliberately invalid) replace them."""
    kwargs: dict[str, Any] = {
        "host": "http://127.0.0.1:18000",
        "users": 8,
        "spawn_rate": 8.0,
        "run_time_s": 900,
        "schedule": "steady:30,sudden+concept:0",
        "report_dir": tmp_path / "demo",
        "python": "/venv/bin/python",
    }
    kwargs.update(overrides)
    return locust_command(**kwargs)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_command_runs_the_locustfile_headless_against_the_host(tmp_path: Path) -> None:
    argv = build(tmp_path)
    assert argv[:3] == ["/venv/bin/python", "-m", "locust"]
    assert flag(argv, "-f") == str(LOCUSTFILE) and LOCUSTFILE.is_file()
    assert "--headless" in argv
    assert flag(argv, "--host") == "http://127.0.0.1:18000"
    assert flag(argv, "--users") == "8"
    assert flag(argv, "--spawn-rate") == "8"
    assert flag(argv, "--run-time") == "900s"
    assert flag(argv, "--schedule") == "steady:30,sudden+concept:0"


def test_reports_land_in_the_report_dir(tmp_path: Path) -> None:
    argv = build(tmp_path)
    paths = report_paths(tmp_path / "demo")
    assert flag(argv, "--csv") == str(tmp_path / "demo" / "locust")
    assert paths.stats_csv == tmp_path / "demo" / "locust_stats.csv"  # what the demo reads
    assert flag(argv, "--html") == str(paths.html)
    assert flag(argv, "--schedule-log") == str(paths.schedule_log)


def test_unset_options_keep_locustfile_defaults_and_set_ones_are_passed(tmp_path: Path) -> None:
    plain = build(tmp_path)
    for name in ("--feedback-share", "--feedback-delay", "--bad-share", "--seed"):
        assert name not in plain
    argv = build(
        tmp_path,
        feedback_share=0.5,
        feedback_delay_s=2.0,
        bad_share=0.1,
        seed=7,
        drift_share=0.9,
        concept_factor=1.3,
        ramp_minutes=2.0,
        extra_args=["-L", "DEBUG"],
    )
    assert flag(argv, "--feedback-share") == "0.5"
    assert flag(argv, "--feedback-delay") == "2"
    assert flag(argv, "--bad-share") == "0.1"
    assert flag(argv, "--seed") == "7"
    assert argv[-2:] == ["-L", "DEBUG"]


def test_locust_parses_the_command_with_our_options(tmp_path: Path) -> None:
    argv = build(
        tmp_path,
        feedback_share=0.25,
        feedback_delay_s=1.5,
        bad_share=0.05,
        seed=3,
        data_home=tmp_path / "data",
    )
    parser = get_empty_argument_parser(add_help=False, default_config_files=[])
    setup_parser_arguments(parser)
    add_arguments(parser)
    options = parser.parse_args(argv[3:])
    assert options.headless and options.host == "http://127.0.0.1:18000"
    assert options.num_users == 8 and options.run_time == 900
    assert options.data_home == str(tmp_path / "data")
    cfg = run_config(options)
    assert str(cfg.schedule) == "steady:30,sudden+concept"
    assert (cfg.feedback_share, cfg.feedback_delay_s, cfg.bad_share, cfg.seed) == (
        0.25,
        1.5,
        0.05,
        3,
    )


def test_data_home_defaults_to_scikit_learn_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sk"))
    assert flag(build(tmp_path), "--data-home") == str(tmp_path / "sk")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"schedule": "steady:30,sideways"}, ScheduleError),
        ({"users": 0}, ValueError),
        ({"spawn_rate": 0}, ValueError),
        ({"run_time_s": 0}, ValueError),
    ],
)
def test_bad_arguments_fail_before_any_process_starts(
    tmp_path: Path, overrides: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        build(tmp_path, **overrides)
