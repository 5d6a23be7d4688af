"""Request ids are ours: a client's id is never the prediction's id, only echoed when sane."""

from __future__ import annotations

import re

import pytest

from driftloop_contracts import EXAMPLE_FEATURES
from driftloop_model_api.request_ids import ISSUED_ID_PATTERN

from .conftest import AppHarness

NGINX_ID = "fedcba9876543210fedcba9876543210"


def test_nginx_id_is_used_and_no_correlation_echoed(harness: AppHarness) -> None:
    r = harness.post("/predict", json=EXAMPLE_FEATURES, headers={"X-Request-ID": NGINX_ID})
    assert r.json()["request_id"] == NGINX_ID
    assert "x-correlation-id" not in r.headers


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
@pytest.mark.parametrize(
    "client_id", ["my-chosen-id", "x" * 125, "y" * 300, "has spaces/and?", "NGINX" * 7]
)
def test_a_client_chosen_id_is_replaced_and_echoed_only_when_sane(
    harness: AppHarness, route: str, client_id: str
) -> None:
    """Long or malformed ids (the old 500 on /predict/batch) are ignored, never an error."""
    body = EXAMPLE_FEATURES if route == "/predict" else {"rows": [EXAMPLE_FEATURES] * 2}
    r = harness.post(route, json=body, headers={"X-Request-ID": client_id})
    assert r.status_code == 200, r.text
    issued = r.json()["request_id"]
    assert issued != client_id and re.match(ISSUED_ID_PATTERN, issued)
    assert r.headers["x-request-id"] == issued
    sane = re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", client_id) is not None
    assert r.headers.get("x-correlation-id") == (client_id if sane else None)


def test_correlation_header_is_echoed_and_wins_over_x_request_id(harness: AppHarness) -> None:
    r = harness.post(
        "/predict",
        json=EXAMPLE_FEATURES,
        headers={"X-Request-ID": NGINX_ID, "X-Correlation-ID": "trace-42"},
    )
    assert r.json()["request_id"] == NGINX_ID
    assert r.headers["x-correlation-id"] == "trace-42"
    long = harness.post("/predict", json=EXAMPLE_FEATURES, headers={"X-Correlation-ID": "z" * 129})
    assert long.status_code == 200 and "x-correlation-id" not in long.headers
