"""Traffic scenarios as pure functions: what to send, and what the truth is, at a given time.

The locustfile only does I/O; everything that decides a request lives here so it can be
unit-tested without a server (``uv run pytest loadtest/tests``):

- :func:`parse_schedule` turns ``"steady:30,sudden+concept"`` into a :class:`Schedule`;
  :meth:`Schedule.phase_at` says which scenarios are active ``t`` seconds into the run.
- :func:`plan_prediction` turns one sampled data row into the features to send and the true
  value (USD) its feedback will carry, given the active :class:`Phase`.
- :func:`bad_request` builds an invalid body the API must refuse with a 422.

Scenarios:

``steady``   rows as sampled, truth as in the data.
``sudden``   covariate drift at full strength for ``drift_share`` of requests:
             ``median_income_in_block`` * ``income_factor`` and ``block_latitude`` +
             ``latitude_shift``, clipped into the contract bounds.
``gradual``  the same drift, its strength ramping linearly from 0 to full over
             ``ramp_minutes`` from the moment gradual drift first became active.
``concept``  features unchanged; the true value in feedback * ``concept_factor``.

Covariate-drifted rows keep their original target in feedback: the house did not change, the
reported features did (as with a units or geocoding bug upstream), so the served model's
online error rises too and a model retrained on the labelled rows learns the new mapping.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from driftloop_contracts import FEATURE_BY_NAME, TARGET_SCALE_USD

__all__ = [
    "BAD_FEEDBACK_CASES",
    "BAD_PREDICT_CASES",
    "COVARIATE_DRIFT",
    "FEEDBACK_ROUTE",
    "INCOME_FEATURE",
    "LATITUDE_FEATURE",
    "PREDICT_ROUTE",
    "SCENARIO_CHOICES",
    "BadRequest",
    "DriftSettings",
    "Phase",
    "PlannedPrediction",
    "Scenario",
    "Schedule",
    "ScheduleError",
    "Segment",
    "apply_covariate_drift",
    "bad_feedback",
    "bad_predict",
    "bad_request",
    "clip_to_bounds",
    "drift_intensity",
    "parse_duration",
    "parse_scenarios",
    "parse_schedule",
    "plan_prediction",
    "resolve_schedule",
    "true_value_usd",
]

PREDICT_ROUTE = "/predict"
FEEDBACK_ROUTE = "/feedback"

#: The two features the covariate scenarios move (looked up in the contract, never retyped).
INCOME_FEATURE = FEATURE_BY_NAME["median_income_in_block"].name
LATITUDE_FEATURE = FEATURE_BY_NAME["block_latitude"].name


class Scenario(StrEnum):
    """One kind of traffic; a schedule segment is a set of these."""

    STEADY = "steady"
    SUDDEN = "sudden"
    GRADUAL = "gradual"
    CONCEPT = "concept"


#: Scenarios that move the features (at most one per segment).
COVARIATE_DRIFT: frozenset[Scenario] = frozenset({Scenario.SUDDEN, Scenario.GRADUAL})

#: Every valid segment, as offered by ``--scenario`` (and the web UI's drop-down).
SCENARIO_CHOICES: tuple[str, ...] = (
    "steady",
    "sudden",
    "gradual",
    "concept",
    "sudden+concept",
    "gradual+concept",
)


class ScheduleError(ValueError):
    """A schedule or scenario spec that cannot be run; the message names the part and the rule."""


@dataclass(frozen=True)
class DriftSettings:
    """How strong each scenario is; every field is a locust option (see README.md)."""

    drift_share: float = 0.5
    income_factor: float = 1.5
    latitude_shift: float = 2.0
    ramp_minutes: float = 5.0
    concept_factor: float = 1.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be within [0, 1], got {self.drift_share}")
        if self.income_factor <= 0.0:
            raise ValueError(f"income_factor must be > 0, got {self.income_factor}")
        if self.ramp_minutes < 0.0:
            raise ValueError(f"ramp_minutes must be >= 0, got {self.ramp_minutes}")
        if self.concept_factor <= 0.0:
            raise ValueError(f"concept_factor must be > 0, got {self.concept_factor}")


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Segment:
    """A set of scenarios run together for ``duration_s`` seconds (``None``: until the end)."""

    scenarios: frozenset[Scenario]
    duration_s: float | None

    @property
    def label(self) -> str:
        """Canonical name, e.g. ``sudden+concept`` (covariate drift first)."""
        order = list(Scenario)
        return "+".join(s.value for s in sorted(self.scenarios, key=order.index))

    @property
    def covariate(self) -> Scenario | None:
        return next(iter(self.scenarios & COVARIATE_DRIFT), None)

    @property
    def concept(self) -> bool:
        return Scenario.CONCEPT in self.scenarios


@dataclass(frozen=True)
class Phase:
    """What is active at one moment of the run."""

    index: int
    segment: Segment
    started_s: float
    #: When the current unbroken run of ``gradual`` segments began (``None`` if not gradual).
    ramp_started_s: float | None = None


@dataclass(frozen=True)
class Schedule:
    """Segments run back to back from the start of the test; the last one holds until the end."""

    segments: tuple[Segment, ...]
    starts_s: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ScheduleError("a schedule needs at least one segment")
        starts: list[float] = []
        t = 0.0
        for i, seg in enumerate(self.segments):
            last = i == len(self.segments) - 1
            if not last and (seg.duration_s is None or seg.duration_s <= 0):
                raise ScheduleError(
                    f"segment {i + 1} {seg.label!r}: only the last segment may run until the "
                    "end (give it a duration > 0)"
                )
            starts.append(t)
            t += seg.duration_s or 0.0
        object.__setattr__(self, "starts_s", tuple(starts))

    @classmethod
    def single(cls, spec: str) -> Schedule:
        """One segment for the whole run, e.g. ``Schedule.single("sudden+concept")``."""
        return cls((Segment(parse_scenarios(spec, 1), None),))

    def phase_at(self, elapsed_s: float) -> Phase:
        """The segment active ``elapsed_s`` seconds after the test started."""
        index = 0
        for i, start in enumerate(self.starts_s):
            if elapsed_s >= start:
                index = i
        segment = self.segments[index]
        ramp_started: float | None = None
        if Scenario.GRADUAL in segment.scenarios:
            first = index
            while first > 0 and Scenario.GRADUAL in self.segments[first - 1].scenarios:
                first -= 1
            ramp_started = self.starts_s[first]
        return Phase(index, segment, self.starts_s[index], ramp_started)

    def switches(self) -> list[tuple[float, Segment]]:
        """``(start_s, segment)`` for every segment, for announcing changes as they happen."""
        return list(zip(self.starts_s, self.segments, strict=True))

    def __str__(self) -> str:
        parts = []
        for seg in self.segments:
            dur = "" if seg.duration_s is None else f":{_fmt_seconds(seg.duration_s)}"
            parts.append(seg.label + dur)
        return ",".join(parts)


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)?$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"30"``/``"30s"`` → 30.0, ``"2m"`` → 120.0, ``"1.5h"`` → 5400.0 (seconds)."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ScheduleError(
            f"duration {text!r}: expected a number of seconds, optionally suffixed s, m or h "
            "(e.g. 30, 45s, 2m, 1h)"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def parse_scenarios(spec: str, position: int = 1) -> frozenset[Scenario]:
    """``"sudden+concept"`` → ``{SUDDEN, CONCEPT}``, refusing combinations that make no sense."""
    where = f"segment {position} {spec.strip()!r}"
    names = [n.strip().lower() for n in spec.split("+")]
    if not all(names):
        raise ScheduleError(f"{where}: empty scenario name")
    valid = ", ".join(s.value for s in Scenario)
    scenarios: list[Scenario] = []
    for name in names:
        try:
            scenarios.append(Scenario(name))
        except ValueError:
            raise ScheduleError(f"{where}: unknown scenario {name!r} (valid: {valid})") from None
    chosen = frozenset(scenarios)
    if len(chosen) != len(scenarios):
        raise ScheduleError(f"{where}: a scenario is repeated")
    if Scenario.STEADY in chosen and len(chosen) > 1:
        raise ScheduleError(f"{where}: steady means no drift and cannot be combined")
    if len(chosen & COVARIATE_DRIFT) > 1:
        raise ScheduleError(f"{where}: sudden and gradual are both covariate drift; pick one")
    return chosen


def parse_schedule(spec: str) -> Schedule:
    """Parse ``scenario[+scenario...][:duration]`` segments separated by commas.

    Durations are seconds (``30``, ``30s``) or carry a unit (``2m``, ``1h``). Every segment but
    the last needs a duration > 0; the last runs until locust stops (a duration there, or
    ``:0``, changes nothing). Examples: ``steady:30,sudden+concept:0``;
    ``steady:1m,gradual:10m,steady``.
    """
    if not spec or not spec.strip():
        raise ScheduleError("empty schedule: give e.g. 'steady:30,sudden+concept'")
    raw = [part.strip() for part in spec.split(",")]
    segments: list[Segment] = []
    for i, part in enumerate(raw, start=1):
        if not part:
            raise ScheduleError(f"segment {i}: empty (check for a stray comma)")
        name, sep, dur = part.partition(":")
        scenarios = parse_scenarios(name, i)
        duration: float | None = None
        if sep:
            try:
                duration = parse_duration(dur)
            except ScheduleError as exc:
                raise ScheduleError(f"segment {i} {part!r}: {exc}") from None
        if i == len(raw) and duration == 0.0:
            duration = None
        segments.append(Segment(scenarios, duration))
    return Schedule(tuple(segments))


def resolve_schedule(*, scenario: str, schedule: str) -> Schedule:
    """The run's schedule from the two options: ``schedule`` if given, else ``scenario`` alone."""
    if schedule and schedule.strip():
        return parse_schedule(schedule)
    return Schedule.single(scenario or Scenario.STEADY.value)


