"""At start-up: count exactly what the previous incarnations of this replica lost when killed.

A replica killed with SIGKILL (or OOM-killed, or crashed) leaves its :mod:`.ledger` file: the
keys of the events it had accepted but not seen acknowledged. The next incarnation looks for
each of those keys on its topic, from just after the last offset the dead process had seen
acknowledged on each partition (an unacknowledged event cannot be earlier, see
:class:`.publisher.EventPublisher`), and counts the ones that are not there in
``driftloop_events_lost_total{topic, reason="process_killed"}``. A key that *is* there was
delivered after all: the batch in flight reached the broker before the process died, or nginx
retried the request on another replica, which published it again.

The search needs the broker, so it runs in the background and retries until the broker
answers; meanwhile ``driftloop_events_unreconciled{topic}`` shows how many are still unknown.
The counter is cumulative over the replica's incarnations: its total is kept in
``events-lost.<replica>.json`` next to the ledgers, so a restarted replica carries it on and
``increase()`` (the ``EventsLost`` alert) sees a step even when the result is ready before
Prometheus's first scrape of the new process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from driftloop_service import Backoff, RetryStopped, retrying

from .ledger import (
    LedgerContents,
    LedgerUnreadable,
    ledger_glob,
    read_ledger,
    slot_key,
    totals_name,
)
from .metrics import Metrics

log = structlog.get_logger(__name__)

REASON_KILLED = "process_killed"
#: Lost request ids written to the log per topic (the count is always complete).
LOGGED_KEYS = 20

#: ``(topic, keys, acked)`` -> the keys present on ``topic`` after ``acked[partition]``.
KeyFinder = Callable[[str, set[bytes], Mapping[int, int]], Awaitable[set[bytes]]]


class LossRecovery:
    """Reads the previous incarnations' ledgers, then (:meth:`run`) counts what they lost."""

    def __init__(
        self,
        directory: Path,
        replica_id: str,
        topics: tuple[str, ...],
        metrics: Metrics,
        find: KeyFinder | None,
        *,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
    ) -> None:
        self._dir = directory
        self._replica = replica_id
        self._topics = topics
        self._metrics = metrics
        self._find = find
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._totals_path = directory / totals_name(replica_id)
        self._totals: dict[str, int] = dict.fromkeys(topics, 0)
        self._reconciled: set[str] = set()
        self.previous: list[LedgerContents] = []

    def load(self) -> None:
        """Before this incarnation's ledger exists: restore the running total and read what the
        earlier ones left (ledgers already counted, or empty, are removed)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            saved = json.loads(self._totals_path.read_text())
            for topic, count in saved.get("lost", {}).items():
                self._totals[topic] = int(count)
            self._reconciled = set(saved.get("reconciled", []))
        for topic in self._topics:  # the series exists from the first scrape, total carried on
            self._metrics.lost(topic, REASON_KILLED, self._totals.get(topic, 0))
        for path in sorted(self._dir.glob(ledger_glob(self._replica))):
            if path.name in self._reconciled:
                path.unlink(missing_ok=True)
                continue
            try:
                contents = read_ledger(path)
            except (LedgerUnreadable, OSError, UnicodeDecodeError) as exc:
                log.error("event_ledger_unreadable", path=str(path), error=str(exc))
                path.rename(path.with_suffix(".unreadable"))
                continue
            if contents.count:
                self.previous.append(contents)
            else:
                path.unlink(missing_ok=True)
        self._publish_unreconciled()

    @property
    def unreconciled(self) -> dict[str, int]:
        out = dict.fromkeys(self._topics, 0)
        for contents in self.previous:
            for topic, keys in contents.pending.items():
                out[topic] = out.get(topic, 0) + len(keys)
        return out

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Search the topics for the pending keys (retrying until the broker answers), count
        the missing ones as lost, then remove the ledgers."""
        if not self.previous:
            return
        policy = retrying(
            backoff=self._backoff,
            stopping=stopping,
            on_retry=self._retrying,
        )
        with contextlib.suppress(RetryStopped):
            await policy(self._reconcile)

    def _retrying(self, attempt: int, error: BaseException, delay: float) -> None:
        self._metrics.retries.hook("recover_lost_events")(attempt, error, delay)
        log.warning(
            "lost_event_search_failed",
            error=f"{type(error).__name__}: {error}",
            retry_in_s=round(delay, 2),
        )

    async def _reconcile(self) -> None:
        started = time.monotonic()
        lost: dict[str, list[bytes]] = {}
        delivered: dict[str, int] = {}
        for topic in self._topics:
            pending = [k for c in self.previous for k in c.pending.get(topic, [])]
            if not pending:
                continue
            acked = _earliest(c.acked.get(topic, {}) for c in self.previous)
            found = await self._find(topic, set(pending), acked) if self._find else set()
            lost[topic] = [k for k in pending if k not in found]
            delivered[topic] = len(pending) - len(lost[topic])
        for topic, keys in lost.items():
            self._totals[topic] = self._totals.get(topic, 0) + len(keys)
        self._reconciled = {c.path.name for c in self.previous}
        self._save_totals()
        for topic, keys in lost.items():
            self._metrics.lost(topic, REASON_KILLED, len(keys))
        for contents in self.previous:
            contents.path.unlink(missing_ok=True)
        self.previous = []
        self._publish_unreconciled()
        counts = {t: len(k) for t, k in lost.items()}
        report = log.warning if any(counts.values()) else log.info
        report(
            "events_lost_by_killed_process",
            lost=counts,
            delivered_after_all=delivered,
            lost_request_ids={
                t: [k.decode(errors="replace") for k in keys[:LOGGED_KEYS]]
                for t, keys in lost.items()
                if keys
            },
            took_s=round(time.monotonic() - started, 2),
        )

    def _save_totals(self) -> None:
        """Atomically: the new totals and which ledgers they include (so a kill between this
        and removing the ledgers cannot count them twice)."""
        body = {"lost": self._totals, "reconciled": sorted(self._reconciled)}
        tmp = self._totals_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self._totals_path)

    def _publish_unreconciled(self) -> None:
        for topic, count in self.unreconciled.items():
            self._metrics.set_unreconciled(topic, count)


