"""The happy paths of the routes: values, ids, events, batch, feedback, model info, health."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEATURE_NAMES,
    FEEDBACK_TOPIC,
    MODEL_NAME,
    PREDICTIONS_TOPIC,
    TARGET_SCALE_USD,
    decode_event,
)
from driftloop_model_api.settings import ModelApiSettings

from .conftest import PRODUCER, AppHarness, tiny_estimator, wait_for


def expected_usd(features: dict[str, float], scale: float = 1.0) -> float:
    import pandas as pd

    from driftloop_contracts import FEATURE_BY_NAME

    frame = pd.DataFrame([{FEATURE_BY_NAME[n].source_column: features[n] for n in FEATURE_NAMES}])
    return float(tiny_estimator(scale).predict(frame)[0]) * TARGET_SCALE_USD


#: An id of the shape nginx issues (its ``$request_id``).
NGINX_ID = "0123456789abcdef0123456789abcdef"


def test_predict_returns_usd_of_the_model_and_publishes_one_event(harness: AppHarness) -> None:
    response = harness.post("/predict", json=EXAMPLE_FEATURES, headers={"X-Request-ID": NGINX_ID})
    assert response.status_code == 200
    data = response.json()
    assert data["request_id"] == NGINX_ID
    assert response.headers["x-request-id"] == NGINX_ID
    assert data["feedback_token"].startswith("v1.")
    assert data["model_name"] == MODEL_NAME and data["model_version"] == "1"
    assert abs(data["median_house_value"] - expected_usd(EXAMPLE_FEATURES)) < 1e-6
    # The counter moves once the broker's ack is in, after the record reached the producer.
    wait_for(
        lambda: (
            harness.metrics.value("driftloop_events_published_total", topic=PREDICTIONS_TOPIC) == 1
        ),
        what="event delivered and acknowledged",
    )
    (topic, key, value), *others = harness.producer.sent
    assert not others
    assert topic == PREDICTIONS_TOPIC and key == NGINX_ID.encode()
    event = decode_event(PREDICTIONS_TOPIC, value)
    assert event.request_id == NGINX_ID and event.replica_id == "test-replica"
    assert event.features == EXAMPLE_FEATURES
    assert event.prediction == data["median_house_value"]
    assert (
        harness.metrics.value("driftloop_http_requests_total", route="/predict", status="200") == 1
    )


def test_request_id_is_generated_when_absent(harness: AppHarness) -> None:
    a = harness.post("/predict", json=EXAMPLE_FEATURES).json()["request_id"]
    b = harness.post("/predict", json=EXAMPLE_FEATURES).json()["request_id"]
    assert a and b and a != b


def test_batch_predicts_each_row_with_its_own_id_token_and_event(harness: AppHarness) -> None:
    rows = [EXAMPLE_FEATURES, {**EXAMPLE_FEATURES, "median_income_in_block": 2.0}]
    response = harness.post(
        "/predict/batch", json={"rows": rows}, headers={"X-Request-ID": NGINX_ID}
    )
    assert response.status_code == 200, response.text
    preds = response.json()["predictions"]
    assert [p["request_id"] for p in preds] == [f"{NGINX_ID}-0", f"{NGINX_ID}-1"]
    assert abs(preds[1]["median_house_value"] - expected_usd(rows[1])) < 1e-6
    assert len({p["feedback_token"] for p in preds}) == 2  # one token per row
    wait_for(lambda: len(harness.producer.sent) == 2, what="two events")
    assert {k for _, k, _ in harness.producer.sent} == {
        f"{NGINX_ID}-0".encode(),
        f"{NGINX_ID}-1".encode(),
    }


def test_feedback_with_key_and_token_is_accepted_and_published(harness: AppHarness) -> None:
    answer = harness.post("/predict", json=EXAMPLE_FEATURES).json()
    label = {
        "request_id": answer["request_id"],
        "actual": 250_000,
        "feedback_token": answer["feedback_token"],
    }
    response = harness.post("/feedback", json=label, headers=PRODUCER)
    assert response.status_code == 202, response.text
    wait_for(lambda: harness.producer.topics(FEEDBACK_TOPIC) != [], what="feedback event")
    event = decode_event(FEEDBACK_TOPIC, harness.producer.topics(FEEDBACK_TOPIC)[0])
    assert event.request_id == answer["request_id"] and event.actual == 250_000


def test_model_info_and_readiness(harness: AppHarness) -> None:
    info = harness.client.get("/model").json()
    assert info["model_version"] == "1" and info["run_id"] == "run-1"
    assert info["reference_profile_id"] == "profile-1" and info["replica_id"] == "test-replica"
    ready = harness.client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["model_version"] == "1"
    assert harness.client.get("/health/live").status_code == 200


def test_metrics_endpoint_exposes_the_agreed_names(harness: AppHarness) -> None:
    harness.post("/predict", json=EXAMPLE_FEATURES)
    text = harness.client.get("/metrics").text
    for name in (
        "driftloop_http_requests_total",
        "driftloop_http_request_duration_seconds",
        "driftloop_prediction_usd",
        "driftloop_model_info",
        "driftloop_model_reloads_total",
        "driftloop_events_buffered",
    ):
        assert name in text
    assert (
        'driftloop_model_info{model_name="california-housing",model_version="1",'
        'replica="test-replica"} 1.0' in text
    )


def test_openapi_documents_the_feature_body_with_examples(harness: AppHarness) -> None:
    spec = harness.client.get("/openapi.json").json()
    schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    body = json.dumps(schema)
    assert "block_latitude" in body and "examples" in body


def test_cache_hit_is_served_from_the_process_and_still_emits_an_event(
    settings: ModelApiSettings,
) -> None:
    from driftloop_model_api.app import create_app
    from driftloop_model_api.metrics import Metrics

    from .conftest import FakeLabelRedis, FakeSource, RecordingProducer

    producer, metrics = RecordingProducer(), Metrics("cache-replica")
    app = create_app(
        settings.model_copy(update={"cache_enabled": True}),
        source=FakeSource(),
        producer_factory=lambda: producer,
        consumer_factory=None,
        metrics=metrics,
        label_redis=FakeLabelRedis(),
    )
    with TestClient(app) as client:
        wait_for(lambda: client.get("/health/ready").status_code == 200, what="ready")
        first = client.post("/predict", json=EXAMPLE_FEATURES, headers={"X-Request-ID": "c1"})
        second = client.post("/predict", json=EXAMPLE_FEATURES, headers={"X-Request-ID": "c2"})
        assert first.json()["median_house_value"] == second.json()["median_house_value"]
        assert metrics.value("driftloop_cache_requests_total", result="miss") == 1
        assert metrics.value("driftloop_cache_requests_total", result="hit") == 1
        wait_for(lambda: len(producer.topics(PREDICTIONS_TOPIC)) == 2, what="two events")
    hits = [
        decode_event(PREDICTIONS_TOPIC, v).cache_hit for v in producer.topics(PREDICTIONS_TOPIC)
    ]
    assert hits == [False, True]
