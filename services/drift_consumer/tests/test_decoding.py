"""decoding.py: bytes become an event or a reason to skip the record; nothing else happens."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftloop_contracts import MODEL_NAME, PredictionEvent
from driftloop_contracts.poison import PoisonCase, feedback_poison, prediction_poison, tolerated
from driftloop_drift_consumer.decoding import (
    DecodedPrediction,
    EventClock,
    Invalid,
    decode_feedback,
    decode_prediction,
    decode_predictions,
)

from .conftest import Record, feedback_event, prediction_event

ROW = [3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0, 210_000.0]


def record(value: bytes | None, offset: int = 0) -> Record:
    return Record("predictions", 0, offset, value)


def test_a_valid_prediction_carries_its_row_in_contract_order() -> None:
    event = prediction_event("a", ROW)
    decoded = decode_prediction(record(event.to_bytes(), 7), model_name=MODEL_NAME)
    assert isinstance(decoded, DecodedPrediction)
    assert decoded.offset == 7 and decoded.event.request_id == "a"
    assert decoded.row == tuple(ROW)


def test_invalid_predictions_name_their_reason() -> None:
    cases = {
        b"not json": "malformed",
        None: "malformed",
        b'{"schema_version": 99}': "unknown_schema_version",
        prediction_event("x", ROW, model_name="another-model").to_bytes(): "unknown_model",
    }
    for value, reason in cases.items():
        decoded = decode_prediction(record(value, 3), model_name=MODEL_NAME)
        assert isinstance(decoded, Invalid) and decoded.reason == reason, value
        assert decoded.offset == 3 and decoded.error


def test_non_finite_and_missing_values_are_invalid() -> None:
    def edited(edit: Callable[[dict[str, Any]], None]) -> bytes:
        raw = json.loads(prediction_event("a", ROW).to_bytes())
        edit(raw)
        return json.dumps(raw).encode()  # Python's json writes Infinity/NaN literals

    cases = {
        edited(lambda d: d.update(prediction=math.inf)): "non_finite",
        edited(lambda d: d["features"].update(average_rooms=math.nan)): "non_finite",
        edited(lambda d: d["features"].pop("average_rooms")): "missing_feature",
    }
    for value, reason in cases.items():
        decoded = decode_prediction(record(value), model_name=MODEL_NAME)
        assert isinstance(decoded, Invalid) and decoded.reason == reason, value


def test_a_batch_splits_into_valid_and_invalid_in_offset_order() -> None:
    records = [
        record(prediction_event("a", ROW).to_bytes(), 0),
        record(b"{", 1),
        record(prediction_event("b", ROW).to_bytes(), 2),
    ]
    valid, invalid = decode_predictions(records, model_name=MODEL_NAME)
    assert [p.offset for p in valid] == [0, 2]
    assert [(i.offset, i.reason) for i in invalid] == [(1, "malformed")]


def test_invalid_feedback_keeps_its_place() -> None:
    records = [
        Record("feedback", 0, 5, feedback_event("a", 1.0).to_bytes()),
        Record("feedback", 0, 6, b'{"schema_version": 1, "request_id": "a"}'),
    ]
    decoded, invalid = decode_feedback(records)
    assert [(d.offset, d.event is None) for d in decoded] == [(5, False), (6, True)]
    assert [(i.offset, i.reason) for i in invalid] == [(6, "malformed")]


# --- the poison corpus: any bytes become an Invalid with its reason, never an exception ------


def _valid_prediction() -> dict[str, Any]:
    return json.loads(prediction_event("p", ROW).to_bytes())


def _valid_feedback() -> dict[str, Any]:
    return json.loads(feedback_event("p", 1.0).to_bytes())


@pytest.mark.parametrize("case", prediction_poison(_valid_prediction()), ids=lambda c: c.name)
def test_poison_prediction_is_invalid_with_its_reason(case: PoisonCase) -> None:
    decoded = decode_prediction(record(case.value, 11), model_name=MODEL_NAME)
    assert isinstance(decoded, Invalid), case.name
    assert (decoded.offset, decoded.reason) == (11, case.reason), decoded.error


@pytest.mark.parametrize("case", feedback_poison(_valid_feedback()), ids=lambda c: c.name)
def test_poison_feedback_is_invalid_with_its_reason(case: PoisonCase) -> None:
    decoded, invalid = decode_feedback([Record("feedback", 0, 11, case.value)])
    assert [(d.offset, d.event) for d in decoded] == [(11, None)]
    assert [(i.offset, i.reason) for i in invalid] == [(11, case.reason)], invalid


def test_a_batch_of_poison_then_valid_records_decodes_the_valid_ones() -> None:
    corpus = prediction_poison(_valid_prediction())
    records = [record(c.value, i) for i, c in enumerate(corpus)]
    records.append(record(prediction_event("after", ROW).to_bytes(), len(corpus)))
    valid, invalid = decode_predictions(records, model_name=MODEL_NAME)
    assert [(p.offset, p.event.request_id) for p in valid] == [(len(corpus), "after")]
    assert [i.reason for i in invalid] == [c.reason for c in corpus]

    corpus = feedback_poison(_valid_feedback())
    records = [Record("feedback", 0, i, c.value) for i, c in enumerate(corpus)]
    records.append(Record("feedback", 0, len(corpus), feedback_event("after", 2.0).to_bytes()))
    decoded, invalid = decode_feedback(records)
    assert [d.offset for d in decoded] == list(range(len(corpus) + 1))
    assert [d.event.request_id for d in decoded if d.event is not None] == ["after"]
    assert [i.reason for i in invalid] == [c.reason for c in corpus]


def test_an_unexpected_failure_after_decoding_is_still_just_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(self: PredictionEvent) -> list[float]:
        raise RecursionError("nobody listed this one")

    monkeypatch.setattr(PredictionEvent, "feature_row", explode)
    decoded = decode_prediction(
        record(prediction_event("a", ROW).to_bytes()), model_name=MODEL_NAME
    )
    assert isinstance(decoded, Invalid) and decoded.reason == "malformed"
    assert "RecursionError" in decoded.error


def test_tolerated_extra_fields_still_decode() -> None:
    for name, value in tolerated(_valid_prediction()):
        decoded = decode_prediction(record(value), model_name=MODEL_NAME)
        assert isinstance(decoded, DecodedPrediction), name
        assert decoded.row == tuple(ROW)


# --- event time: checked against the record's Kafka timestamp (capped at now) ---------------


def test_an_event_from_the_future_is_out_of_range_against_the_record_timestamp() -> None:
    now = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    clock = EventClock(now, timedelta(hours=1))
    sent = now - timedelta(days=1)  # a record read a day after it was written (a replay)
    sent_ms = int(sent.timestamp() * 1000)

    def at(ts: datetime, timestamp_ms: int | None) -> Record:
        event = prediction_event("a", ROW, ts=ts)
        return Record("predictions", 0, 5, event.to_bytes(), timestamp=timestamp_ms)

    inside = decode_prediction(
        at(sent + timedelta(minutes=59), sent_ms), model_name=MODEL_NAME, clock=clock
    )
    assert isinstance(inside, DecodedPrediction)
    beyond = decode_prediction(
        at(sent + timedelta(minutes=61), sent_ms), model_name=MODEL_NAME, clock=clock
    )
    assert isinstance(beyond, Invalid) and beyond.reason == "timestamp_out_of_range"
    assert beyond.record is not None and beyond.record.offset == 5  # kept for its dead letter
    # a record stamped in the future by its producer is held to now, not to its own stamp
    lying = int((now + timedelta(days=365)).timestamp() * 1000)
    far = decode_prediction(
        at(now + timedelta(days=300), lying), model_name=MODEL_NAME, clock=clock
    )
    assert isinstance(far, Invalid) and far.reason == "timestamp_out_of_range"
    # no timestamp (-1 in Kafka, None here): now
    assert isinstance(
        decode_prediction(at(now + timedelta(minutes=30), -1), model_name=MODEL_NAME, clock=clock),
        DecodedPrediction,
    )
    feedback = feedback_event("a", 1.0, ts=now + timedelta(hours=2))
    _, invalid = decode_feedback(
        [Record("feedback", 0, 9, feedback.to_bytes(), timestamp=None)], clock=clock
    )
    assert [(i.offset, i.reason) for i in invalid] == [(9, "timestamp_out_of_range")]
