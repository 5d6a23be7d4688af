"""rebalance.py: on revoke, finished labelled rows are written and only the revoked partitions
are committed and forgotten; on assign, a partition starts clean from the group's commit and
finds the part files written beyond it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
from aiokafka.structs import TopicPartition

from driftloop_drift_consumer.committer import Committer
from driftloop_drift_consumer.feedback_join import Flush, JoinStore, StoredPrediction
from driftloop_drift_consumer.labelled_rows import LabelledRows
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.partition_state import PartitionState
from driftloop_drift_consumer.rebalance import DriftRebalanceListener
from driftloop_drift_consumer.reference import ReferenceManager
from driftloop_drift_consumer.settings import DriftConsumerSettings
from driftloop_drift_consumer.sinks.facade import Sinks
from driftloop_drift_consumer.sinks.labelled_log import LabelledLogWriter
from driftloop_drift_consumer.status import LoopStatus
from driftloop_drift_consumer.windows import WindowManager, WindowPolicy

from .conftest import (
    FakeAsyncRedis,
    FakeConsumer,
    FakeLog,
    FakeSource,
    ReferenceData,
    feedback_event,
    prediction_event,
)

ROW = [3.0, 20.0, 5.0, 1.0, 900.0, 3.0, 37.0, -122.0, 210_000.0]
P0, P1 = TopicPartition("predictions", 0), TopicPartition("predictions", 1)
F0, F1 = TopicPartition("feedback", 0), TopicPartition("feedback", 1)


class Parts:
    def __init__(self, tmp_path: Path, reference: ReferenceData) -> None:
        self.settings = DriftConsumerSettings(
            labelled_log_dir=tmp_path / "labelled", state_dir=tmp_path / "state"
        )
        self.log = FakeLog()
        self.consumer = FakeConsumer(self.log, [P0, P1, F0, F1])
        self.status = LoopStatus()
        self.writer = LabelledLogWriter(self.settings.labelled_log_dir)
        self.state = PartitionState(
            WindowManager(WindowPolicy(10, 0.0, 10), reference.compiled),
            predictions_topic="predictions",
            feedback_topic="feedback",
        )
        metrics = ConsumerMetrics()
        self.sinks = Sinks(
            self.settings,
            metrics=metrics,
            join_store=JoinStore(FakeAsyncRedis(), 600),
            labelled=self.writer,
            influx=None,
            reports=None,
            stopping=asyncio.Event(),
            failing=self.status.failing_sinks,
        )
        self.listener = DriftRebalanceListener(
            self.consumer,
            lock=asyncio.Lock(),
            state=self.state,
            labelled_rows=LabelledRows(
                self.settings,
                state=self.state,
                sinks=self.sinks,
                references=ReferenceManager(FakeSource({"1": reference.profile})),
            ),
            sinks=self.sinks,
            committer=Committer(self.state, metrics=metrics, status=self.status),
            status=self.status,
        )

    def labelled(self) -> pd.DataFrame:
        files = sorted(self.settings.labelled_log_dir.rglob("part-*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


async def test_revoke_writes_finished_rows_and_commits_only_what_moves(
    tmp_path: Path, reference: ReferenceData
) -> None:
    parts = Parts(tmp_path, reference)
    await parts.listener.on_partitions_assigned({P0, P1, F0, F1})
    assert parts.status.assigned == ["feedback-0", "feedback-1", "predictions-0", "predictions-1"]
    for tp in (F0, F1):
        parts.state.next_offset[tp] = 1
        buffer = parts.state.buffer(tp.partition)
        buffer.add(0, feedback_event(f"req-{tp.partition}", 1.0), now=0.0)
        rid = f"req-{tp.partition}"
        buffer.resolve({rid: stored(rid)}, {rid: buffer.record_key(0)})
    parts.state.next_offset[P0] = 7

    await parts.listener.on_partitions_revoked({F0, P0})

    assert list(parts.labelled()["request_id"]) == ["req-0"]  # feedback-1 stays with us
    assert parts.log.committed == {F0: 1, P0: 7}
    assert set(parts.state.buffers) == {1} and set(parts.state.next_offset) == {F1}


async def test_assign_starts_from_the_commit_and_skips_logged_records(
    tmp_path: Path, reference: ReferenceData
) -> None:
    parts = Parts(tmp_path, reference)
    parts.writer.write(Flush(0, 5, 9, []))  # written by a previous owner, never committed
    parts.log.committed.update({F0: 5, P0: 200})
    parts.state.next_offset[P0] = 999  # stale state from an earlier assignment

    await parts.listener.on_partitions_assigned({F0, P0})

    assert parts.state.committed == {F0: 5, P0: 200}
    assert parts.state.next_offset == {}
    assert parts.state.buffers[0].logged_through == 9
    assert parts.status.assigned == ["feedback-0", "predictions-0"]


def stored(request_id: str) -> StoredPrediction:
    return StoredPrediction.from_event(prediction_event(request_id, ROW))
