"""`driftloop dead-letters` formatting: newest first, origin as topic:partition:offset, any
bytes shown escaped on one short line, a record that is not a dead letter named as such."""

from __future__ import annotations

from datetime import UTC, datetime

from driftloop_cli.commands.dead_letters import DeadLetterRecord, rows
from driftloop_contracts import DeadLetter


def letter(offset: int, value: bytes | None) -> DeadLetter:
    return DeadLetter.of(
        "feedback",
        2,
        offset,
        key=None,
        value=value,
        reason="not_utf8",
        error="not UTF-8",
        now=datetime(2026, 12, 6, 7, 30, tzinfo=UTC),
    )


def test_rows_are_newest_first_with_origin_and_escaped_first_bytes() -> None:
    records = [
        DeadLetterRecord(0, b"feedback:2:5", letter(5, b"\xff\xfe[bold]x\n" + b"y" * 100)),
        DeadLetterRecord(1, b"feedback:2:9", letter(9, None)),
        DeadLetterRecord(2, b"k", None, "not a dead letter: ..."),
    ]
    shown = rows(records)
    assert [r["origin"] for r in shown] == ["(dlq offset 2)", "feedback:2:9", "feedback:2:5"]
    assert shown[1]["value"] == "(none)" and shown[1]["size"] == ""
    value = shown[2]["value"]
    assert value.startswith("\\xff\\xfe[bold]x\\n") and value.endswith("...")
    assert "\n" not in value and len(value) < 120
    assert shown[2]["size"] == "110" and shown[2]["when"] == "2026-12-06 07:30:00"
    assert shown[0]["reason"] == "not a dead letter"
