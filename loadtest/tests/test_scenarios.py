"""Scenario logic: schedules parse and switch on time, drift is applied as specified and stays
inside the contract's bounds, concept drift only touches the truth, bad bodies are invalid."""

from __future__ import annotations

import json
import math
import random

import pytest
from pydantic import ValidationError

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEATURE_BY_NAME,
    FEATURE_NAMES,
    FEATURE_SPECS,
    TARGET_SCALE_USD,
    HouseFeatures,
)
from driftloop_loadtest.scenarios import (
    BAD_FEEDBACK_CASES,
    BAD_PREDICT_CASES,
    FEEDBACK_ROUTE,
    INCOME_FEATURE,
    LATITUDE_FEATURE,
    PREDICT_ROUTE,
    DriftSettings,
    Scenario,
    Schedule,
    ScheduleError,
    apply_covariate_drift,
    bad_feedback,
    bad_predict,
    bad_request,
    clip_to_bounds,
    drift_intensity,
    parse_duration,
    parse_schedule,
    plan_prediction,
    resolve_schedule,
    true_value_usd,
)

SETTINGS = DriftSettings()


def random_row(rng: random.Random) -> dict[str, float]:
    """A row anywhere inside the contract's bounds (edges included)."""
    row = {}
    for spec in FEATURE_SPECS:
        pick = rng.random()
        if pick < 0.1:
            row[spec.name] = spec.ge
        elif pick < 0.2:
            row[spec.name] = spec.le
        else:
            row[spec.name] = rng.uniform(spec.ge, spec.le)
    return row


# --------------------------------------------------------------------------- schedule parsing


def test_parse_schedule_reads_segments_durations_and_until_the_end() -> None:
    schedule = parse_schedule("steady:30,sudden+concept:0")
    assert [s.label for s in schedule.segments] == ["steady", "sudden+concept"]
    assert schedule.segments[0].duration_s == 30.0
    assert schedule.segments[1].duration_s is None
    assert schedule.segments[1].scenarios == {Scenario.SUDDEN, Scenario.CONCEPT}
    assert schedule.starts_s == (0.0, 30.0)


