"""Announce a new champion: publish :class:`ModelPromoted` on the model-events topic.

acks=all so the event is on the broker before the DAG task succeeds; idempotence stays off
because the local Tansu broker rejects it. A retried task can therefore publish twice, which
is harmless: consumers treat a ModelPromoted for the version they already serve as a no-op.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from driftloop_contracts import MODEL_EVENTS_TOPIC, ModelPromoted

from .errors import PublishError


@dataclass(frozen=True)
class Published:
    topic: str
    partition: int
    offset: int


async def publish_model_promoted_async(
    bootstrap_servers: str, event: ModelPromoted, *, timeout_s: float = 20.0
) -> Published:
    """Send ``event`` keyed by model name and wait for the broker's acknowledgement."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        request_timeout_ms=int(timeout_s * 1000),
        client_id="driftloop-training",
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        meta = await asyncio.wait_for(
            producer.send_and_wait(
                MODEL_EVENTS_TOPIC, event.to_bytes(), key=event.model_name.encode()
            ),
            timeout_s,
        )
    except (KafkaError, TimeoutError, OSError) as exc:
        raise PublishError(
            f"could not publish ModelPromoted(version={event.version}) to "
            f"{MODEL_EVENTS_TOPIC} at {bootstrap_servers}: {exc!r}"
        ) from exc
    finally:
        await producer.stop()
    return Published(topic=meta.topic, partition=meta.partition, offset=meta.offset)


def publish_model_promoted(
    bootstrap_servers: str, event: ModelPromoted, *, timeout_s: float = 20.0
) -> Published:
    """Blocking wrapper for callers without an event loop (DAG tasks, the CLI)."""
    return asyncio.run(publish_model_promoted_async(bootstrap_servers, event, timeout_s=timeout_s))
