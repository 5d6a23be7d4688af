"""Events round-trip through JSON, and the decoder refuses what it does not understand."""

from __future__ import annotations

import json

import pytest

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEEDBACK_TOPIC,
    MODEL_EVENTS_TOPIC,
    PREDICTIONS_TOPIC,
    FeedbackEvent,
    MalformedEvent,
    ModelPromoted,
    PredictionEvent,
    UnknownSchemaVersion,
    decode_event,
    utcnow,
)
from driftloop_contracts.events import UnknownTopic


def prediction() -> PredictionEvent:
    return PredictionEvent(
        request_id="r-1",
        timestamp=utcnow(),
        model_name="m",
        model_version="3",
        features=EXAMPLE_FEATURES,
        prediction=452_600.0,
        latency_ms=1.5,
        replica_id="replica-0",
    )


@pytest.mark.parametrize(
    ("topic", "event"),
    [
        (PREDICTIONS_TOPIC, prediction()),
        (FEEDBACK_TOPIC, FeedbackEvent(request_id="r-1", timestamp=utcnow(), actual=400_000.0)),
        (MODEL_EVENTS_TOPIC, ModelPromoted(model_name="m", version="4", run_id="abc", reason="r")),
    ],
)
def test_round_trip(topic, event) -> None:
    assert decode_event(topic, event.to_bytes()) == event


def test_unknown_schema_version_is_its_own_error() -> None:
    raw = json.loads(prediction().to_bytes())
    raw["schema_version"] = 2
    with pytest.raises(UnknownSchemaVersion, match="schema_version 2"):
        decode_event(PREDICTIONS_TOPIC, json.dumps(raw).encode())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty"),
        (json.dumps({"schema_version": 1, "request_id": "x"}).encode(), "timestamp"),
    ],
)
def test_malformed_records_say_why(value, message) -> None:
    with pytest.raises(MalformedEvent, match=message) as info:
        decode_event(PREDICTIONS_TOPIC, value)
    assert info.value.reason == "malformed"


def test_missing_schema_version_is_rejected() -> None:
    raw = json.loads(prediction().to_bytes())
    del raw["schema_version"]
    with pytest.raises(UnknownSchemaVersion):
        decode_event(PREDICTIONS_TOPIC, json.dumps(raw))


def test_unknown_topic() -> None:
    with pytest.raises(UnknownTopic):
        decode_event("nope", b"{}")
