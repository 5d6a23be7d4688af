"""Decoding: a record's bytes become an event, or the reason it is invalid. Pure: no I/O, no
metrics, no logging.

The caller counts each :class:`Invalid` under ``driftloop_events_invalid_total{topic,reason}``,
logs it with topic/partition/offset and skips it; a bad record never stops the loop: these
functions return an :class:`Invalid` for *any* record value and raise nothing (tested with the
contracts' poison corpus). Records are decoded by the contracts' canonical topic names (the
actual topic names may differ, see ``settings.predictions_topic``).

Reasons are :class:`driftloop_contracts.InvalidReason`: those of ``decode_event``
(``malformed``, ``unknown_schema_version``, ``not_utf8``, ``too_large``, ``too_deep``,
``non_finite``), plus for predictions ``unknown_model`` (another registered model),
``missing_feature`` and ``non_finite`` (NaN or infinity in a feature or the prediction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from driftloop_contracts import (
    FEEDBACK_TOPIC,
    PREDICTIONS_TOPIC,
    EventError,
    FeedbackEvent,
    InvalidReason,
    PredictionEvent,
    decode_event,
)


class RawRecord(Protocol):
    """The part of aiokafka's ``ConsumerRecord`` decoding reads."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Invalid:
    """A record that is skipped: ``reason`` is the metric label, ``error`` says why."""

    offset: int
    reason: str
    error: str


@dataclass(frozen=True)
class DecodedPrediction:
    """A valid prediction of our model, with its ``(features..., prediction)`` row."""

    offset: int
    event: PredictionEvent
    row: tuple[float, ...]


@dataclass(frozen=True)
class DecodedFeedback:
    """A feedback record in offset order; ``event`` is ``None`` when it was invalid (it still
    takes its place in the partition's buffer, so commits can pass it)."""

    offset: int
    event: FeedbackEvent | None


def decode_prediction(record: RawRecord, *, model_name: str) -> DecodedPrediction | Invalid:
    """A prediction of ``model_name`` whose features and prediction are all finite."""
    try:
        return _prediction(record, model_name)
    except EventError as exc:
        return Invalid(record.offset, exc.reason, str(exc))
    except Exception as exc:  # whatever a record holds, it is skipped, never a crash
        return Invalid(record.offset, InvalidReason.MALFORMED, f"{type(exc).__name__}: {exc}")


def _prediction(record: RawRecord, model_name: str) -> DecodedPrediction | Invalid:
    event = decode_event(PREDICTIONS_TOPIC, record.value)
    assert isinstance(event, PredictionEvent)
    if event.model_name != model_name:
        return Invalid(record.offset, InvalidReason.UNKNOWN_MODEL, event.model_name[:128])
    try:
        row = (*event.feature_row(), event.prediction)
    except KeyError as exc:
        return Invalid(record.offset, InvalidReason.MISSING_FEATURE, str(exc))
    if not all(math.isfinite(v) for v in row):
        return Invalid(record.offset, InvalidReason.NON_FINITE, "NaN or infinite value")
    return DecodedPrediction(record.offset, event, row)


def decode_predictions(
    records: Sequence[RawRecord], *, model_name: str
) -> tuple[list[DecodedPrediction], list[Invalid]]:
    """The valid predictions of ``records`` (in offset order) and the invalid ones."""
    valid: list[DecodedPrediction] = []
    invalid: list[Invalid] = []
    for record in records:
        decoded = decode_prediction(record, model_name=model_name)
        if isinstance(decoded, Invalid):
            invalid.append(decoded)
        else:
            valid.append(decoded)
    return valid, invalid


def decode_feedback(
    records: Sequence[RawRecord],
) -> tuple[list[DecodedFeedback], list[Invalid]]:
    """Every record as :class:`DecodedFeedback` (invalid ones with ``event=None``), and the
    invalid ones."""
    out: list[DecodedFeedback] = []
    invalid: list[Invalid] = []
    for record in records:
        decoded = _feedback(record)
        if isinstance(decoded, Invalid):
            invalid.append(decoded)
            out.append(DecodedFeedback(record.offset, None))
        else:
            out.append(DecodedFeedback(record.offset, decoded))
    return out, invalid


def _feedback(record: RawRecord) -> FeedbackEvent | Invalid:
    try:
        event = decode_event(FEEDBACK_TOPIC, record.value)
    except EventError as exc:
        return Invalid(record.offset, exc.reason, str(exc))
    except Exception as exc:  # whatever a record holds, it is skipped, never a crash
        return Invalid(record.offset, InvalidReason.MALFORMED, f"{type(exc).__name__}: {exc}")
    assert isinstance(event, FeedbackEvent)
    return event
