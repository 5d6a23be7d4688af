"""Kafka topic names and their layout; the broker set-up and every client import these.

Each event topic has a **dead-letter topic**, ``<topic>.dlq`` (:func:`dlq_topic`), where a
consumer copies every record it had to skip, with its origin (see
:mod:`driftloop_contracts.dead_letters`). :data:`TOPICS` lists both, so whatever creates the
topics (the local broker wrapper, docker-compose's ``kafka-init``) creates the dead-letter
topics too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Final, so a type checker reads each name as its literal (decode_event's overloads use that).
PREDICTIONS_TOPIC: Final = "predictions"
FEEDBACK_TOPIC: Final = "feedback"
MODEL_EVENTS_TOPIC: Final = "model-events"

#: Appended to a topic's name to name its dead-letter topic.
DEAD_LETTER_SUFFIX: Final = ".dlq"


def dlq_topic(name: str) -> str:
    """The dead-letter topic of ``name`` (``predictions`` -> ``predictions.dlq``)."""
    return f"{name}{DEAD_LETTER_SUFFIX}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


#: `predictions` and `feedback` are keyed by request_id and partitioned alike, so the consumer
#: that owns partition p of one owns partition p of the other and sees both halves of a join.
DATA_PARTITIONS = 4
#: The topics events travel on.
EVENT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(PREDICTIONS_TOPIC, DATA_PARTITIONS),
    TopicSpec(FEEDBACK_TOPIC, DATA_PARTITIONS),
    TopicSpec(MODEL_EVENTS_TOPIC, 1),
)
#: One partition each: dead letters are rare and read by people, newest first.
DEAD_LETTER_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(dlq_topic(t.name), 1) for t in EVENT_TOPICS
)
#: Every topic driftloop needs: the event topics and their dead-letter topics.
TOPICS: tuple[TopicSpec, ...] = EVENT_TOPICS + DEAD_LETTER_TOPICS
