"""The loop's steps for windows merged across the consumer group (opt-in:
``DRIFTLOOP_DRIFT_CONSUMER_SHARED_WINDOWS``): load, publish, aggregate.

Per fetch, under the loop's lock and before the commit:

1. :meth:`SharedMerge.load`: owned partitions not seen since their assignment (or a restart)
   read their progress from the store, so replayed events already shared are skipped;
2. (the loop adds the fetch's predictions to :class:`.shared_windows.SharedWindows`)
3. :meth:`SharedMerge.publish`: finished partials and progress go to the store; the commit
   then may pass them;
4. :meth:`SharedMerge.aggregate`: if this instance holds the lease, the slots every partition
   of the topic has passed are merged into windows, written to InfluxDB (idempotent points)
   and closed by the cursor's compare-and-set; only then are they counted here.

Every store call is retried by :meth:`.sinks.facade.Sinks.retried` (sink ``redis_shared``:
``driftloop_sink_failures_total``, ``driftloop_retries_total``, ``driftloop_sink_up``), so a
Redis outage pauses consumption and commits instead of losing a partial.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from .drift import DriftDecision, KsMethod, WindowStatistics
from .errors import SharedProgressConflict
from .metrics import ConsumerMetrics
from .shared_store import SharedStore
from .shared_windows import SharedWindows, aggregate, global_through
from .sinks.facade import Sinks
from .sinks.influx import window_lines
from .windows import ClosedWindow

log = structlog.get_logger(__name__)

SINK = "redis_shared"


class SharedMerge:
    """Wires :class:`SharedWindows` (pure) to :class:`SharedStore` (Redis) for the loop."""

    def __init__(
        self,
        windows: SharedWindows,
        store: SharedStore,
        *,
        sinks: Sinks,
        metrics: ConsumerMetrics,
        min_events: int,
        lease_seconds: float,
        late_seconds: float,
        ks_method: KsMethod = "auto",
    ) -> None:
        self.windows = windows
        self.store = store
        self.sinks = sinks
        self.metrics = metrics
        self.min_events = min_events
        self.lease_seconds = lease_seconds
        self.late_us = round(late_seconds * 1e6)
        self.ks_method: KsMethod = ks_method
        self._late_seen = 0

    async def load(self, partitions: Iterable[int]) -> None:
        """Read the stored progress of owned partitions not loaded yet."""
        ref = self.windows.reference
        missing = [p for p in partitions if not self.windows.known(p)]
        if ref is None or not missing:
            return
        version = ref.model_version
        progress = await self.sinks.retried(SINK, lambda: self.store.progress(version))
        for p in missing:
            self.windows.load(p, progress.get(p))
        log.info(
            "shared_progress_loaded",
            model_version=version,
            partitions={p: progress[p].encode() if p in progress else None for p in missing},
        )

    async def publish(self, now_us: int, caught_up: Callable[[int], bool]) -> None:
        """Publish what is finished (partials and progress); the commit may pass it after."""
        late = self.windows.late_events - self._late_seen
        if late > 0:
            self.metrics.shared_late_events.inc(late)
        self._late_seen = self.windows.late_events
        publication = self.windows.advance(now_us, caught_up)
        if publication is None:
            return
        try:
            await self.sinks.retried(
                SINK,
                lambda: self.store.publish(publication.model_version, publication.partitions),
            )
        except SharedProgressConflict as exc:
            self.metrics.shared_partials.labels("conflict").inc()
            log.error("shared_progress_conflict_restarting", error=str(exc))
            raise
        self.windows.published(publication)
        count = sum(len(pp.partials) for pp in publication.partitions)
        if count:
            self.metrics.shared_partials.labels("published").inc(count)

    async def aggregate(
        self,
        topic_partitions: set[int] | None,
        now_us: int,
        decide: Callable[[WindowStatistics], DriftDecision],
    ) -> list[tuple[ClosedWindow, DriftDecision]]:
        """Merge the slots every partition has passed, if this instance holds the lease;
        returns the windows it closed (to count: written once, by whoever won the cursor)."""
        ref = self.windows.reference
        if ref is None or not topic_partitions:
            return []
        version = ref.model_version
        store = self.store
        held = await self.sinks.retried(SINK, lambda: store.lease(version, self.lease_seconds))
        self.metrics.shared_aggregator.set(1 if held else 0)
        if not held:
            return []
        progress = await self.sinks.retried(SINK, lambda: store.progress(version))
        through = global_through(progress, topic_partitions)
        if through is None:
            return []
        self.metrics.shared_merge_lag.set(
            max(0.0, (now_us - (through + 1) * self.windows.slot_us) / 1e6)
        )
        cursor, raw = await self.sinks.retried(SINK, lambda: store.cursor(version))
        if cursor.next_slot is not None and through < cursor.next_slot:
            return []
        partials = await self.sinks.retried(
            SINK, lambda: store.partials(version, cursor.read_from, through)
        )
        result = aggregate(
            ref,
            partials,
            cursor,
            through,
            min_events=self.min_events,
            slot_us=self.windows.slot_us,
            ks_method=self.ks_method,
        )
        decided = [(w, decide(w.statistics)) for w in result.windows]
        lines = [line for w, d in decided for line in window_lines(w, d)]
        await self.sinks.write_points(lines)  # idempotent: a second aggregator rewrites them
        won = await self.sinks.retried(
            SINK,
            lambda: store.close(version, raw, result.cursor, decided, slot_us=self.windows.slot_us),
        )
        if not won:
            if decided:
                self.metrics.shared_windows.labels("lost_race").inc(len(decided))
            return []
        late = [s for s in result.slots if now_us - (s + 1) * self.windows.slot_us > self.late_us]
        if late:
            self.metrics.shared_late_slots.inc(len(late))
            log.warning("shared_slots_closed_late", slots=late, model_version=version)
        if decided:
            self.metrics.shared_windows.labels("closed").inc(len(decided))
        return decided