# --------------------------------------------------------------------------- drift


def drift_intensity(phase: Phase, elapsed_s: float, settings: DriftSettings) -> float:
    """Strength of covariate drift in ``[0, 1]``: 1 in sudden, a linear ramp in gradual."""
    covariate = phase.segment.covariate
    if covariate is Scenario.SUDDEN:
        return 1.0
    if covariate is Scenario.GRADUAL:
        ramp_s = settings.ramp_minutes * 60.0
        started = phase.ramp_started_s if phase.ramp_started_s is not None else phase.started_s
        if ramp_s <= 0:
            return 1.0
        return min(1.0, max(0.0, (elapsed_s - started) / ramp_s))
    return 0.0


def clip_to_bounds(name: str, value: float) -> float:
    """``value`` clipped into the contract's ``[ge, le]`` for feature ``name``."""
    spec = FEATURE_BY_NAME[name]
    return min(spec.le, max(spec.ge, value))


def apply_covariate_drift(
    features: Mapping[str, float], intensity: float, settings: DriftSettings
) -> dict[str, float]:
    """A copy of ``features`` with income scaled and latitude shifted by ``intensity`` (0..1)."""
    out = dict(features)
    if intensity <= 0.0:
        return out
    factor = 1.0 + (settings.income_factor - 1.0) * intensity
    out[INCOME_FEATURE] = clip_to_bounds(INCOME_FEATURE, out[INCOME_FEATURE] * factor)
    out[LATITUDE_FEATURE] = clip_to_bounds(
        LATITUDE_FEATURE, out[LATITUDE_FEATURE] + settings.latitude_shift * intensity
    )
    return out


