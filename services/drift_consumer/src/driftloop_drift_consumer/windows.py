"""Tumbling windows per (partition, model version): pure state, no I/O.

Why per partition: a window's contents are then a function of the partition's offsets alone
(count rule) or of its offsets and event timestamps (time rule), never of how the broker
interleaved partitions in a fetch. A replay after a crash or a rebalance therefore rebuilds
exactly the windows the first run built, with the same key ``(model version, partition, first
offset)`` and the same InfluxDB timestamp, so re-writing one is an overwrite, not a second
window. Another instance that takes the partition over builds the same windows too.
Requests are keyed by a random ``request_id``, so each partition is a uniform sample of the
traffic and a 200-event partition window is statistically a 200-event stream window.

State is additive: bin counts against the reference's fixed bins plus the raw values (for KS
and Wasserstein), with the offset range per partition. :meth:`WindowState.merge` combines
windows of several partitions or instances into one (counts add, values concatenate), which
is how a stream-wide figure over many consumers would be formed; see docs/drift.md.

Offsets to commit: a partition may be committed up to the first offset of its open window
(everything before it is in a closed, written window); see :meth:`WindowManager.commit_offset`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .drift import CompiledReference, KsMethod, WindowStatistics, compute_statistics


@dataclass(frozen=True)
class WindowPolicy:
    """When a window closes: at ``events`` events, or once its events span ``seconds`` of
    event time (if > 0) and it holds at least ``min_events``."""

    events: int = 200
    seconds: float = 0.0
    min_events: int = 200

    def __post_init__(self) -> None:
        if self.events < 2 or self.min_events < 2 or self.min_events > self.events:
            raise ValueError(f"invalid window policy {self}")


@dataclass(frozen=True)
class EventBatch:
    """Events of one partition in offset order, all for the reference's model version.

    ``timestamps_us`` are event times in integer microseconds since the epoch (exact, so a
    replay computes the same InfluxDB timestamps).
    """

    offsets: np.ndarray
    timestamps_us: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0])


@dataclass
class WindowState:
    """Additive state of one open window."""

    model_version: str
    n_series: int
    n_bins: int
    #: Events per series and reference bin (``n_series x n_bins``).
    bin_counts: np.ndarray
    segments: dict[int, tuple[int, int]] = field(default_factory=dict)
    start_us: int = 0
    end_us: int = 0
    count: int = 0
    chunks: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def empty(cls, model_version: str, n_series: int, n_bins: int) -> WindowState:
        """A window that holds no event yet."""
        return cls(model_version, n_series, n_bins, np.zeros((n_series, n_bins), dtype=np.int64))

    def extend(
        self,
        partition: int,
        offsets: np.ndarray,
        timestamps_us: np.ndarray,
        values: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        if len(offsets) == 0:
            return
        first, last = int(offsets[0]), int(offsets[-1])
        if partition in self.segments:
            first = self.segments[partition][0]
        self.segments[partition] = (first, last)
        latest = int(timestamps_us.max())
        if self.count == 0:  # the time rule measures spans from the first event
            self.start_us = int(timestamps_us[0])
            self.end_us = latest
        else:
            self.end_us = max(self.end_us, latest)
        self.count += len(offsets)
        self.bin_counts += counts
        self.chunks.append(values)

    def values(self) -> np.ndarray:
        if not self.chunks:
            return np.empty((0, self.n_series))
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0]

    def merge(self, other: WindowState) -> WindowState:
        """One window holding both windows' events (same model version and bins)."""
        if (other.model_version, other.n_series, other.n_bins) != (
            self.model_version,
            self.n_series,
            self.n_bins,
        ):
            raise ValueError("can only merge windows of one model version and bin layout")
        segments = dict(self.segments)
        for partition, (first, last) in other.segments.items():
            if partition in segments:
                a, b = segments[partition]
                segments[partition] = (min(a, first), max(b, last))
            else:
                segments[partition] = (first, last)
        present = [w for w in (self, other) if w.count]
        return WindowState(
            model_version=self.model_version,
            n_series=self.n_series,
            n_bins=self.n_bins,
            segments=segments,
            start_us=min((w.start_us for w in present), default=0),
            end_us=max((w.end_us for w in present), default=0),
            count=self.count + other.count,
            bin_counts=self.bin_counts + other.bin_counts,
            chunks=[v for w in present for v in [w.values()]],
        )


