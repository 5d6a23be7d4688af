"""Versioned event schemas carried on Kafka, and their one decoder.

Every event is JSON with a ``schema_version``. :func:`decode_event` turns *any* record value
into an event or raises an :class:`EventError` whose ``reason`` is one of
:class:`InvalidReason`; no other exception ever leaves it, whatever the bytes (empty, not
UTF-8, nested 100,000 deep, megabytes long, NaN where a number must be finite...). A consumer
counts the reason in ``driftloop_events_invalid_total{topic,reason}``, skips the record and
moves on: one bad record never stops a consumer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Literal, TypeAlias, TypeVar, overload

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

from .features import FEATURE_NAMES
from .topics import FEEDBACK_TOPIC, MODEL_EVENTS_TOPIC, PREDICTIONS_TOPIC

SCHEMA_VERSION: Final = 1

#: Largest record value :func:`decode_event` parses; a longer one is ``too_large`` unread.
#: Our events are under 1 KiB, so 64 KiB leaves room for growth while bounding the time and
#: memory one hostile record can cost a consumer.
MAX_EVENT_BYTES = 64 * 1024

#: Nesting depth at which the JSON parser (pydantic-core's jiter) gives up: ``too_deep``.
#: Our events nest two levels.
MAX_JSON_DEPTH = 200

#: A prediction or feedback event stamped before this is ``timestamp_out_of_range``: no
#: service of ours ran then, so the clock that wrote it (or the producer) is broken.
MIN_EVENT_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of the time it was received (``received_at``) an event may be stamped before
#: it is ``timestamp_out_of_range``: clocks drift, but an hour is a broken clock, and an event
#: from the future would hold a time window open (or close it early) for everyone else.
MAX_FUTURE_SKEW: Final = timedelta(hours=1)


class InvalidReason(StrEnum):
    """Why a record was skipped: the ``reason`` label of ``driftloop_events_invalid_total``.

    The one list for every consumer. :func:`decode_event` reports the first six and
    ``timestamp_out_of_range``; the drift consumer adds ``unknown_model``,
    ``missing_feature``, ``unmatched_feedback`` and ``duplicate_label`` once an event has decoded.
    """

    #: no value, not JSON, not an object, or fields missing / of the wrong type or range
    MALFORMED = "malformed"
    #: ``schema_version`` missing or not one this build understands
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    #: the bytes are not UTF-8 (JSON on Kafka is UTF-8)
    NOT_UTF8 = "not_utf8"
    #: longer than :data:`MAX_EVENT_BYTES` (refused before parsing)
    TOO_LARGE = "too_large"
    #: JSON nested deeper than :data:`MAX_JSON_DEPTH`
    TOO_DEEP = "too_deep"
    #: NaN or infinity (``NaN``, ``Infinity``, ``1e999``) where a finite number is required
    NON_FINITE = "non_finite"
    #: a prediction of another registered model (drift consumer)
    UNKNOWN_MODEL = "unknown_model"
    #: a prediction without one of the contract's features (drift consumer)
    MISSING_FEATURE = "missing_feature"
    #: feedback whose prediction never arrived (drift consumer's join)
    UNMATCHED_FEEDBACK = "unmatched_feedback"
    #: feedback for a request another record already labelled: the first label is kept
    #: (drift consumer's join)
    DUPLICATE_LABEL = "duplicate_label"
    #: a prediction or feedback stamped before :data:`MIN_EVENT_TIME` or more than the allowed
    #: skew (:data:`MAX_FUTURE_SKEW` by default) after it was received
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventError(ValueError):
    """A record could not be turned into an event; ``reason`` is a short metric label."""

    reason: str = InvalidReason.MALFORMED

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedEvent(EventError):
    """Not an event: not JSON, or JSON that does not match the schema (``reason`` says how)."""

    reason = InvalidReason.MALFORMED


class UnknownSchemaVersion(EventError):
    """A ``schema_version`` this build does not understand."""

    reason = InvalidReason.UNKNOWN_SCHEMA_VERSION


class UnknownTopic(EventError):
    """A caller asked for a topic that has no event schema (a bug, not a bad record)."""

    reason = "unknown_topic"


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class PredictionEvent(_Event):
    """One served prediction (topic ``predictions``, key ``request_id``)."""

    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    timestamp: AwareDatetime
    model_name: str
    model_version: str
    features: dict[str, float]
    prediction: float = Field(description="median_house_value in USD")
    latency_ms: float
    replica_id: str
    cache_hit: bool = False
    #: During a post-promotion watch the replica also asks the previous champion (the version
    #: under alias :data:`~driftloop_contracts.registry.SHADOW_ALIAS`) and sends its answer
    #: here, never to the client: the drift consumer compares both on the same labelled
    #: requests and rolls back a worse champion. ``None`` outside a watch.
    shadow_model_version: str | None = None
    shadow_prediction: float | None = Field(default=None, allow_inf_nan=False)

    def feature_row(self) -> list[float]:
        return [self.features[name] for name in FEATURE_NAMES]


class FeedbackEvent(_Event):
    """Ground truth for an earlier prediction (topic ``feedback``, key ``request_id``)."""

    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    timestamp: AwareDatetime
    actual: float = Field(description="true median_house_value in USD", allow_inf_nan=False)


class ModelPromoted(_Event):
    """A new champion (topic ``model-events``): replicas reload, the drift consumer re-baselines.

    A rollback is announced with this same event (``reason`` starting with
    :data:`ROLLBACK_REASON_PREFIX`, ``version`` the restored champion): replicas follow the
    alias whatever moved it, so they need no second event type.
    """

    event_type: Literal["ModelPromoted"] = "ModelPromoted"
    model_name: str
    version: str
    run_id: str
    reason: str = ""
    timestamp: AwareDatetime = Field(default_factory=utcnow)


#: ``ModelPromoted.reason`` of a rollback starts with this (then the figures that decided it).
ROLLBACK_REASON_PREFIX: Final = "rollback"

_E = TypeVar("_E", bound=_Event)

#: Any event a topic carries.
Event: TypeAlias = PredictionEvent | FeedbackEvent | ModelPromoted

_SCHEMAS: dict[str, type[Event]] = {
    PREDICTIONS_TOPIC: PredictionEvent,
    FEEDBACK_TOPIC: FeedbackEvent,
    MODEL_EVENTS_TOPIC: ModelPromoted,
}


def event_type_for(topic: str) -> type[Event]:
    try:
        return _SCHEMAS[topic]
    except KeyError:
        raise UnknownTopic(f"no event schema for topic {topic!r}") from None


_Value: TypeAlias = bytes | str | None


@overload
def decode_event(
    topic: Literal["predictions"],
    value: _Value,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> PredictionEvent: ...
@overload
def decode_event(
    topic: Literal["feedback"],
    value: _Value,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> FeedbackEvent: ...
@overload
def decode_event(
    topic: Literal["model-events"],
    value: _Value,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> ModelPromoted: ...
@overload
def decode_event(
    topic: str,
    value: _Value,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> Event: ...
def decode_event(
    topic: str,
    value: _Value,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> Event:
    """Parse a record value from ``topic`` into its event model (typed by the topic's name).

    Raises an :class:`EventError` (:class:`MalformedEvent` or :class:`UnknownSchemaVersion`)
    whose message says why and whose ``reason`` is an :class:`InvalidReason`, and nothing
    else, whatever ``value`` holds. One parse on the valid path (pydantic-core's parser, which
    also bounds the nesting depth instead of recursing until Python's stack runs out).

    The timestamp of a prediction or feedback must be in range (see
    :func:`check_event_time`): never before :data:`MIN_EVENT_TIME`, and, when the caller says
    when the record was received (``received_at``: the record's broker timestamp, or now), at
    most ``max_future_skew`` after it. The caller passes the time in, so decoding stays a pure
    function of its arguments (a replay decides the same way).
    """
    schema = event_type_for(topic)
    try:
        event = _decode(schema, value)
        if isinstance(event, PredictionEvent | FeedbackEvent):
            check_event_time(event.timestamp, received_at, max_future_skew)
        return event
    except EventError:
        raise
    except Exception as exc:  # any other failure on hostile input is a bad record, not a crash
        raise MalformedEvent(_clip(f"undecodable: {type(exc).__name__}: {exc}", 500)) from None


def check_event_time(
    timestamp: datetime,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> None:
    """Raise ``timestamp_out_of_range`` for an event time no working clock of ours writes:
    before :data:`MIN_EVENT_TIME`, or more than ``max_future_skew`` after ``received_at``
    (not checked when ``received_at`` is ``None``)."""
    if timestamp < MIN_EVENT_TIME:
        raise MalformedEvent(
            f"timestamp {timestamp.isoformat()} is before {MIN_EVENT_TIME.isoformat()}",
            InvalidReason.TIMESTAMP_OUT_OF_RANGE,
        )
    if received_at is not None and timestamp - received_at > max_future_skew:
        raise MalformedEvent(
            f"timestamp {timestamp.isoformat()} is more than {max_future_skew} after the "
            f"record was received ({received_at.isoformat()})",
            InvalidReason.TIMESTAMP_OUT_OF_RANGE,
        )


def _decode(schema: type[_E], value: bytes | str | None) -> _E:
    if value is None:
        raise MalformedEvent("empty record value")
    if len(value) > MAX_EVENT_BYTES:
        raise MalformedEvent(
            f"record of {len(value)} bytes exceeds {MAX_EVENT_BYTES}", InvalidReason.TOO_LARGE
        )
    try:
        # Keys repeat in every event, values (request ids) rarely: cache only the keys.
        raw = from_json(value, cache_strings="keys")
    except ValueError as exc:
        raise _not_json(value, exc) from None
    if not isinstance(raw, dict):
        raise MalformedEvent("event is not a JSON object")
    version = raw.get("schema_version")
    # ``type`` check: ``true`` and ``1.0`` equal 1 in Python but are not our version.
    if type(version) is not int or version != SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"schema_version {_clip(repr(version))} is not supported (expected {SCHEMA_VERSION})"
        )
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        fields = ", ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in errors[:5])
        reason = (
            InvalidReason.NON_FINITE
            if any(e["type"] == "finite_number" for e in errors)
            else InvalidReason.MALFORMED
        )
        raise MalformedEvent(f"{schema.__name__} invalid: {_clip(fields, 500)}", reason) from None


def _not_json(value: bytes | str, exc: ValueError) -> MalformedEvent:
    """The reason a value failed to parse (only on the failure path: no cost when valid)."""
    if isinstance(value, bytes | bytearray):
        try:
            value.decode()
        except UnicodeDecodeError as bad:
            return MalformedEvent(f"not UTF-8: {bad}", InvalidReason.NOT_UTF8)
    message = str(exc)
    if "recursion limit" in message:
        return MalformedEvent(
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels", InvalidReason.TOO_DEEP
        )
    return MalformedEvent(f"not JSON: {message}")


def _clip(text: str, limit: int = 80) -> str:
    """``text`` short enough for a log line, whatever a hostile record put there."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_key(request_id: str) -> bytes:
    return request_id.encode()
