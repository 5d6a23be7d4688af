"""Events round-trip through JSON, and the decoder refuses what it does not understand: every
record of the poison corpus is an :class:`EventError` with its reason, never another exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEEDBACK_TOPIC,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW,
    MODEL_EVENTS_TOPIC,
    PREDICTIONS_TOPIC,
    EventError,
    FeedbackEvent,
    InvalidReason,
    MalformedEvent,
    ModelPromoted,
    PredictionEvent,
    UnknownSchemaVersion,
    decode_event,
    events,
    utcnow,
)
from driftloop_contracts.events import UnknownTopic
from driftloop_contracts.poison import PoisonCase, feedback_poison, poison_corpus, tolerated


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


def _valid_events() -> dict[str, Any]:
    return {
        PREDICTIONS_TOPIC: prediction(),
        FEEDBACK_TOPIC: FeedbackEvent(request_id="r-1", timestamp=utcnow(), actual=400_000.0),
        MODEL_EVENTS_TOPIC: ModelPromoted(model_name="m", version="4", run_id="abc", reason="r"),
    }


def _poison_cases() -> list[Any]:
    """(topic, case) for every topic's poison that the decoder itself must refuse."""
    cases = []
    for topic, event in _valid_events().items():
        raw = json.loads(event.to_bytes())
        corpus = feedback_poison(raw) if topic == FEEDBACK_TOPIC else poison_corpus(raw)
        cases += [pytest.param(topic, case, id=f"{topic}-{case.name}") for case in corpus]
    return cases


@pytest.mark.parametrize(("topic", "case"), _poison_cases())
def test_poison_is_an_event_error_with_its_reason_never_another_exception(
    topic: str, case: PoisonCase
) -> None:
    try:
        decode_event(topic, case.value)
    except EventError as exc:
        assert exc.reason == case.reason, str(exc)
        assert exc.reason in set(InvalidReason)
        assert 0 < len(str(exc)) <= 600  # a log line, not the record
    else:
        pytest.fail(f"{case.name} decoded")


@pytest.mark.parametrize("topic", [PREDICTIONS_TOPIC, FEEDBACK_TOPIC, MODEL_EVENTS_TOPIC])
def test_a_valid_event_after_the_whole_corpus_still_decodes(topic: str) -> None:
    event = _valid_events()[topic]
    raw = json.loads(event.to_bytes())
    for case in feedback_poison(raw) if topic == FEEDBACK_TOPIC else poison_corpus(raw):
        with pytest.raises(EventError):
            decode_event(topic, case.value)
    assert decode_event(topic, event.to_bytes()) == event


@pytest.mark.parametrize("topic", [PREDICTIONS_TOPIC, FEEDBACK_TOPIC, MODEL_EVENTS_TOPIC])
def test_unknown_fields_are_tolerated_not_refused(topic: str) -> None:
    event = _valid_events()[topic]
    for name, value in tolerated(json.loads(event.to_bytes())):
        assert decode_event(topic, value) == event, name


def test_a_str_value_is_decoded_like_bytes() -> None:
    event = prediction()
    assert decode_event(PREDICTIONS_TOPIC, event.to_bytes().decode()) == event
    # a str that is not valid Unicode (a lone surrogate) makes the parser raise TypeError
    with pytest.raises(MalformedEvent) as info:
        decode_event(PREDICTIONS_TOPIC, '{"request_id": "\ud800"}')
    assert info.value.reason == InvalidReason.MALFORMED


def test_the_size_cap_is_checked_before_parsing() -> None:
    event = prediction()
    at_cap = b" " * (MAX_EVENT_BYTES - len(event.to_bytes())) + event.to_bytes()
    assert decode_event(PREDICTIONS_TOPIC, at_cap) == event
    with pytest.raises(EventError) as info:
        decode_event(PREDICTIONS_TOPIC, b" " + at_cap)
    assert info.value.reason == InvalidReason.TOO_LARGE


def test_any_unexpected_parser_failure_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> object:
        raise MemoryError("a parser failure nobody listed")

    monkeypatch.setattr(events, "from_json", explode)
    with pytest.raises(MalformedEvent, match="MemoryError") as info:
        decode_event(PREDICTIONS_TOPIC, prediction().to_bytes())
    assert info.value.reason == InvalidReason.MALFORMED


# --- event time: timestamp_out_of_range ----------------------------------------------------


def _with_timestamp(topic: str, timestamp: str) -> bytes:
    raw = json.loads(_valid_events()[topic].to_bytes())
    return json.dumps({**raw, "timestamp": timestamp}).encode()


@pytest.mark.parametrize("topic", [PREDICTIONS_TOPIC, FEEDBACK_TOPIC])
def test_an_event_before_2000_is_out_of_range_whenever_it_was_received(topic: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_event(topic, _with_timestamp(topic, "1999-12-31T23:59:59Z"))
    assert caught.value.reason == InvalidReason.TIMESTAMP_OUT_OF_RANGE
    assert decode_event(topic, _with_timestamp(topic, "2000-01-01T00:00:00Z"))


@pytest.mark.parametrize("topic", [PREDICTIONS_TOPIC, FEEDBACK_TOPIC])
def test_an_event_from_the_future_is_out_of_range_relative_to_its_receipt(topic: str) -> None:
    received = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    skew = MAX_FUTURE_SKEW
    inside = (received + skew).isoformat()
    beyond = (received + skew + timedelta(seconds=1)).isoformat()
    assert decode_event(topic, _with_timestamp(topic, inside), received_at=received)
    with pytest.raises(EventError) as caught:
        decode_event(topic, _with_timestamp(topic, beyond), received_at=received)
    assert caught.value.reason == InvalidReason.TIMESTAMP_OUT_OF_RANGE
    # a narrower skew, and no receipt time (then only the lower bound applies: pure)
    with pytest.raises(EventError):
        decode_event(
            topic,
            _with_timestamp(topic, (received + timedelta(minutes=2)).isoformat()),
            received_at=received,
            max_future_skew=timedelta(minutes=1),
        )
    assert decode_event(topic, _with_timestamp(topic, "2999-01-01T00:00:00Z"))


def test_model_events_have_no_time_range() -> None:
    raw = json.loads(_valid_events()[MODEL_EVENTS_TOPIC].to_bytes())
    value = json.dumps({**raw, "timestamp": "1999-01-01T00:00:00Z"}).encode()
    assert decode_event(MODEL_EVENTS_TOPIC, value, received_at=datetime.now(UTC))
