"""Every bad input is a 4xx that names the field and the rule, and never produces an event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from driftloop_contracts import EXAMPLE_FEATURES, FEEDBACK_TOPIC, PREDICTIONS_TOPIC

from .conftest import PRODUCER, AppHarness


def body(**changes: Any) -> bytes:
    data: dict[str, Any] = {**EXAMPLE_FEATURES, **changes}
    return json.dumps(data).encode()


def without(name: str) -> bytes:
    return json.dumps({k: v for k, v in EXAMPLE_FEATURES.items() if k != name}).encode()


def literal(name: str, text: str) -> bytes:
    """A body with a raw JSON literal (NaN, Infinity...) that json.dumps would not write."""
    return body(**{name: 123456.0}).replace(b"123456.0", text.encode())


def batch(rows: list[Any]) -> bytes:
    return json.dumps({"rows": rows}).encode()


HEADERS = {"content-type": "application/json"}

# (case id, path, raw body, extra headers, status, field, rule)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str, str]] = [
    ("missing_field", "/predict", without("average_rooms"), {}, 422, "average_rooms", "missing"),
    (
        "wrong_type_text",
        "/predict",
        body(average_rooms="many"),
        {},
        422,
        "average_rooms",
        "float_type",
    ),
    (
        "string_number",
        "/predict",
        body(block_latitude="37.88"),
        {},
        422,
        "block_latitude",
        "float_type",
    ),
    (
        "boolean",
        "/predict",
        body(median_income_in_block=True),
        {},
        422,
        "median_income_in_block",
        "float_type",
    ),
    ("null", "/predict", body(average_bedrooms=None), {}, 422, "average_bedrooms", "float_type"),
    (
        "list_value",
        "/predict",
        body(average_bedrooms=[1, 2]),
        {},
        422,
        "average_bedrooms",
        "float_type",
    ),
    (
        "nan_literal",
        "/predict",
        literal("median_house_age_in_block", "NaN"),
        {},
        422,
        "median_house_age_in_block",
        "finite_number",
    ),
    (
        "infinity_literal",
        "/predict",
        literal("population_per_block", "Infinity"),
        {},
        422,
        "population_per_block",
        "finite_number",
    ),
    (
        "minus_infinity_literal",
        "/predict",
        literal("block_longitude", "-Infinity"),
        {},
        422,
        "block_longitude",
        "finite_number",
    ),
    (
        "overflow_to_inf",
        "/predict",
        literal("average_house_occupancy", "1e400"),
        {},
        422,
        "average_house_occupancy",
        "finite_number",
    ),
    (
        "negative_rooms",
        "/predict",
        body(average_rooms=-1.0),
        {},
        422,
        "average_rooms",
        "greater_than_equal",
    ),
    (
        "latitude_outside_california",
        "/predict",
        body(block_latitude=51.5),
        {},
        422,
        "block_latitude",
        "less_than_equal",
    ),
    (
        "longitude_outside_california",
        "/predict",
        body(block_longitude=-130.0),
        {},
        422,
        "block_longitude",
        "greater_than_equal",
    ),
    ("extra_field", "/predict", body(colour="blue"), {}, 422, "colour", "extra_forbidden"),
    ("empty_body", "/predict", b"", {}, 422, "body", "required"),
    ("blank_body", "/predict", b"  \n", {}, 422, "body", "required"),
    (
        "malformed_json",
        "/predict",
        b'{"median_income_in_block": 8.3,',
        {},
        422,
        "body",
        "json_invalid",
    ),
    ("array_body", "/predict", b"[1, 2, 3]", {}, 422, "body", "model_type"),
    (
        "oversized_body",
        "/predict",
        b'{"pad": "' + b"x" * 5000 + b'"}',
        {},
        413,
        "body",
        "max_bytes",
    ),
    (
        "not_json_media_type",
        "/predict",
        body(),
        {"content-type": "text/plain"},
        415,
        "Content-Type",
        "json_content_type",
    ),
    (
        "batch_too_large",
        "/predict/batch",
        batch([EXAMPLE_FEATURES] * 6),
        {},
        422,
        "rows",
        "too_long",
    ),
    ("batch_empty", "/predict/batch", batch([]), {}, 422, "rows", "too_short"),
    (
        "batch_bad_row",
        "/predict/batch",
        batch([EXAMPLE_FEATURES, {**EXAMPLE_FEATURES, "average_rooms": 0}]),
        {},
        422,
        "rows.1.average_rooms",
        "greater_than_equal",
    ),
    ("batch_not_a_list", "/predict/batch", b'{"rows": 3}', {}, 422, "rows", "list_type"),
    (
        "feedback_missing_actual",
        "/feedback",
        b'{"request_id": "abc"}',
        PRODUCER,
        422,
        "actual",
        "missing",
    ),
    (
        "feedback_negative_actual",
        "/feedback",
        b'{"request_id": "abc", "actual": -5}',
        PRODUCER,
        422,
        "actual",
        "greater_than_equal",
    ),
    (
        "feedback_nan_actual",
        "/feedback",
        b'{"request_id": "abc", "actual": NaN}',
        PRODUCER,
        422,
        "actual",
        "finite_number",
    ),
    (
        "feedback_missing_token_and_actual",
        "/feedback",
        b'{"request_id": "abc"}',
        PRODUCER,
        422,
        "feedback_token",
        "missing",
    ),
    (
        "feedback_bad_request_id",
        "/feedback",
        b'{"request_id": "a b", "actual": 1.0}',
        PRODUCER,
        422,
        "request_id",
        "string_pattern_mismatch",
    ),
]


@pytest.mark.parametrize(
    ("path", "raw", "headers", "status", "field", "rule"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input_is_4xx_naming_field_and_no_event(
    harness: AppHarness,
    path: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    field: str,
    rule: str,
) -> None:
    response = harness.post(path, content=raw, headers={**HEADERS, **headers})
    assert response.status_code == status, response.text
    payload = response.json()
    assert field in payload["message"]
    assert rule in payload["message"]
    assert any(d["field"] == field and d["rule"] == rule for d in payload["detail"]), payload
    assert harness.producer.sent == []
    for topic in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC):
        assert harness.metrics.value("driftloop_events_buffered", topic=topic) == 0


def test_table_has_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


def test_no_content_type_is_accepted_as_json(harness: AppHarness) -> None:
    response = harness.post("/predict", content=body())
    assert response.status_code == 200


def test_integers_are_numbers(harness: AppHarness) -> None:
    response = harness.post("/predict", content=body(median_house_age_in_block=41), headers=HEADERS)
    assert response.status_code == 200, response.text


def test_unknown_route_is_404_json(harness: AppHarness) -> None:
    response = harness.client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "http_error"


def test_wrong_method_is_405(harness: AppHarness) -> None:
    assert harness.client.get("/predict").status_code == 405


async def test_client_gone_mid_body_is_a_client_error_not_a_500() -> None:
    """A client that disconnects mid-body (a stopped load generator) gets no traceback."""
    from starlette.requests import Request
    from starlette.types import Message

    from driftloop_model_api.errors import ClientDisconnected, ClientError
    from driftloop_model_api.inputs import read_body

    messages: Iterator[Message] = iter(
        [{"type": "http.request", "body": b'{"request_id": ', "more_body": True},
         {"type": "http.disconnect"}]
    )  # fmt: skip

    async def receive() -> Message:
        return next(messages)

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(ClientDisconnected) as caught:
        await read_body(request, 1024)
    assert isinstance(caught.value, ClientError) and caught.value.status_code < 500
