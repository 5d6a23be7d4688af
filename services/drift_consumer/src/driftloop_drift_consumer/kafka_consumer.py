"""The data consumer's Kafka configuration: one group over predictions + feedback, manual
commits, and an assignment that keeps co-partitioned partitions together."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .decoding import RawRecord
from .settings import DriftConsumerSettings

if TYPE_CHECKING:
    from aiokafka import ConsumerRebalanceListener
    from aiokafka.structs import TopicPartition


class DataConsumer(Protocol):
    """What the drift consumer uses of aiokafka's ``AIOKafkaConsumer`` (tests pass a fake)."""

    def subscribe(self, topics: list[str], *, listener: ConsumerRebalanceListener) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(
        self, *, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[RawRecord]]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    async def committed(self, tp: TopicPartition) -> int | None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


#: Builds a fresh (not yet started) consumer; tests pass a fake.
ConsumerFactory: TypeAlias = Callable[[], DataConsumer]


def data_consumer_factory(settings: DriftConsumerSettings) -> ConsumerFactory:
    """The group consumer over predictions + feedback (manual commits)."""

    def make() -> Any:  # aiokafka is untyped: its consumer is a DataConsumer by duck typing
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        return AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            # Range, not aiokafka's default round robin: partition p of predictions and of
            # feedback (co-partitioned by request_id) must land on the same instance.
            partition_assignment_strategy=(RangePartitionAssignor,),
            group_id=settings.consumer_group,
            client_id=f"driftloop-drift-consumer-{settings.instance_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            max_poll_records=settings.max_poll_records,
            request_timeout_ms=max(settings.kafka_session_timeout_ms + 5_000, 40_000),
            metadata_max_age_ms=10_000,
        )

    return make
