"""`driftloop dead-letters`: the newest records driftloop skipped, with where they came from.

Reads ``<topic>.dlq`` (see :mod:`driftloop_contracts.dead_letters`) without a consumer group,
so looking never moves anyone's offsets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from driftloop_contracts import EVENT_TOPICS, DeadLetter, EventError, decode_dead_letter, dlq_topic

#: What `--topic` accepts: the event topics.
TOPIC_NAMES = tuple(t.name for t in EVENT_TOPICS)


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a dead-letter topic: its own offset and key, and the decoded envelope
    (``None`` if it is not one, with ``problem`` saying why)."""

    dlq_offset: int
    key: bytes | None
    letter: DeadLetter | None
    problem: str = ""


async def read_dead_letters(
    bootstrap: str, topic: str, *, limit: int | None = None, timeout_s: float = 10.0
) -> list[DeadLetterRecord]:
    """The newest ``limit`` (default: all) dead letters of ``topic``, oldest first."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(dlq_topic(topic), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        start = (await consumer.beginning_offsets([tp]))[tp]
        if limit is not None:
            start = max(start, end - limit)
        consumer.seek(tp, start)
        got: dict[int, DeadLetterRecord] = {}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(got) < end - start:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"read {len(got)} of {end - start} dead letters of {topic}")
            batches = await consumer.getmany(tp, timeout_ms=500)
            for record in batches.get(tp, []):
                if start <= record.offset < end:
                    got[record.offset] = _decoded(record)
            missing = next((o for o in range(start, end) if o not in got), None)
            if missing is not None and await consumer.position(tp) >= end:
                # The local broker can return a later record before an earlier one is
                # stored (see the drift consumer's fetch gaps): read again from the gap.
                consumer.seek(tp, missing)
        out = [got[o] for o in range(start, end)]
        return out
    finally:
        await consumer.stop()


def _decoded(record: Any) -> DeadLetterRecord:
    try:
        return DeadLetterRecord(record.offset, record.key, decode_dead_letter(record.value))
    except EventError as exc:
        return DeadLetterRecord(record.offset, record.key, None, str(exc))


def _printable(data: bytes | None, limit: int = 60) -> str:
    """A hostile value as one short, safe line (escapes, not raw bytes)."""
    if data is None:
        return "(none)"
    text = repr(data[:limit])[2:-1]
    return text + ("..." if len(data) > limit else "")


def rows(records: list[DeadLetterRecord]) -> list[dict[str, str]]:
    """One display row per dead letter, newest first."""
    out = []
    for r in reversed(records):
        if r.letter is None:
            out.append(
                {
                    "origin": f"(dlq offset {r.dlq_offset})",
                    "reason": "not a dead letter",
                    "error": r.problem,
                    "value": "",
                    "size": "",
                    "when": "",
                }
            )
            continue
        letter = r.letter
        out.append(
            {
                "when": letter.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S"),
                "origin": f"{letter.source_topic}:{letter.partition}:{letter.offset}",
                "reason": letter.reason,
                "error": letter.error[:80],
                "size": "" if letter.value_size is None else str(letter.value_size),
                "value": _printable(letter.value_head),
            }
        )
    return out
