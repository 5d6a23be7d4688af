"""The poison corpus: record values no producer of ours writes, each with the reason a consumer
must skip it for.

Every consumer's tests run it (the contracts' decoder, the drift consumer's decoding and loop,
the ``model-events`` subscriber), so "survives any bytes" is one list, kept in one place: a
consumer that meets these must count each under its reason and go on, never raise.

:func:`poison_corpus` gives the cases every topic shares; :func:`feedback_poison` and
:func:`prediction_poison` add the ones that depend on a topic's fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .events import MAX_EVENT_BYTES, InvalidReason

#: Deeper than any JSON parser's limit (CPython's ``json`` raises RecursionError at ~1,000),
#: yet under :data:`MAX_EVENT_BYTES`, so the depth limit is what refuses it.
DEEP = 5_000
LONG_KEY = "k" * 10_000


@dataclass(frozen=True)
class PoisonCase:
    """One hostile record value, a name for test ids, and the reason it must be skipped for."""

    name: str
    value: bytes | None
    reason: InvalidReason


def _dumps(raw: Any) -> bytes:
    return json.dumps(raw).encode()  # writes NaN/Infinity literals, as a foreign producer may


def poison_corpus(valid: dict[str, Any]) -> list[PoisonCase]:
    """Cases for any topic; ``valid`` is a valid event of that topic as a JSON object."""
    malformed, unknown = InvalidReason.MALFORMED, InvalidReason.UNKNOWN_SCHEMA_VERSION
    huge = {**valid, "padding": "x" * (4 * 1024 * 1024)}
    return [
        PoisonCase("none", None, malformed),
        PoisonCase("empty", b"", malformed),
        PoisonCase("whitespace", b" \n", malformed),
        PoisonCase("not_json", b"not json", malformed),
        PoisonCase("truncated", _dumps(valid)[:-5], malformed),
        PoisonCase("not_utf8", b'{"request_id": "\xff\xfe"}', InvalidReason.NOT_UTF8),
        PoisonCase("not_utf8_binary", b"\x80\x81\x82\xff" * 16, InvalidReason.NOT_UTF8),
        PoisonCase("utf16", json.dumps(valid).encode("utf-16"), InvalidReason.NOT_UTF8),
        PoisonCase("deep_array", b"[" * DEEP + b"]" * DEEP, InvalidReason.TOO_DEEP),
        PoisonCase("deep_object", b'{"a":' * DEEP + b"1" + b"}" * DEEP, InvalidReason.TOO_DEEP),
        PoisonCase(
            "deep_array_100k",
            b"[" * 100_000 + b"]" * 100_000,
            InvalidReason.TOO_LARGE,  # refused by size before anyone parses it
        ),
        PoisonCase("huge_valid", _dumps(huge), InvalidReason.TOO_LARGE),
        PoisonCase("huge_garbage", b"x" * (MAX_EVENT_BYTES + 1), InvalidReason.TOO_LARGE),
        PoisonCase("json_list", b"[1, 2]", malformed),
        PoisonCase("json_string", b'"an event"', malformed),
        PoisonCase("json_number", b"42", malformed),
        PoisonCase("json_null", b"null", malformed),
        PoisonCase("huge_integer", b"9" * 5_000, malformed),
        PoisonCase("empty_object", b"{}", unknown),
        PoisonCase("version_only", b'{"schema_version": 1}', malformed),
        PoisonCase("version_2", _dumps({**valid, "schema_version": 2}), unknown),
        PoisonCase("version_string", _dumps({**valid, "schema_version": "1"}), unknown),
        PoisonCase("version_true", _dumps({**valid, "schema_version": True}), unknown),
        PoisonCase("version_nan", _dumps({**valid, "schema_version": float("nan")}), unknown),
        PoisonCase(
            "version_missing",
            _dumps({k: v for k, v in valid.items() if k != "schema_version"}),
            unknown,
        ),
        PoisonCase("long_key_only", _dumps({LONG_KEY: 1, "schema_version": 1}), malformed),
        PoisonCase(
            "lone_surrogate", _dumps(valid).replace(b'"schema_version"', b'"\\ud800"', 1), malformed
        ),
        PoisonCase("timestamp_infinity", _dumps({**valid, "timestamp": float("inf")}), malformed),
        PoisonCase(
            "timestamp_1e999",
            _dumps(valid).replace(b'"timestamp": ', b'"timestamp": 1e999, "x": ', 1),
            malformed,
        ),
    ]


#: An event time no clock of ours writes (before ``MIN_EVENT_TIME``): refused without knowing
#: when the record was received. (A time far in the future is refused only relative to the
#: record's receipt: see ``decode_event(received_at=...)`` and :data:`FAR_FUTURE`.)
LONG_AGO = "1999-12-31T23:59:59+00:00"
#: An event time in the year 2999: out of range for any ``received_at`` of this millennium.
FAR_FUTURE = "2999-01-01T00:00:00+00:00"


def timestamp_poison(valid: dict[str, Any]) -> list[PoisonCase]:
    """Predictions or feedback stamped before 2000: ``timestamp_out_of_range``."""
    return [
        PoisonCase(
            "timestamp_1999",
            _dumps({**valid, "timestamp": LONG_AGO}),
            InvalidReason.TIMESTAMP_OUT_OF_RANGE,
        )
    ]


def feedback_poison(valid: dict[str, Any]) -> list[PoisonCase]:
    """:func:`poison_corpus` plus feedback whose ``actual`` is not a finite number or whose
    timestamp is out of range."""
    non_finite = InvalidReason.NON_FINITE
    return [
        *poison_corpus(valid),
        *timestamp_poison(valid),
        PoisonCase("actual_nan", _dumps({**valid, "actual": float("nan")}), non_finite),
        PoisonCase("actual_infinity", _dumps({**valid, "actual": float("inf")}), non_finite),
        PoisonCase(
            "actual_1e999",
            _dumps(valid).replace(b'"actual": ', b'"actual": 1e999, "x": ', 1),
            non_finite,
        ),
        PoisonCase("actual_string", _dumps({**valid, "actual": "a lot"}), InvalidReason.MALFORMED),
        PoisonCase(
            "long_request_id", _dumps({**valid, "request_id": LONG_KEY}), InvalidReason.MALFORMED
        ),
    ]


def prediction_poison(valid: dict[str, Any]) -> list[PoisonCase]:
    """:func:`poison_corpus` plus predictions that decode but that the drift consumer refuses:
    a timestamp out of range, a non-finite or missing feature, a non-finite prediction,
    another model's prediction."""
    non_finite = InvalidReason.NON_FINITE
    feature = next(iter(valid["features"]))

    def features(**changes: Any) -> dict[str, Any]:
        return {**valid, "features": {**valid["features"], **changes}}

    missing = {k: v for k, v in valid["features"].items() if k != feature}
    return [
        *poison_corpus(valid),
        *timestamp_poison(valid),
        PoisonCase("feature_nan", _dumps(features(**{feature: float("nan")})), non_finite),
        PoisonCase("feature_infinity", _dumps(features(**{feature: float("-inf")})), non_finite),
        PoisonCase(
            "feature_1e999",
            _dumps(valid).replace(
                f'"{feature}": '.encode(), f'"{feature}": 1e999, "x": '.encode(), 1
            ),
            non_finite,
        ),
        PoisonCase(
            "prediction_infinity", _dumps({**valid, "prediction": float("inf")}), non_finite
        ),
        PoisonCase("feature_string", _dumps(features(**{feature: "big"})), InvalidReason.MALFORMED),
        PoisonCase(
            "missing_feature",
            _dumps({**valid, "features": missing}),
            InvalidReason.MISSING_FEATURE,
        ),
        PoisonCase(
            "long_request_id", _dumps({**valid, "request_id": LONG_KEY}), InvalidReason.MALFORMED
        ),
        PoisonCase(
            "other_model", _dumps({**valid, "model_name": LONG_KEY}), InvalidReason.UNKNOWN_MODEL
        ),
    ]


def tolerated(valid: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Values that are *not* poison: a valid event with fields this build does not know (a
    newer producer's additions are ignored, not refused), including a 10,000-character key."""
    return [
        ("extra_fields", _dumps({**valid, "added_later": {"a": [1, 2, {"b": None}]}})),
        ("extra_long_key", _dumps({**valid, LONG_KEY: LONG_KEY})),
    ]