def test_the_last_segment_may_omit_its_duration() -> None:
    assert parse_schedule("steady:10,gradual").segments[1].duration_s is None
    assert parse_schedule("sudden").segments[0].duration_s is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("2m", 120.0), ("1.5m", 90.0), ("1h", 3600.0), (" 45 S ", 45.0)],
)
def test_parse_duration_accepts_seconds_and_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5", "5x", "1m30s", "s"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(ScheduleError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty schedule"),
        ("   ", "empty schedule"),
        ("steady:30,,sudden", "segment 2: empty"),
        ("steady:30,", "segment 2: empty"),
        ("steady:30,drifty", "segment 2 'drifty': unknown scenario 'drifty'"),
        ("steady+sudden:10,concept", "steady means no drift"),
        ("sudden+gradual", "both covariate drift"),
        ("concept+concept", "repeated"),
        ("sudden+", "empty scenario name"),
        ("steady:0,sudden", "segment 1 'steady': only the last segment may run until the end"),
        ("steady,sudden", "segment 1 'steady': only the last segment"),
        ("steady:ten,sudden", "segment 1 'steady:ten': duration 'ten'"),
    ],
)
def test_parse_schedule_names_the_broken_segment(spec: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(spec)
    assert message in str(info.value)


def test_scenario_names_are_case_and_space_insensitive_and_labels_canonical() -> None:
    schedule = parse_schedule(" Steady : 5 , CONCEPT + sudden ")
    assert [s.label for s in schedule.segments] == ["steady", "sudden+concept"]
    assert str(schedule) == "steady:5,sudden+concept"


def test_str_round_trips() -> None:
    for spec in ["steady:30,sudden+concept", "steady:1.5,gradual:600,steady", "concept"]:
        assert str(parse_schedule(str(parse_schedule(spec)))) == str(parse_schedule(spec))


def test_resolve_schedule_prefers_the_schedule_over_the_scenario() -> None:
    assert str(resolve_schedule(scenario="concept", schedule="")) == "concept"
    assert str(resolve_schedule(scenario="concept", schedule="  ")) == "concept"
    assert str(resolve_schedule(scenario="concept", schedule="steady:3,sudden")) == (
        "steady:3,sudden"
    )
    assert str(resolve_schedule(scenario="", schedule="")) == "steady"


# --------------------------------------------------------------------------- switching in time


def test_phase_at_switches_exactly_at_each_boundary_and_the_last_holds() -> None:
    schedule = parse_schedule("steady:30,sudden:1m,steady:10")
    at = lambda t: schedule.phase_at(t).segment.label  # noqa: E731
    assert at(0.0) == "steady"
    assert at(29.999) == "steady"
    assert at(30.0) == "sudden"
    assert at(89.999) == "sudden"
    assert at(90.0) == "steady"
    assert at(10_000.0) == "steady"  # the last segment holds whatever its duration
    assert schedule.phase_at(45.0).index == 1
    assert schedule.phase_at(45.0).started_s == 30.0


def test_switches_lists_every_segment_start() -> None:
    schedule = parse_schedule("steady:30,sudden+concept")
    assert [(t, seg.label) for t, seg in schedule.switches()] == [
        (0.0, "steady"),
        (30.0, "sudden+concept"),
    ]


def test_gradual_ramp_starts_when_gradual_first_becomes_active() -> None:
    schedule = parse_schedule("steady:10,gradual:20,gradual+concept:30,steady:5,gradual")
    assert schedule.phase_at(5).ramp_started_s is None
    assert schedule.phase_at(15).ramp_started_s == 10.0
    assert schedule.phase_at(45).ramp_started_s == 10.0  # adding concept does not restart it
    assert schedule.phase_at(100).ramp_started_s == 65.0  # after a break it ramps again


def test_single_segment_schedule() -> None:
    schedule = Schedule.single("gradual+concept")
    assert schedule.phase_at(1e9).segment.label == "gradual+concept"
    with pytest.raises(ScheduleError):
        Schedule.single("nope")


# --------------------------------------------------------------------------- drift


def test_drift_intensity_is_full_in_sudden_zero_without_covariate_drift() -> None:
    for spec, expected in [("steady", 0.0), ("concept", 0.0), ("sudden", 1.0)]:
        phase = parse_schedule(spec).phase_at(100.0)
        assert drift_intensity(phase, 100.0, SETTINGS) == expected


def test_gradual_intensity_ramps_linearly_over_ramp_minutes() -> None:
    settings = DriftSettings(ramp_minutes=2.0)
    schedule = parse_schedule("steady:60,gradual")

    def intensity(t: float) -> float:
        return drift_intensity(schedule.phase_at(t), t, settings)

    assert intensity(30.0) == 0.0
    assert intensity(60.0) == 0.0
    assert intensity(90.0) == pytest.approx(0.25)
    assert intensity(120.0) == pytest.approx(0.5)
    assert intensity(180.0) == 1.0
    assert intensity(10_000.0) == 1.0
    zero_ramp = DriftSettings(ramp_minutes=0.0)
    assert drift_intensity(schedule.phase_at(60.0), 60.0, zero_ramp) == 1.0


def test_covariate_drift_scales_income_and_shifts_latitude_only() -> None:
    row = dict(EXAMPLE_FEATURES)
    row[LATITUDE_FEATURE] = 34.0
    drifted = apply_covariate_drift(row, 1.0, SETTINGS)
    assert drifted[INCOME_FEATURE] == pytest.approx(row[INCOME_FEATURE] * 1.5)
    assert drifted[LATITUDE_FEATURE] == pytest.approx(34.0 + SETTINGS.latitude_shift)
    for name in FEATURE_NAMES:
        if name not in (INCOME_FEATURE, LATITUDE_FEATURE):
            assert drifted[name] == row[name]
    assert row[LATITUDE_FEATURE] == 34.0, "the input row must not be changed"


def test_partial_intensity_interpolates_both_changes() -> None:
    row = {**EXAMPLE_FEATURES, LATITUDE_FEATURE: 34.0}
    half = apply_covariate_drift(row, 0.5, DriftSettings(income_factor=1.5, latitude_shift=2.0))
    assert half[INCOME_FEATURE] == pytest.approx(row[INCOME_FEATURE] * 1.25)
    assert half[LATITUDE_FEATURE] == pytest.approx(35.0)
    assert apply_covariate_drift(row, 0.0, SETTINGS) == row


def test_drift_is_clipped_into_the_contract_bounds() -> None:
    lat = FEATURE_BY_NAME[LATITUDE_FEATURE]
    income = FEATURE_BY_NAME[INCOME_FEATURE]
    north = {**EXAMPLE_FEATURES, LATITUDE_FEATURE: 41.95, INCOME_FEATURE: 90.0}
    drifted = apply_covariate_drift(north, 1.0, SETTINGS)
    assert drifted[LATITUDE_FEATURE] == lat.le
    assert drifted[INCOME_FEATURE] == income.le
    south = apply_covariate_drift(
        {**EXAMPLE_FEATURES, LATITUDE_FEATURE: 32.6}, 1.0, DriftSettings(latitude_shift=-5.0)
    )
    assert south[LATITUDE_FEATURE] == lat.ge
    assert clip_to_bounds(LATITUDE_FEATURE, 100.0) == lat.le


@pytest.mark.parametrize("seed", range(5))
def test_drifted_rows_always_pass_the_api_contract(seed: int) -> None:
    rng = random.Random(seed)
    settings = DriftSettings(
        income_factor=rng.uniform(0.1, 10.0), latitude_shift=rng.uniform(-20.0, 20.0)
    )
    for _ in range(300):
        drifted = apply_covariate_drift(random_row(rng), rng.random(), settings)
        for spec in FEATURE_SPECS:
            assert spec.ge <= drifted[spec.name] <= spec.le, spec.name
        HouseFeatures.model_validate_json(json.dumps(drifted))  # what the API will accept


def test_true_value_is_usd_and_concept_multiplies_it() -> None:
    assert true_value_usd(2.5, concept=False, settings=SETTINGS) == 2.5 * TARGET_SCALE_USD
    assert true_value_usd(2.5, concept=True, settings=SETTINGS) == pytest.approx(
        2.5 * TARGET_SCALE_USD * 1.3
    )


def test_drift_settings_refuse_impossible_values() -> None:
    for kwargs in (
        {"drift_share": 1.5},
        {"drift_share": -0.1},
        {"income_factor": 0.0},
        {"ramp_minutes": -1.0},
        {"concept_factor": 0.0},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            DriftSettings(**kwargs)


# --------------------------------------------------------------------------- planning requests


def plan_many(spec: str, t: float, settings: DriftSettings, n: int = 4000, seed: int = 7):
    rng = random.Random(seed)
    phase = parse_schedule(spec).phase_at(t)
    row = {**EXAMPLE_FEATURES, LATITUDE_FEATURE: 34.0}
    return row, [plan_prediction(rng, row, 2.0, phase, t, settings) for _ in range(n)]


def test_steady_sends_rows_unchanged_with_the_true_value() -> None:
    row, plans = plan_many("steady", 5.0, SETTINGS, n=200)
    assert all(not p.drifted and p.features == row for p in plans)
    assert all(p.actual_usd == 2.0 * TARGET_SCALE_USD for p in plans)


def test_sudden_drifts_the_configured_share_of_requests() -> None:
    row, plans = plan_many("sudden", 5.0, DriftSettings(drift_share=0.3))
    drifted = [p for p in plans if p.drifted]
    assert abs(len(drifted) / len(plans) - 0.3) < 0.03
    for p in drifted:
        assert p.features[INCOME_FEATURE] == pytest.approx(row[INCOME_FEATURE] * 1.5)
        assert p.features[LATITUDE_FEATURE] == pytest.approx(36.0)
    assert all(p.features == row for p in plans if not p.drifted)
    # covariate drift alone leaves the truth alone
    assert all(p.actual_usd == 2.0 * TARGET_SCALE_USD for p in plans)


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (1.0, 4000)])
def test_drift_share_edges(share: float, expected: int) -> None:
    _, plans = plan_many("sudden", 5.0, DriftSettings(drift_share=share))
    assert sum(p.drifted for p in plans) == expected