def true_value_usd(target: float, *, concept: bool, settings: DriftSettings) -> float:
    """The feedback's ``actual``: the data's target (100,000 USD units) in USD, shifted in concept."""
    usd = target * TARGET_SCALE_USD
    return usd * settings.concept_factor if concept else usd


@dataclass(frozen=True)
class PlannedPrediction:
    """One ``/predict`` body and the truth its feedback will carry."""

    features: dict[str, float]
    actual_usd: float
    drifted: bool


def plan_prediction(
    rng: random.Random,
    features: Mapping[str, float],
    target: float,
    phase: Phase,
    elapsed_s: float,
    settings: DriftSettings,
) -> PlannedPrediction:
    """Decide what to send for one sampled row: drifted or not, and its true value.

    The truth is fixed when the prediction is made (the world the row came from), not when the
    feedback is sent, so a schedule switch between the two does not relabel old requests.
    """
    intensity = drift_intensity(phase, elapsed_s, settings)
    drifted = intensity > 0.0 and rng.random() < settings.drift_share
    sent = apply_covariate_drift(features, intensity, settings) if drifted else dict(features)
    actual = true_value_usd(target, concept=phase.segment.concept, settings=settings)
    return PlannedPrediction(sent, actual, drifted)


# --------------------------------------------------------------------------- bad requests

