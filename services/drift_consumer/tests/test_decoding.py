"""decoding.py: bytes become an event or a reason to skip the record; nothing else happens."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from driftloop_contracts import MODEL_NAME
from driftloop_drift_consumer.decoding import (
    DecodedPrediction,
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