def test_concept_changes_only_the_truth() -> None:
    row, plans = plan_many("concept", 5.0, SETTINGS, n=200)
    assert all(not p.drifted and p.features == row for p in plans)
    assert all(p.actual_usd == pytest.approx(2.0 * TARGET_SCALE_USD * 1.3) for p in plans)


def test_sudden_plus_concept_does_both() -> None:
    _, plans = plan_many("steady:10,sudden+concept", 11.0, DriftSettings(drift_share=1.0), n=50)
    assert all(p.drifted for p in plans)
    assert all(p.actual_usd == pytest.approx(2.0 * TARGET_SCALE_USD * 1.3) for p in plans)


def test_gradual_drift_grows_with_time() -> None:
    settings = DriftSettings(drift_share=1.0, ramp_minutes=1.0)
    row, early = plan_many("gradual", 15.0, settings, n=10)
    _, late = plan_many("gradual", 120.0, settings, n=10)
    assert early[0].features[INCOME_FEATURE] == pytest.approx(row[INCOME_FEATURE] * 1.125)
    assert late[0].features[INCOME_FEATURE] == pytest.approx(row[INCOME_FEATURE] * 1.5)


def test_plan_is_deterministic_for_a_seed() -> None:
    _, a = plan_many("sudden+concept", 1.0, SETTINGS, n=100, seed=3)
    _, b = plan_many("sudden+concept", 1.0, SETTINGS, n=100, seed=3)
    assert a == b


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("case", BAD_PREDICT_CASES)
def test_every_bad_predict_body_breaks_the_feature_contract(case: str) -> None:
    rng = random.Random(case)
    for _ in range(20):
        bad = bad_predict(rng, EXAMPLE_FEATURES, case)
        assert bad.route == PREDICT_ROUTE and bad.case == case
        with pytest.raises(ValidationError) as info:
            HouseFeatures.model_validate_json(bad.body or b"null")
        if bad.field in FEATURE_NAMES:
            assert any(bad.field in err["loc"] for err in info.value.errors())