def _earliest(maps: Any) -> dict[int, int]:
    """Per partition the lowest acknowledged offset over several ledgers; a partition one of
    them has no offset for is read from its start (left out)."""
    maps = list(maps)
    if not maps:
        return {}
    common = set.intersection(*(set(m) for m in maps))
    return {p: min(m[p] for m in maps) for p in common}


def kafka_key_finder(bootstrap: str, *, client_id: str, idle_timeout_s: float = 3.0) -> KeyFinder:
    """Search a topic with a group-less aiokafka consumer (commits nothing, joins no group)."""

    async def find(topic: str, keys: set[bytes], acked: Mapping[int, int]) -> set[bytes]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=f"{client_id}-recovery",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
        )
        await consumer.start()
        found: set[bytes] = set()
        try:
            await consumer.topics()  # fills the metadata partitions_for_topic reads
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            if not partitions:
                raise RuntimeError(f"topic {topic} has no partitions (yet)")
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            todo: dict[Any, int] = {}
            for tp in tps:
                start = acked.get(tp.partition, -1) + 1
                if not begin[tp] <= start <= end[tp]:
                    start = begin[tp]  # broker restarted (offsets reset) or never acknowledged
                if start < end[tp]:
                    consumer.seek(tp, start)
                    todo[tp] = end[tp]
            idle_since = time.monotonic()
            while todo and found != keys:
                batches = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
                if any(batches.values()):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > idle_timeout_s:
                    log.warning("lost_event_search_stopped_idle", topic=topic, left=len(todo))
                    break
                for tp, records in batches.items():
                    for record in records:
                        key = slot_key(record.key or b"")
                        if key in keys:
                            found.add(key)
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
        finally:
            await consumer.stop()
        return found

    return find
