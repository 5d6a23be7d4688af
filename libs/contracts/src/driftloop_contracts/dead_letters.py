"""Dead letters: the envelope a consumer writes to ``<topic>.dlq`` for each record it skipped.

A consumer that meets a record it cannot use (an :class:`~driftloop_contracts.InvalidReason`)
counts it, skips it and copies it here, so a person can see *what* was refused and *where* it
came from without reading the source topic. The envelope (:class:`DeadLetter`, JSON) carries:

========================  ==========================================================
``source_topic``          the topic the record was read from
``partition``/``offset``  where in that topic
``reason``                the ``driftloop_events_invalid_total`` label
``error``                 why, in words (at most :data:`MAX_ERROR_CHARS` characters)
``key_b64``               the record's key, base64 (first :data:`MAX_DEAD_LETTER_BYTES`)
``key_size``              the key's full length in bytes (``None``: no key)
``value_b64``             the value's first :data:`MAX_DEAD_LETTER_BYTES` bytes, base64
``value_size``            the value's full length in bytes (``None``: no value)
``record_timestamp_ms``   the record's Kafka timestamp
``dead_lettered_at``      when it was dead-lettered
``consumer``              who dead-lettered it (client id)
========================  ==========================================================

Base64, not text: a poison value may be anything (not UTF-8, lone surrogates), and the copy
must be exact. Only the first KiB: a dead letter shows what the record was, not a second copy
of a 4 MiB one.

**Key and delivery.** Each dead letter is keyed ``<topic>:<partition>:<offset>``
(:func:`dead_letter_key`). Delivery to the dead-letter topic is *at least once*: the drift
consumer acknowledges a dead letter before it commits past the record, so a crash between the
two replays the record and writes its dead letter again, under the same key; a reader that
must count dead letters deduplicates by key. Without a crash each record is dead-lettered
exactly once.

Example::

    letter = DeadLetter.of(record.topic, record.partition, record.offset,
                           key=record.key, value=record.value, reason="malformed",
                           error="not JSON", record_timestamp_ms=record.timestamp)
    await producer.send_and_wait(dlq_topic(record.topic), letter.to_bytes(), key=letter.key)
    decode_dead_letter(value)  # -> DeadLetter, for tools and tests
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .events import EventError, utcnow

__all__ = [
    "DEAD_LETTER_SCHEMA_VERSION",
    "MAX_DEAD_LETTER_BYTES",
    "MAX_ERROR_CHARS",
    "DeadLetter",
    "dead_letter_key",
    "decode_dead_letter",
]

DEAD_LETTER_SCHEMA_VERSION: Final = 1
#: How much of a record's key and value a dead letter keeps.
MAX_DEAD_LETTER_BYTES: Final = 1024
#: How much of the error text a dead letter keeps.
MAX_ERROR_CHARS: Final = 1000


def dead_letter_key(topic: str, partition: int, offset: int) -> bytes:
    """``<topic>:<partition>:<offset>``: the same record always gets the same key."""
    return f"{topic}:{partition}:{offset}".encode()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data[:MAX_DEAD_LETTER_BYTES]).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


class DeadLetter(BaseModel):
    """A skipped record's origin and its first bytes (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = DEAD_LETTER_SCHEMA_VERSION
    source_topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    reason: str
    error: str = Field(max_length=MAX_ERROR_CHARS)
    key_b64: str | None = None
    key_size: int | None = Field(default=None, ge=0)
    value_b64: str | None = None
    value_size: int | None = Field(default=None, ge=0)
    record_timestamp_ms: int | None = None
    dead_lettered_at: AwareDatetime = Field(default_factory=utcnow)
    consumer: str = ""

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offset: int,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
        record_timestamp_ms: int | None = None,
        consumer: str = "",
        now: datetime | None = None,
    ) -> DeadLetter:
        """The dead letter of one record (key and value clipped, error clipped)."""
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            reason=str(reason),
            error=error[:MAX_ERROR_CHARS],
            key_b64=_b64(key),
            key_size=None if key is None else len(key),
            value_b64=_b64(value),
            value_size=None if value is None else len(value),
            record_timestamp_ms=record_timestamp_ms,
            dead_lettered_at=now or utcnow(),
            consumer=consumer,
        )

    @property
    def key(self) -> bytes:
        """The dead letter's own Kafka key (:func:`dead_letter_key`)."""
        return dead_letter_key(self.source_topic, self.partition, self.offset)

    @property
    def value_head(self) -> bytes | None:
        """The first bytes of the skipped record's value."""
        return _unb64(self.value_b64)

    @property
    def original_key(self) -> bytes | None:
        """The first bytes of the skipped record's key."""
        return _unb64(self.key_b64)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def decode_dead_letter(value: bytes | str | None) -> DeadLetter:
    """Parse a dead-letter record's value; raises :class:`EventError` (``malformed``) if it is
    not one, and nothing else."""
    if value is None:
        raise EventError("empty dead letter")
    try:
        letter = DeadLetter.model_validate_json(value)
        letter.value_head  # noqa: B018 - checks the base64 now, not when a reader needs it
        letter.original_key  # noqa: B018
    except (ValidationError, ValueError, binascii.Error) as exc:
        raise EventError(f"not a dead letter: {str(exc)[:300]}") from None
    return letter
