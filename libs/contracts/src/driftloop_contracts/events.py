"""Versioned event schemas carried on Kafka, and their one decoder.

Every event is JSON with a ``schema_version``; a consumer that meets a version it does not
know gets :class:`UnknownSchemaVersion` (counted and skipped by the caller), never a crash.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, TypeAlias, overload

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .features import FEATURE_NAMES
from .topics import FEEDBACK_TOPIC, MODEL_EVENTS_TOPIC, PREDICTIONS_TOPIC

SCHEMA_VERSION: Final = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventError(ValueError):
    """A record could not be turned into an event; ``reason`` is a short metric label."""

    reason = "malformed"


class MalformedEvent(EventError):
    """Not JSON, or JSON that does not match the schema."""

    reason = "malformed"


class UnknownSchemaVersion(EventError):
    """A ``schema_version`` this build does not understand."""

    reason = "unknown_schema_version"


class UnknownTopic(EventError):
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

    def feature_row(self) -> list[float]:
        return [self.features[name] for name in FEATURE_NAMES]


class FeedbackEvent(_Event):
    """Ground truth for an earlier prediction (topic ``feedback``, key ``request_id``)."""

    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    timestamp: AwareDatetime
    actual: float = Field(description="true median_house_value in USD", allow_inf_nan=False)


class ModelPromoted(_Event):
    """A new champion (topic ``model-events``): replicas reload, the drift consumer re-baselines."""

    event_type: Literal["ModelPromoted"] = "ModelPromoted"
    model_name: str
    version: str
    run_id: str
    reason: str = ""
    timestamp: AwareDatetime = Field(default_factory=utcnow)


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


@overload
def decode_event(topic: Literal["predictions"], value: bytes | str | None) -> PredictionEvent: ...
@overload
def decode_event(topic: Literal["feedback"], value: bytes | str | None) -> FeedbackEvent: ...
@overload
def decode_event(topic: Literal["model-events"], value: bytes | str | None) -> ModelPromoted: ...
@overload
def decode_event(topic: str, value: bytes | str | None) -> Event: ...
def decode_event(topic: str, value: bytes | str | None) -> Event:
    """Parse a record value from ``topic`` into its event model (typed by the topic's name).

    Raises :class:`MalformedEvent` or :class:`UnknownSchemaVersion` with a message that says why.
    """
    schema = event_type_for(topic)
    if value is None:
        raise MalformedEvent("empty record value")
    try:
        raw = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent("event is not a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors())
        raise MalformedEvent(f"{schema.__name__} invalid: {fields}") from None


def encode_key(request_id: str) -> bytes:
    return request_id.encode()