@dataclass(frozen=True)
class ClosedWindow:
    """A finished window with its statistics: what the sinks write."""

    model_version: str
    partition: int
    first_offset: int
    last_offset: int
    start_us: int
    end_us: int
    values: np.ndarray
    bin_counts: np.ndarray
    statistics: WindowStatistics
    #: A merged window's partitions (``partition`` is :data:`MERGED_PARTITION`, the offsets
    #: are its first and last slot); empty for a partition's own window.
    parts: tuple[PartialSummary, ...] = ()
    #: Added to :attr:`time_ns` in place of ``last_offset % 1000`` for a merged window.
    time_tag: int | None = None

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def time_ns(self) -> int:
        """InfluxDB timestamp: the window's last event time, with the last offset modulo 1000
        in the nanoseconds, so two windows whose events share a microsecond stay distinct
        while a replay of the same window lands on the same point."""
        tag = self.last_offset % 1000 if self.time_tag is None else self.time_tag
        return self.end_us * 1000 + tag


class WindowManager:
    """Open windows of the current reference's model version, one per partition."""

    def __init__(
        self,
        policy: WindowPolicy,
        reference: CompiledReference | None = None,
        *,
        ks_method: KsMethod = "auto",
    ) -> None:
        self.policy = policy
        self._reference = reference
        self._ks_method: KsMethod = ks_method
        self._open: dict[int, WindowState] = {}

    @property
    def reference(self) -> CompiledReference | None:
        return self._reference

    def switch(self, reference: CompiledReference | None) -> None:
        """New baseline: open windows of the previous one are discarded (never written)."""
        self._reference = reference
        self._open.clear()

    def drop(self, partitions: set[int] | list[int]) -> None:
        """Forget open windows of partitions this instance no longer owns (they will be
        rebuilt from the committed offset by whoever owns them next)."""
        for p in partitions:
            self._open.pop(p, None)

    def open_partitions(self) -> list[int]:
        return list(self._open)

    def open_window(self, partition: int) -> WindowState | None:
        return self._open.get(partition)

    def open_first_offset(self, partition: int) -> int | None:
        window = self._open.get(partition)
        if window is None or not window.count:
            return None
        return window.segments[partition][0]

    def commit_offset(self, partition: int, next_offset: int) -> int:
        """Offset safe to commit: the open window's first offset, else ``next_offset``."""
        first = self.open_first_offset(partition)
        return next_offset if first is None else min(first, next_offset)

    def add(
        self, partition: int, batch: EventBatch, bin_index: np.ndarray | None = None
    ) -> list[ClosedWindow]:
        """Add a partition's events; returns the windows they closed, with statistics.

        ``bin_index`` is the batch's :meth:`CompiledReference.bin_index` when the caller has
        it already (the sequential detector uses the same bins)."""
        ref = self._reference
        if ref is None or len(batch) == 0:
            return []
        idx = ref.bin_index(batch.values) if bin_index is None else bin_index
        closed: list[ClosedWindow] = []
        policy = self.policy
        m = len(batch)
        i = 0
        while i < m:
            window = self._open.get(partition)
            if window is None:
                window = WindowState.empty(ref.model_version, len(ref.series), ref.n_bins)
            end = min(m, i + policy.events - window.count)
            time_close = False
            if policy.seconds > 0:
                start = window.start_us if window.count else int(batch.timestamps_us[i])
                span_ok = batch.timestamps_us[i:end] - start >= policy.seconds * 1e6
                count_ok = window.count + np.arange(end - i) >= policy.min_events
                hits = np.flatnonzero(span_ok & count_ok)
                if hits.size:
                    end = i + int(hits[0])
                    time_close = True
            if end > i:
                window.extend(
                    partition,
                    batch.offsets[i:end],
                    batch.timestamps_us[i:end],
                    batch.values[i:end],
                    ref.counts_from_index(idx[i:end]),
                )
            if time_close or window.count >= policy.events:
                self._open.pop(partition, None)
                closed.append(self._close(ref, partition, window))
            else:
                self._open[partition] = window
            i = end
        return closed

    def _close(self, ref: CompiledReference, partition: int, window: WindowState) -> ClosedWindow:
        values = window.values()
        stats = compute_statistics(ref, values, window.bin_counts, ks_method=self._ks_method)
        first, last = window.segments[partition]
        return ClosedWindow(
            model_version=window.model_version,
            partition=partition,
            first_offset=first,
            last_offset=last,
            start_us=window.start_us,
            end_us=window.end_us,
            values=values,
            bin_counts=window.bin_counts.copy(),
            statistics=stats,
        )


# --- windows merged over a consumer's partitions ----------------------------------------------

#: ``ClosedWindow.partition`` of a merged window (its partitions are in ``parts``).
MERGED_PARTITION = -1


