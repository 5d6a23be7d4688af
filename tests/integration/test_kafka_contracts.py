"""Contract events through the real Tansu broker: serialize, produce, consume, parse."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from driftloop_contracts import (
    EXAMPLE_FEATURES,
    PREDICTIONS_TOPIC,
    PredictionEvent,
    UnknownSchemaVersion,
    decode_event,
    encode_key,
    utcnow,
)

pytestmark = pytest.mark.integration


async def test_prediction_event_round_trip_through_the_broker(stack) -> None:
    marker = uuid.uuid4().hex
    good = PredictionEvent(
        request_id=f"good-{marker}",
        timestamp=utcnow(),
        model_name="m",
        model_version="1",
        features=EXAMPLE_FEATURES,
        prediction=123_000.0,
        latency_ms=2.0,
        replica_id="t",
    )
    future = json.loads(good.to_bytes())
    future.update(schema_version=99, request_id=f"future-{marker}")

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            PREDICTIONS_TOPIC, good.to_bytes(), key=encode_key(good.request_id)
        )
        await producer.send_and_wait(
            PREDICTIONS_TOPIC, json.dumps(future).encode(), key=encode_key(future["request_id"])
        )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        PREDICTIONS_TOPIC,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=f"t-{marker}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    parsed: list[PredictionEvent] = []
    rejected: list[str] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(parsed) + len(rejected) < 2 and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if marker not in record.key.decode():
                        continue
                    try:
                        parsed.append(decode_event(PREDICTIONS_TOPIC, record.value))
                    except UnknownSchemaVersion:
                        rejected.append(record.key.decode())
    finally:
        await consumer.stop()
    assert parsed == [good]
    assert rejected == [f"future-{marker}"]
