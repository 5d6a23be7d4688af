"""The load test's options: registered on locust's real parser, shown in the web UI with
types the UI can convert, and validated with messages that name the option."""

from __future__ import annotations

import argparse

import pytest
from locust.argument_parser import (
    LocustArgumentParser,
    get_empty_argument_parser,
    setup_parser_arguments,
)

from driftloop_loadtest.options import add_arguments, run_config
from driftloop_loadtest.scenarios import ScheduleError


def parser() -> LocustArgumentParser:
    p = get_empty_argument_parser(add_help=False, default_config_files=[])
    setup_parser_arguments(p)
    add_arguments(p)
    return p


def parse(*args: str) -> argparse.Namespace:
    return parser().parse_args(["-f", "loadtest/locustfile.py", *args])


def test_defaults_make_a_valid_steady_run() -> None:
    cfg = run_config(parse())
    assert str(cfg.schedule) == "steady"
    assert cfg.feedback_share == 0.5
    assert cfg.bad_share == 0.02
    assert cfg.drift.income_factor == 1.5
    assert cfg.drift.concept_factor == 1.3


def test_flags_reach_the_config() -> None:
    cfg = run_config(
        parse(
            "--schedule", "steady:30,sudden+concept:0",
            "--drift-share", "0.8",
            "--income-factor", "2",
            "--latitude-shift", "-1.5",
            "--ramp-minutes", "3",
            "--concept-factor", "1.1",
            "--feedback-share", "0.25",
            "--feedback-delay", "4",
            "--bad-share", "0",
            "--wait-min", "0",
            "--wait-max", "0.5",
            "--seed", "42",
            "--schedule-log", "/tmp/x.jsonl",
        )
    )  # fmt: skip
    assert str(cfg.schedule) == "steady:30,sudden+concept"
    assert (cfg.drift.drift_share, cfg.drift.income_factor, cfg.drift.latitude_shift) == (
        0.8,
        2.0,
        -1.5,
    )
    assert (cfg.drift.ramp_minutes, cfg.drift.concept_factor) == (3.0, 1.1)
    assert (cfg.feedback_share, cfg.feedback_delay_s, cfg.bad_share) == (0.25, 4.0, 0.0)
    assert (cfg.wait_min_s, cfg.wait_max_s, cfg.seed) == (0.0, 0.5, 42)
    assert cfg.schedule_log == "/tmp/x.jsonl"


def test_scenario_is_used_when_no_schedule_is_given() -> None:
    assert str(run_config(parse("--scenario", "gradual+concept")).schedule) == "gradual+concept"
    with pytest.raises(SystemExit):  # argparse refuses a scenario outside the choices
        parse("--scenario", "sideways")


def test_web_ui_shows_the_scenario_options_with_convertible_defaults() -> None:
    p = parser()
    shown = p.args_included_in_web_ui
    for dest in (
        "scenario",
        "schedule",
        "drift_share",
        "feedback_share",
        "bad_share",
        "concept_factor",
        "ramp_minutes",
        "feedback_delay",
    ):
        assert dest in shown, dest
    assert "data_home" not in shown and "schedule_log" not in shown
    assert shown["scenario"].choices
    # The UI converts a submitted value with type(default)(value): floats need float defaults.
    for dest in (
        "drift_share",
        "income_factor",
        "latitude_shift",
        "ramp_minutes",
        "concept_factor",
        "feedback_share",
        "feedback_delay",
        "bad_share",
        "wait_min",
        "wait_max",
    ):
        assert isinstance(shown[dest].default, float), dest
        assert type(shown[dest].default)("0.5") == 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--schedule", "steady:30,nope"), "--schedule: segment 2 'nope'"),
        (("--feedback-share", "1.5"), "--feedback-share must be within [0, 1]"),
        (("--bad-share", "-0.1"), "--bad-share must be within [0, 1]"),
        (("--drift-share", "2"), "--drift-share must be within [0, 1]"),
        (("--income-factor", "0"), "--income-factor must be > 0"),
        (("--feedback-delay", "-1"), "--feedback-delay must be >= 0"),
        (("--wait-min", "1", "--wait-max", "0.5"), "--wait-min/--wait-max"),
    ],
)
def test_bad_values_fail_naming_the_option(args: tuple[str, ...], message: str) -> None:
    with pytest.raises((ValueError, ScheduleError)) as info:
        run_config(parse(*args))
    assert message in str(info.value)