@dataclass(frozen=True)
class PartialSummary:
    """One partition's share of a merged window: a slot's events of that partition."""

    partition: int
    slot: int
    first_offset: int
    last_offset: int
    events: int
    end_us: int

    @property
    def time_ns(self) -> int:
        """Deterministic per partition (like :attr:`ClosedWindow.time_ns`)."""
        return self.end_us * 1000 + self.last_offset % 1000


@dataclass
class SlotPartial:
    """The events of one partition that fall in one slot (a merged window's building block)."""

    partition: int
    slot: int
    state: WindowState

    def summary(self) -> PartialSummary:
        first, last = self.state.segments[self.partition]
        return PartialSummary(
            self.partition, self.slot, first, last, self.state.count, self.state.end_us
        )


class MergedWindows:
    """Time-aligned windows whose bin counts are added across every partition this instance
    owns, so a window fills at the consumer's rate, not at one partition's.

    Each partition's events fall into *slots* of ``slot_seconds`` of event time aligned to
    the epoch. A partition's slot never goes back: an event stamped in an earlier slot than
    the partition's current one (a late event) counts in the current slot. So the partial
    window of (partition, slot) is a function of that partition's offsets and timestamps
    alone: a replay from its first offset (a commit never passes it) rebuilds it exactly.

    A slot is complete when every owned partition has moved past it, or, for a partition
    that is caught up and has no newer event, once the wall clock is ``idle_grace_seconds``
    past the slot's end. Complete slots are merged (counts add, values concatenate) into the
    open merged window, which closes at the first slot boundary where it holds at least
    ``min_events`` (the thresholds' calibration size); fewer and it takes the next slot too.

    Commit rule (:meth:`commit_offset`): a partition up to the first offset of its oldest
    partial not yet in a closed merged window. :meth:`drop` forgets a revoked partition's
    partials (the next owner replays them); nothing of them was written, so nothing is lost
    or counted twice. Partials are also the unit a cross-consumer merge would exchange: keyed
    by (model version, partition, slot) they can be published idempotently and summed once.
    """

    def __init__(
        self,
        slot_seconds: float,
        min_events: int,
        reference: CompiledReference | None = None,
        *,
        idle_grace_seconds: float = 2.0,
        ks_method: KsMethod = "auto",
    ) -> None:
        if slot_seconds <= 0 or min_events < 2:
            raise ValueError("slot_seconds must be > 0 and min_events >= 2")
        self.slot_us = round(slot_seconds * 1e6)
        self.min_events = min_events
        self.idle_grace_us = round(idle_grace_seconds * 1e6)
        self._reference = reference
        self._ks_method: KsMethod = ks_method
        self._open: dict[int, SlotPartial] = {}
        self._slot: dict[int, int] = {}
        #: Closed partials per partition, oldest first, not yet merged.
        self._done: dict[int, list[SlotPartial]] = {}
        #: Partials merged into the open merged window, and the slots it spans.
        self._acc: list[SlotPartial] = []
        self._acc_slots: tuple[int, int] | None = None

    @property
    def reference(self) -> CompiledReference | None:
        return self._reference

    def switch(self, reference: CompiledReference | None) -> None:
        """New baseline: everything open is discarded (never written)."""
        self._reference = reference
        self._open.clear()
        self._slot.clear()
        self._done.clear()
        self._acc = []
        self._acc_slots = None

    def drop(self, partitions: set[int] | list[int]) -> None:
        """Forget a partition's partials (its next owner replays them from the commit)."""
        gone = set(partitions)
        for p in gone:
            self._open.pop(p, None)
            self._slot.pop(p, None)
            self._done.pop(p, None)
        self._acc = [part for part in self._acc if part.partition not in gone]
        if not self._acc:
            self._acc_slots = None

    def partitions(self) -> list[int]:
        return sorted(set(self._open) | set(self._done) | {p.partition for p in self._acc})

    def commit_offset(self, partition: int, next_offset: int) -> int:
        """Offset safe to commit: the first offset of the partition's oldest unwritten partial."""
        firsts = [p.state.segments[partition][0] for p in self._acc if p.partition == partition]
        firsts += [p.state.segments[partition][0] for p in self._done.get(partition, [])]
        if partition in self._open:
            firsts.append(self._open[partition].state.segments[partition][0])
        return min([next_offset, *firsts])

    def add(self, partition: int, batch: EventBatch, bin_index: np.ndarray | None = None) -> None:
        """Add a partition's events (offset order) to its slots' partials."""
        ref = self._reference
        if ref is None or len(batch) == 0:
            return
        idx = ref.bin_index(batch.values) if bin_index is None else bin_index
        raw = batch.timestamps_us // self.slot_us
        current = self._slot.get(partition, int(raw[0]))
        slots = np.maximum.accumulate(np.maximum(raw, current))
        cuts = [0, *(np.flatnonzero(np.diff(slots)) + 1).tolist(), len(batch)]
        for a, b in itertools.pairwise(cuts):
            slot = int(slots[a])
            part = self._open.get(partition)
            if part is not None and part.slot != slot:
                self._done.setdefault(partition, []).append(part)
                part = None
            if part is None:
                empty = WindowState.empty(ref.model_version, len(ref.series), ref.n_bins)
                part = self._open[partition] = SlotPartial(partition, slot, empty)
            part.state.extend(
                partition,
                batch.offsets[a:b],
                batch.timestamps_us[a:b],
                batch.values[a:b],
                ref.counts_from_index(idx[a:b]),
            )
        self._slot[partition] = int(slots[-1])

    def complete_through(
        self, owned: list[int], now_us: int, caught_up: Callable[[int], bool]
    ) -> int | None:
        """The newest slot every owned partition is past (None: none yet)."""
        idle_slot = (now_us - self.idle_grace_us) // self.slot_us - 1
        through: int | None = None
        for p in owned:
            slot = self._slot.get(p)
            if caught_up(p):
                # nothing newer can come but late events, which count in a later slot
                mine = idle_slot if slot is None else max(slot - 1, min(slot, idle_slot))
            elif slot is None:
                return None
            else:
                mine = slot - 1
            through = mine if through is None else min(through, mine)
        return through

    def ready(
        self, owned: list[int], now_us: int, caught_up: Callable[[int], bool]
    ) -> list[ClosedWindow]:
        """Merged windows that closed: complete slots merged until ``min_events``."""
        ref = self._reference
        through = self.complete_through(owned, now_us, caught_up)
        if ref is None or through is None:
            return []
        for p, part in list(self._open.items()):
            if part.slot <= through:  # an idle partition's last partial
                self._done.setdefault(p, []).append(self._open.pop(p))
        complete = sorted(
            (part for parts in self._done.values() for part in parts if part.slot <= through),
            key=lambda part: (part.slot, part.partition),
        )
        for p in list(self._done):
            self._done[p] = [part for part in self._done[p] if part.slot > through]
            if not self._done[p]:
                del self._done[p]
        closed: list[ClosedWindow] = []
        for slot, group in itertools.groupby(complete, key=lambda part: part.slot):
            self._acc.extend(group)
            first = slot if self._acc_slots is None else self._acc_slots[0]
            self._acc_slots = (first, slot)
            if sum(part.state.count for part in self._acc) >= self.min_events:
                closed.append(self._close(ref))
        # a stretch of empty slots ends the open window's span where it is (no new key)
        return closed

    def _close(self, ref: CompiledReference) -> ClosedWindow:
        parts, self._acc = self._acc, []
        assert self._acc_slots is not None
        first_slot, last_slot = self._acc_slots
        self._acc_slots = None
        return merged_window(
            ref, parts, first_slot, last_slot, slot_us=self.slot_us, ks_method=self._ks_method
        )