#: Field name the API uses when the problem is the body as a whole (empty, not JSON, a list).
BODY_FIELD = "body"
#: A key no contract defines, for the extra-field case.
UNKNOWN_FIELD = "unknown_feature"


@dataclass(frozen=True)
class BadRequest:
    """An invalid body for ``route``; ``case`` names what is wrong, ``field`` where.

    The API must answer 422 with a message naming ``field``.
    """

    route: str
    case: str
    body: bytes
    field: str


def _dump(obj: object) -> bytes:
    return json.dumps(obj).encode()


def bad_predict(rng: random.Random, features: Mapping[str, float], case: str) -> BadRequest:
    """One invalid ``/predict`` body of kind ``case``: a real row with one thing broken."""
    row = dict(features)
    names = list(row)
    pick = rng.choice(names)
    spec = FEATURE_BY_NAME[pick]
    bodies: dict[str, tuple[object, str]] = {
        "missing_field": ({k: v for k, v in row.items() if k != pick}, pick),
        "wrong_type": ({**row, pick: str(row[pick])}, pick),
        # json.dumps writes NaN/Infinity literals, which the API must refuse as non-finite.
        "nan": ({**row, pick: float("nan")}, pick),
        "infinity": ({**row, pick: float("inf")}, pick),
        "below_bound": ({**row, pick: spec.ge - 1.0}, pick),
        "above_bound": ({**row, pick: spec.le + 1.0}, pick),
        "extra_field": ({**row, UNKNOWN_FIELD: 1.0}, UNKNOWN_FIELD),
        "not_object": ([row[n] for n in names], BODY_FIELD),
    }
    if case == "not_json":
        return BadRequest(PREDICT_ROUTE, case, b"{this is not json", BODY_FIELD)
    if case == "empty":
        return BadRequest(PREDICT_ROUTE, case, b"", BODY_FIELD)
    if case not in bodies:
        raise ValueError(f"unknown bad /predict case {case!r}")
    obj, field_name = bodies[case]
    return BadRequest(PREDICT_ROUTE, case, _dump(obj), field_name)


#: A token-shaped placeholder in invalid feedback bodies, so only the named field is wrong (the
#: body is refused with 422 before any token is checked).
BAD_FEEDBACK_TOKEN = "v1.0.AA.AA"


def bad_feedback(case: str) -> BadRequest:
    """One invalid ``/feedback`` body of kind ``case`` (sent with a producer's API key)."""
    token = {"feedback_token": BAD_FEEDBACK_TOKEN}
    bodies: dict[str, tuple[object, str]] = {
        "negative_actual": ({"request_id": "lt-bad", "actual": -1.0, **token}, "actual"),
        "bad_request_id": (
            {"request_id": "not a valid id!", "actual": 100_000.0, **token},
            "request_id",
        ),
        "missing_actual": ({"request_id": "lt-bad", **token}, "actual"),
        "string_actual": ({"request_id": "lt-bad", "actual": "100000", **token}, "actual"),
    }
    if case not in bodies:
        raise ValueError(f"unknown bad /feedback case {case!r}")
    obj, field_name = bodies[case]
    return BadRequest(FEEDBACK_ROUTE, case, _dump(obj), field_name)


BAD_PREDICT_CASES: tuple[str, ...] = (
    "missing_field",
    "wrong_type",
    "nan",
    "infinity",
    "below_bound",
    "above_bound",
    "extra_field",
    "not_json",
    "not_object",
    "empty",
)
BAD_FEEDBACK_CASES: tuple[str, ...] = (
    "negative_actual",
    "bad_request_id",
    "missing_actual",
    "string_actual",
)
#: Share of bad requests aimed at ``/predict`` (the rest go to ``/feedback``).
BAD_PREDICT_SHARE = 0.75


def bad_request(rng: random.Random, features: Mapping[str, float]) -> BadRequest:
    """A body the API must answer with 422, built from a real row so only one thing is wrong."""
    if rng.random() < BAD_PREDICT_SHARE:
        return bad_predict(rng, features, rng.choice(BAD_PREDICT_CASES))
    return bad_feedback(rng.choice(BAD_FEEDBACK_CASES))