@pytest.mark.parametrize("case", BAD_FEEDBACK_CASES)
def test_every_bad_feedback_body_breaks_the_feedback_schema(case: str) -> None:
    schemas = pytest.importorskip("driftloop_model_api.schemas")
    bad = bad_feedback(case)
    assert bad.route == FEEDBACK_ROUTE
    with pytest.raises(ValidationError) as info:
        schemas.FeedbackRequest.model_validate_json(bad.body)
    assert any(bad.field in err["loc"] for err in info.value.errors())


def test_nan_and_infinity_cases_send_json_literals() -> None:
    rng = random.Random(1)
    assert b"NaN" in bad_predict(rng, EXAMPLE_FEATURES, "nan").body
    assert b"Infinity" in bad_predict(rng, EXAMPLE_FEATURES, "infinity").body


def test_unknown_bad_cases_are_refused() -> None:
    with pytest.raises(ValueError):
        bad_predict(random.Random(0), EXAMPLE_FEATURES, "nope")
    with pytest.raises(ValueError):
        bad_feedback("nope")


def test_bad_request_mix_covers_both_routes_and_every_case() -> None:
    rng = random.Random(11)
    made = [bad_request(rng, EXAMPLE_FEATURES) for _ in range(3000)]
    predict_share = sum(b.route == PREDICT_ROUTE for b in made) / len(made)
    assert math.isclose(predict_share, 0.75, abs_tol=0.04)
    assert {b.case for b in made} == set(BAD_PREDICT_CASES) | set(BAD_FEEDBACK_CASES)
