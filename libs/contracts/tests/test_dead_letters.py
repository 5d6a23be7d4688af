"""dead_letters.py and the dead-letter topics: the envelope keeps a record's origin and first
bytes exactly, its key identifies the record, and the topics exist wherever topics are made."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from driftloop_contracts import (
    DEAD_LETTER_TOPICS,
    EVENT_TOPICS,
    MAX_DEAD_LETTER_BYTES,
    TOPICS,
    DeadLetter,
    EventError,
    decode_dead_letter,
    dlq_topic,
)
from driftloop_contracts.poison import DEEP, LONG_KEY

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


def test_every_event_topic_has_a_dead_letter_topic_and_both_are_created() -> None:
    assert dlq_topic("predictions") == "predictions.dlq"
    names = {t.name for t in TOPICS}
    assert {dlq_topic(t.name) for t in EVENT_TOPICS} == {t.name for t in DEAD_LETTER_TOPICS}
    assert names == {t.name for t in EVENT_TOPICS} | {t.name for t in DEAD_LETTER_TOPICS}


@pytest.mark.parametrize(
    "value",
    [None, b"", b"\xff\xfe\x00not utf8", b"[" * DEEP, LONG_KEY.encode()],
    ids=["none", "empty", "binary", "deep", "long"],
)
def test_a_dead_letter_round_trips_its_origin_and_first_bytes(value: bytes | None) -> None:
    letter = DeadLetter.of(
        "feedback",
        3,
        41,
        key=b"\x00" + LONG_KEY.encode(),
        value=value,
        reason="malformed",
        error="x" * 5_000,
        record_timestamp_ms=1_765_000_000_000,
        consumer="drift-consumer-a",
        now=NOW,
    )
    back = decode_dead_letter(letter.to_bytes())
    assert back == letter
    assert back.key == b"feedback:3:41"
    assert (back.source_topic, back.partition, back.offset, back.reason) == (
        "feedback",
        3,
        41,
        "malformed",
    )
    assert back.value_head == (None if value is None else value[:MAX_DEAD_LETTER_BYTES])
    assert back.value_size == (None if value is None else len(value))
    assert back.original_key == (b"\x00" + LONG_KEY.encode())[:MAX_DEAD_LETTER_BYTES]
    assert back.key_size == len(LONG_KEY) + 1
    assert len(back.error) == 1000 and back.dead_lettered_at == NOW
    assert len(letter.to_bytes()) < 4 * MAX_DEAD_LETTER_BYTES  # bounded, whatever the record


def test_the_same_record_always_gets_the_same_key() -> None:
    def letter(now: datetime) -> DeadLetter:
        return DeadLetter.of(
            "predictions", 0, 7, key=None, value=b"x", reason="malformed", error="e", now=now
        )

    assert letter(NOW).key == letter(datetime.now(UTC)).key == b"predictions:0:7"


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not json", b"{}", b'{"source_topic": "p"}', b"[" * DEEP],
)
def test_what_is_not_a_dead_letter_is_an_event_error(value: bytes | None) -> None:
    with pytest.raises(EventError):
        decode_dead_letter(value)


def test_bad_base64_is_refused_when_decoded_not_when_read() -> None:
    raw = DeadLetter.of(
        "feedback", 0, 0, key=None, value=b"v", reason="malformed", error="e", now=NOW
    ).model_dump()
    raw["value_b64"] = "not base64!"
    with pytest.raises(EventError):
        decode_dead_letter(DeadLetter.model_construct(**raw).model_dump_json())
