"""Kafka topic names and their layout; the broker set-up and every client import these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Final, so a type checker reads each name as its literal (decode_event's overloads use that).
PREDICTIONS_TOPIC: Final = "predictions"
FEEDBACK_TOPIC: Final = "feedback"
MODEL_EVENTS_TOPIC: Final = "model-events"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


#: `predictions` and `feedback` are keyed by request_id and partitioned alike, so the consumer
#: that owns partition p of one owns partition p of the other and sees both halves of a join.
DATA_PARTITIONS = 4
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(PREDICTIONS_TOPIC, DATA_PARTITIONS),
    TopicSpec(FEEDBACK_TOPIC, DATA_PARTITIONS),
    TopicSpec(MODEL_EVENTS_TOPIC, 1),
)
