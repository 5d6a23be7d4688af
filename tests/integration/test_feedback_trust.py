"""Issue 14's attacks on the labels, each through nginx against the real stack, each refused
with its documented status (docs/api.md, "Feedback"), counted, and never joined; a genuine
label is accepted and reaches the labelled-data log exactly once with its first value.

Also the nginx surface: only the public routes are forwarded, and a client never chooses a
prediction's id (the 125+ character ``X-Request-ID`` that made ``/predict/batch`` answer 500).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from driftloop_cli.nginx_config import PUBLIC_ROUTES
from driftloop_cli.observe import scrape_metrics
from driftloop_contracts import (
    API_KEY_HEADER,
    CORRELATION_ID_HEADER,
    EXAMPLE_FEATURES,
    FeedbackApiKeySettings,
)
from driftloop_model_api.settings import ModelApiSettings
from driftloop_model_api.tokens import FeedbackTokens

pytestmark = pytest.mark.integration

PRODUCER = {API_KEY_HEADER: FeedbackApiKeySettings().producer_key}
#: What every 404 at nginx answers (the replicas' own 404 body for an unknown route).
NOT_FOUND = {"error": "http_error", "message": "Not Found", "detail": []}


def poll(what: str, predicate: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(stack: Any, champion: str) -> Any:
    """An nginx client once every replica serves the champion."""
    with httpx.Client(base_url=stack.nginx_url, timeout=10) as client:

        def serving() -> bool:
            try:
                ready = [httpx.get(f"{u}/health/ready", timeout=2) for u in stack.model_api_urls]
                return all(r.status_code == 200 for r in ready)
            except httpx.HTTPError:
                return False

        poll("every replica ready", serving, 180)
        yield client


def predict(api: httpx.Client, **headers: str) -> dict[str, Any]:
    r = api.post("/predict", json=EXAMPLE_FEATURES, headers=headers)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def label(answer: dict[str, Any], actual: float, **changes: Any) -> dict[str, Any]:
    return {
        "request_id": answer["request_id"],
        "actual": actual,
        "feedback_token": answer["feedback_token"],
        **changes,
    }


def rejections(stack: Any) -> dict[str, float]:
    """``driftloop_feedback_rejected_total`` by reason, summed over the replicas (scraped
    directly: nginx does not forward /metrics)."""
    samples = scrape_metrics(stack.model_api_urls)
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "driftloop_feedback_rejected_total"
    }


def labelled_rows(root: Path, ids: set[str]) -> pd.DataFrame:
    """Every row of the labelled-data log for ``ids``, raw (no dedupe)."""
    frames = [pd.read_parquet(p) for p in sorted(root.rglob("part-*.parquet"))]
    if not frames:
        return pd.DataFrame(columns=["request_id", "actual"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame["request_id"].isin(ids)]


def test_every_attack_is_refused_and_only_the_genuine_label_is_joined(
    stack: Any, api: httpx.Client
) -> None:
    before = rejections(stack)
    key = ModelApiSettings().feedback_token_key.get_secret_value().encode()
    genuine = predict(api)
    other = predict(api)
    unlabelled = predict(api)
    expected: dict[str, int] = {}

    def refused(
        body: dict[str, Any] | bytes, headers: dict[str, str], status: int, code: str
    ) -> None:
        if isinstance(body, bytes):
            r = api.post("/feedback", content=body, headers=headers)
        else:
            r = api.post("/feedback", json=body, headers=headers)
        assert r.status_code == status, (code, r.status_code, r.text)
        payload = r.json()
        assert set(payload) == {"error", "message", "detail"} and payload["error"] == code
        assert payload["detail"] and payload["detail"][0]["field"] in payload["message"]
        expected[code] = expected.get(code, 0) + 1

    # The issue's first attack, verbatim: a label for a prediction that never happened.
    never = {"request_id": "never-issued-123", "actual": 1.0}
    refused(never, PRODUCER, 403, "invalid_feedback_token")
    # ... and with a real token of another prediction: still not this id's.
    refused(
        label(other, 1.0, request_id="never-issued-123"), PRODUCER, 403, "invalid_feedback_token"
    )
    # Label producers only.
    refused(label(unlabelled, 1.0), {}, 401, "missing_api_key")
    refused(
        label(unlabelled, 1.0), {API_KEY_HEADER: "not-a-producer-key-000"}, 403, "invalid_api_key"
    )
    # A token altered by one character, and one minted with another key.
    token = unlabelled["feedback_token"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    refused(
        label(unlabelled, 1.0, feedback_token=tampered), PRODUCER, 403, "invalid_feedback_token"
    )
    forged = FeedbackTokens(b"f" * 32, 60).issue(unlabelled["request_id"], "1")
    refused(label(unlabelled, 1.0, feedback_token=forged), PRODUCER, 403, "invalid_feedback_token")
    # A genuine token (the stack's key) issued longer ago than its lifetime.
    ttl = ModelApiSettings().feedback_token_ttl_seconds
    old = FeedbackTokens(key, ttl).issue(
        unlabelled["request_id"], unlabelled["model_version"], issued_at=int(time.time()) - ttl - 5
    )
    refused(label(unlabelled, 1.0, feedback_token=old), PRODUCER, 410, "feedback_token_expired")

    # The genuine label is accepted; the issue's relabel attack is refused, the first stands.
    first = api.post("/feedback", json=label(genuine, 123_456.0), headers=PRODUCER)
    assert first.status_code == 202, first.text
    refused(label(genuine, 987_654.0), PRODUCER, 409, "already_labelled")

    after = rejections(stack)
    counted = {code: after.get(code, 0) - before.get(code, 0) for code in expected}
    assert counted == expected
    assert sum(after.values()) - sum(before.values()) == sum(expected.values())

    # Joined: the genuine label reaches the labelled-data log, once, with its first value;
    # nothing refused ever does.
    root = stack.state_dir / "labelled"
    ids = {genuine["request_id"], other["request_id"], unlabelled["request_id"], "never-issued-123"}
    poll("the genuine label in the labelled-data log", lambda: not labelled_rows(root, ids).empty)
    rows = labelled_rows(root, ids)
    assert rows["request_id"].tolist() == [genuine["request_id"]]
    assert rows["actual"].tolist() == [123_456.0]


def test_each_batch_row_is_labelled_with_its_own_token(api: httpx.Client) -> None:
    r = api.post("/predict/batch", json={"rows": [EXAMPLE_FEATURES] * 3})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert len({row["feedback_token"] for row in rows}) == 3
    crossed = label(rows[0], 1.0, feedback_token=rows[1]["feedback_token"])
    assert api.post("/feedback", json=crossed, headers=PRODUCER).status_code == 403
    for row in rows:
        answer = api.post("/feedback", json=label(row, 200_000.0), headers=PRODUCER)
        assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("client_id", ["my-chosen-id", "x" * 125, "y" * 400, "bad id/?"])
def test_a_client_chosen_request_id_is_never_the_predictions_id(
    api: httpx.Client, route: str, client_id: str
) -> None:
    """The issue's second attack (choosing ids) and its known 500: the answer's id is nginx's,
    the client's id comes back only as X-Correlation-ID, and only when well formed."""
    body = EXAMPLE_FEATURES if route == "/predict" else {"rows": [EXAMPLE_FEATURES] * 2}
    r = api.post(route, json=body, headers={"X-Request-ID": client_id})
    assert r.status_code == 200, r.text
    issued = r.json()["request_id"]
    assert issued != client_id and len(issued) == 32
    assert r.headers["x-request-id"] == issued
    sane = client_id in ("my-chosen-id", "x" * 125)
    assert r.headers.get(CORRELATION_ID_HEADER) == (client_id if sane else None)


def test_nginx_forwards_only_the_public_routes(stack: Any, api: httpx.Client) -> None:
    for path in ("/metrics", "/health/ready", "/health/live", "/docs/oauth2-redirect", "/x"):
        r = api.get(path)
        assert r.status_code == 404, path
        assert r.json() == NOT_FOUND, path
    assert api.get("/model").status_code == 200
    assert api.get("/openapi.json").json()["paths"].keys() >= {"/predict", "/feedback"}
    assert api.get("/nginx/health").status_code == 200
    for path in PUBLIC_ROUTES:  # every public route reaches a replica (no nginx 404)
        assert api.request("OPTIONS", path).json() != NOT_FOUND, path
    # The replicas still answer their internals directly (Prometheus, the supervisor).
    for url in stack.model_api_urls:
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200
