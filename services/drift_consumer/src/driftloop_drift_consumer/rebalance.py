"""Rebalance listener: finish and commit what is finished before partitions move; start clean
on the partitions we get.

aiokafka awaits these callbacks during a rebalance. Both take the loop's processing lock, which
the loop holds around *processing and committing* a batch but never around ``getmany``, so a
rebalance waits for the batch in flight and cannot deadlock with the fetch (aiokafka's docs,
"Consumer rebalance listener").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

if TYPE_CHECKING:
    from .loop import DriftLoop


class DriftRebalanceListener(ConsumerRebalanceListener):
    def __init__(self, loop: DriftLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop.on_assigned(set(assigned))
