"""Decoding: a record's bytes become an event, or the reason it is invalid. Pure: no I/O, no
metrics, no logging.

The caller counts each :class:`Invalid` under ``driftloop_events_invalid_total{topic,reason}``,
logs it with topic/partition/offset and skips it; a bad record never stops the loop: these
functions return an :class:`Invalid` for *any* record value and raise nothing (tested with the
contracts' poison corpus). Records are decoded by the contracts' canonical topic names (the
actual topic names may differ, see ``settings.predictions_topic``).

Reasons are :class:`driftloop_contracts.InvalidReason`: those of ``decode_event``
(``malformed``, ``unknown_schema_version``, ``not_utf8``, ``too_large``, ``too_deep``,
``non_finite``, ``timestamp_out_of_range``), plus for predictions ``unknown_model`` (another
registered model), ``missing_feature`` and ``non_finite`` (NaN or infinity in a feature or the
prediction).

Event time: an event stamped more than ``max_future_skew`` after the record was received is
out of range. "Received" is the record's Kafka timestamp, capped at ``now`` (a producer cannot
widen the window by lying in both), or ``now`` for a record without one. The record's own
timestamp makes a replay decide as the first read did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from driftloop_contracts import (
    FEEDBACK_TOPIC,
    MAX_FUTURE_SKEW,
    PREDICTIONS_TOPIC,
    EventError,
    FeedbackEvent,
    InvalidReason,
    PredictionEvent,
    decode_event,
)


class RawRecord(Protocol):
    """The part of aiokafka's ``ConsumerRecord`` decoding (and dead-lettering) reads."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def timestamp(self) -> int | None: ...


@dataclass(frozen=True)
class Invalid:
    """A record that is skipped: ``reason`` is the metric label, ``error`` says why;
    ``record`` is the record itself when it is dead-lettered (``None`` for feedback given up
    by the join, which is a valid record)."""

    offset: int
    reason: str
    error: str
    record: RawRecord | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EventClock:
    """What an event's time is checked against (see the module docstring)."""

    now: datetime
    max_future_skew: timedelta = MAX_FUTURE_SKEW

    @classmethod
    def current(cls, max_future_skew: timedelta = MAX_FUTURE_SKEW) -> EventClock:
        return cls(datetime.now(UTC), max_future_skew)

    def received_at(self, record: RawRecord) -> datetime:
        ms = record.timestamp
        if ms is None or ms < 0:
            return self.now
        try:
            return min(datetime.fromtimestamp(ms / 1000, UTC), self.now)
        except (OverflowError, OSError, ValueError):  # a timestamp no datetime can hold
            return self.now


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


def decode_prediction(
    record: RawRecord, *, model_name: str, clock: EventClock | None = None
) -> DecodedPrediction | Invalid:
    """A prediction of ``model_name`` whose features and prediction are all finite and whose
    time is in range (``clock``: now, by default)."""
    try:
        return _prediction(record, model_name, clock or EventClock.current())
    except EventError as exc:
        return Invalid(record.offset, exc.reason, str(exc), record)
    except Exception as exc:  # whatever a record holds, it is skipped, never a crash
        return Invalid(
            record.offset, InvalidReason.MALFORMED, f"{type(exc).__name__}: {exc}", record
        )


def _prediction(
    record: RawRecord, model_name: str, clock: EventClock
) -> DecodedPrediction | Invalid:
    event = decode_event(
        PREDICTIONS_TOPIC,
        record.value,
        received_at=clock.received_at(record),
        max_future_skew=clock.max_future_skew,
    )
    if event.model_name != model_name:
        return Invalid(record.offset, InvalidReason.UNKNOWN_MODEL, event.model_name[:128], record)
    try:
        row = (*event.feature_row(), event.prediction)
    except KeyError as exc:
        return Invalid(record.offset, InvalidReason.MISSING_FEATURE, str(exc), record)
    if not all(math.isfinite(v) for v in row):
        return Invalid(record.offset, InvalidReason.NON_FINITE, "NaN or infinite value", record)
    return DecodedPrediction(record.offset, event, row)


def decode_predictions(
    records: Sequence[RawRecord], *, model_name: str, clock: EventClock | None = None
) -> tuple[list[DecodedPrediction], list[Invalid]]:
    """The valid predictions of ``records`` (in offset order) and the invalid ones."""
    clock = clock or EventClock.current()
    valid: list[DecodedPrediction] = []
    invalid: list[Invalid] = []
    for record in records:
        decoded = decode_prediction(record, model_name=model_name, clock=clock)
        if isinstance(decoded, Invalid):
            invalid.append(decoded)
        else:
            valid.append(decoded)
    return valid, invalid


def decode_feedback(
    records: Sequence[RawRecord], *, clock: EventClock | None = None
) -> tuple[list[DecodedFeedback], list[Invalid]]:
    """Every record as :class:`DecodedFeedback` (invalid ones with ``event=None``), and the
    invalid ones."""
    clock = clock or EventClock.current()
    out: list[DecodedFeedback] = []
    invalid: list[Invalid] = []
    for record in records:
        decoded = _feedback(record, clock)
        if isinstance(decoded, Invalid):
            invalid.append(decoded)
            out.append(DecodedFeedback(record.offset, None))
        else:
            out.append(DecodedFeedback(record.offset, decoded))
    return out, invalid


def _feedback(record: RawRecord, clock: EventClock) -> FeedbackEvent | Invalid:
    try:
        return decode_event(
            FEEDBACK_TOPIC,
            record.value,
            received_at=clock.received_at(record),
            max_future_skew=clock.max_future_skew,
        )
    except EventError as exc:
        return Invalid(record.offset, exc.reason, str(exc), record)
    except Exception as exc:  # whatever a record holds, it is skipped, never a crash
        return Invalid(
            record.offset, InvalidReason.MALFORMED, f"{type(exc).__name__}: {exc}", record
        )
