"""``POST /feedback``: every refusal has its status, its error body and its count; the first
label wins; nothing refused is published."""

from __future__ import annotations

from typing import Any

import pytest

from driftloop_contracts import EXAMPLE_FEATURES, FEEDBACK_TOPIC
from driftloop_model_api.settings import ModelApiSettings
from driftloop_model_api.tokens import FeedbackTokens

from .conftest import PRODUCER, AppHarness, wait_for


def predicted(harness: AppHarness) -> dict[str, Any]:
    answer: dict[str, Any] = harness.post("/predict", json=EXAMPLE_FEATURES).json()
    return answer


def label(answer: dict[str, Any], actual: float = 250_000.0, **changes: Any) -> dict[str, Any]:
    return {
        "request_id": answer["request_id"],
        "actual": actual,
        "feedback_token": answer["feedback_token"],
        **changes,
    }


def rejected(harness: AppHarness, reason: str) -> float:
    return harness.metrics.value("driftloop_feedback_rejected_total", reason=reason)


def assert_refused(
    response: Any, harness: AppHarness, status: int, code: str, field: str, rule: str
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert field in body["message"] and rule in body["message"]
    assert body["detail"] == [
        {"field": field, "rule": rule, "message": body["detail"][0]["message"]}
    ]
    assert rejected(harness, code) == 1
    assert harness.producer.topics(FEEDBACK_TOPIC) == []


def test_every_reason_is_counted_from_zero(harness: AppHarness) -> None:
    text = harness.client.get("/metrics").text
    for reason in (
        "missing_api_key",
        "invalid_api_key",
        "invalid_input",
        "invalid_feedback_token",
        "feedback_token_expired",
        "already_labelled",
        "label_store_unavailable",
    ):
        assert f'driftloop_feedback_rejected_total{{reason="{reason}"' in text


def test_no_api_key_is_401(harness: AppHarness) -> None:
    r = harness.post("/feedback", json=label(predicted(harness)))
    assert_refused(r, harness, 401, "missing_api_key", "X-API-Key", "required")
    assert r.headers["www-authenticate"].startswith("ApiKey")


def test_a_wrong_api_key_is_403_before_the_body_is_read(harness: AppHarness) -> None:
    r = harness.post("/feedback", content=b"not json", headers={"X-API-Key": "x" * 40})
    assert_refused(r, harness, 403, "invalid_api_key", "X-API-Key", "unknown_key")


def test_a_never_issued_id_is_403(harness: AppHarness) -> None:
    """The issue's first attack: a label for a prediction that never happened."""
    answer = predicted(harness)
    r = harness.post(
        "/feedback", json=label(answer, request_id="never-issued-123"), headers=PRODUCER
    )
    assert_refused(r, harness, 403, "invalid_feedback_token", "feedback_token", "signature")


def test_the_issues_attack_body_without_a_token_is_403(harness: AppHarness) -> None:
    """``{"request_id": "never-issued-123", "actual": 1.0}`` verbatim, with a producer key."""
    r = harness.post(
        "/feedback", json={"request_id": "never-issued-123", "actual": 1.0}, headers=PRODUCER
    )
    assert_refused(r, harness, 403, "invalid_feedback_token", "feedback_token", "required")


def test_a_forged_token_is_403(harness: AppHarness) -> None:
    answer = predicted(harness)
    forged = FeedbackTokens(b"f" * 32, 3600).issue(answer["request_id"], answer["model_version"])
    r = harness.post("/feedback", json=label(answer, feedback_token=forged), headers=PRODUCER)
    assert_refused(r, harness, 403, "invalid_feedback_token", "feedback_token", "signature")


def test_a_second_label_is_409_and_the_first_stands(harness: AppHarness) -> None:
    """The issue's second attack: relabelling an id."""
    answer = predicted(harness)
    first = harness.post("/feedback", json=label(answer, 100_000.0), headers=PRODUCER)
    assert first.status_code == 202, first.text
    again = harness.post("/feedback", json=label(answer, 900_000.0), headers=PRODUCER)
    assert again.status_code == 409 and again.json()["error"] == "already_labelled"
    assert rejected(harness, "already_labelled") == 1
    wait_for(lambda: len(harness.producer.topics(FEEDBACK_TOPIC)) == 1, what="one label")
    assert b"100000.0" in harness.producer.topics(FEEDBACK_TOPIC)[0]
    (key,) = harness.labels.data
    assert key.endswith(answer["request_id"])
    assert harness.labels.data[key][1] == 86_400  # remembered as long as a token lives


def test_the_same_label_again_is_a_retry_and_accepted(harness: AppHarness) -> None:
    """nginx re-sends a label whose replica died after recording it but before answering: the
    same value is accepted again (and published again: the consumer keeps one row), never 409."""
    answer = predicted(harness)
    first = harness.post("/feedback", json=label(answer, 100_000.0), headers=PRODUCER)
    again = harness.post("/feedback", json=label(answer, 100_000.0), headers=PRODUCER)
    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert rejected(harness, "already_labelled") == 0
    wait_for(lambda: len(harness.producer.topics(FEEDBACK_TOPIC)) == 2, what="both published")
    other = harness.post("/feedback", json=label(answer, 100_001.0), headers=PRODUCER)
    assert other.status_code == 409, other.text


def test_each_batch_row_is_labelled_with_its_own_token(harness: AppHarness) -> None:
    rows = harness.post("/predict/batch", json={"rows": [EXAMPLE_FEATURES] * 2}).json()
    first, second = rows["predictions"]
    crossed = label(first, feedback_token=second["feedback_token"])
    refused = harness.post("/feedback", json=crossed, headers=PRODUCER)
    assert refused.status_code == 403
    for row in (first, second):
        assert harness.post("/feedback", json=label(row), headers=PRODUCER).status_code == 202


def test_an_expired_token_is_410(settings: ModelApiSettings, harness: AppHarness) -> None:
    answer = predicted(harness)
    old = FeedbackTokens(settings.feedback_token_key.get_secret_value().encode(), 60).issue(
        answer["request_id"], answer["model_version"], issued_at=1_000_000_000
    )
    r = harness.post("/feedback", json=label(answer, feedback_token=old), headers=PRODUCER)
    assert_refused(r, harness, 410, "feedback_token_expired", "feedback_token", "expired")


def test_redis_down_is_503_and_nothing_is_published(harness: AppHarness) -> None:
    answer = predicted(harness)
    harness.labels.down = True
    r = harness.post("/feedback", json=label(answer), headers=PRODUCER)
    assert r.status_code == 503 and r.json()["error"] == "label_store_unavailable"
    assert r.headers["retry-after"] == "1"
    assert rejected(harness, "label_store_unavailable") == 1
    harness.labels.down = False  # the producer's retry then succeeds
    assert harness.post("/feedback", json=label(answer), headers=PRODUCER).status_code == 202


def test_a_bad_body_is_422_and_counted(harness: AppHarness) -> None:
    r = harness.post("/feedback", json={"request_id": "abc", "actual": -1}, headers=PRODUCER)
    assert r.status_code == 422
    assert rejected(harness, "invalid_input") == 1


@pytest.mark.parametrize("keys", ["first-producer-key-0001,second-producer-key-002"])
def test_any_configured_key_is_accepted(settings: ModelApiSettings, keys: str) -> None:
    from fastapi.testclient import TestClient

    from driftloop_model_api.app import create_app

    from .conftest import FakeLabelRedis, FakeSource, RecordingProducer

    configured = ModelApiSettings.model_validate(
        {**settings.model_dump(), "feedback_api_keys": keys}
    )
    app = create_app(
        configured,
        source=FakeSource(),
        producer_factory=RecordingProducer,
        consumer_factory=None,
        label_redis=FakeLabelRedis(),
    )
    with TestClient(app) as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200, what="ready")
        for key in keys.split(","):
            answer = client.post("/predict", json=EXAMPLE_FEATURES).json()
            r = client.post("/feedback", json=label(answer), headers={"X-API-Key": key})
            assert r.status_code == 202, r.text
        r = client.post("/feedback", json=label(answer), headers=PRODUCER)
        assert r.status_code == 403  # the local default is not among them
