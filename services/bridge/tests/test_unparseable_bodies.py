"""Any body the bridge cannot parse is a 422 in the one error body, never a 500: deeply nested
JSON (CPython's ``json`` raises RecursionError), bytes that are not UTF-8, JSON of the wrong
shape, numbers out of range, and strings that are not valid Unicode."""

from __future__ import annotations

import json
from typing import Any

import pytest

DEEP = 100_000


def _grafana(**alert: Any) -> bytes:
    from .conftest import fixture_json

    body = fixture_json("grafana_firing.json")
    body["alerts"][0].update(alert)
    return json.dumps(body).encode()


BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "not_json": b"not json",
    "truncated": b'{"alerts": [',
    "deep_array": b"[" * DEEP + b"]" * DEEP,
    "deep_object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep_inside_alerts": b'{"alerts": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "not_utf8": b'{"alerts": "\xff\xfe"}',
    "binary": b"\x80\x81\x82\xff" * 64,
    "json_list": b"[1, 2]",
    "json_string": b'"alert"',
    "json_number": b"1e999",
    "json_null": b"null",
    "huge_integer": b'{"alerts": ' + b"9" * 5_000 + b"}",
    "empty_object": b"{}",
    "lone_surrogate_label": _grafana(labels={"alertname": "\ud800"}),
    "long_key": json.dumps({"k" * 10_000: 1}).encode(),
}


@pytest.mark.parametrize("source", ["grafana", "alertmanager"])
@pytest.mark.parametrize("name", list(BODIES))
async def test_any_unparseable_body_is_a_422_in_the_one_error_shape(
    harness: Any, fake_trigger: Any, source: str, name: str
) -> None:
    resp = await harness.post(source, BODIES[name])
    assert resp.status_code == 422, resp.text[:300]
    body = resp.json()
    assert set(body) == {"error", "message", "detail"}, body
    assert body["error"] == "invalid_payload"
    assert body["detail"] and all(set(d) == {"field", "rule", "message"} for d in body["detail"])
    assert len(resp.content) < 4_000  # names the problem, does not echo the body
    assert fake_trigger.calls == []
    value = harness.bridge.metrics.registry.get_sample_value(
        "driftloop_bridge_decisions_total", {"source": source, "decision": "invalid"}
    )
    assert value == 1


async def test_a_valid_payload_after_the_poison_is_still_accepted(
    harness: Any, payload: Any, fake_trigger: Any
) -> None:
    for raw in BODIES.values():
        assert (await harness.post("grafana", raw)).status_code == 422
    resp = await harness.post("grafana", payload("grafana_firing.json"))
    assert resp.status_code == 202, resp.text
    assert len(fake_trigger.calls) == 1