def merged_window(
    ref: CompiledReference,
    parts: list[SlotPartial],
    first_slot: int,
    last_slot: int,
    *,
    slot_us: int,
    ks_method: KsMethod = "auto",
) -> ClosedWindow:
    """One merged window of ``parts`` (the partials of slots ``first_slot..last_slot``): used
    by :class:`MergedWindows` and by the cross-consumer aggregation (:mod:`.shared_windows`),
    so both write the same window for the same partials."""
    merged = parts[0].state
    for part in parts[1:]:
        merged = merged.merge(part.state)
    values = merged.values()
    stats = compute_statistics(ref, values, merged.bin_counts, ks_method=ks_method)
    summaries = tuple(part.summary() for part in parts)
    # timestamp: the span's last microsecond, with the partition set in the nanoseconds
    # (two consumers merging different partitions of one slot write distinct points)
    tag = sum(1 << s.partition for s in summaries) % 1000
    end_us = (last_slot + 1) * slot_us - 1
    return ClosedWindow(
        model_version=merged.model_version,
        partition=MERGED_PARTITION,
        first_offset=first_slot,
        last_offset=last_slot,
        start_us=merged.start_us,
        end_us=end_us,
        values=values,
        bin_counts=merged.bin_counts.copy(),
        statistics=stats,
        parts=summaries,
        time_tag=tag,
    )
