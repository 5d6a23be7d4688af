"""Windows merged across every consumer of the group: the pure half (no I/O).

Each instance cuts its partitions' events into *slot partials* exactly like
:class:`.windows.MergedWindows` (slots of event time aligned to the epoch; a partition's slot
never goes back), but instead of merging them itself it *publishes* every finished partial to
a store shared by the group (:mod:`.shared_store`, Redis), together with the partition's
*progress* ``(offset, slot)``: every event of the partition up to ``offset`` is in a published
partial, and every slot up to ``slot`` is finished for it. Whoever aggregates (one instance at
a time) merges the published partials of every slot that *all* partitions of the topic have
passed, with the same rule as :class:`.windows.MergedWindows` (a window takes whole slots until
it holds ``min_events``), so 1 or N consumers write the same windows.

Why the progress carries an offset: a partition's next owner (after a rebalance or a crash)
replays from the committed offset, which may be before what was already published. It skips
the events up to the stored offset (they are shared already) and puts the rest in slots after
the stored slot. So a published partial is never rebuilt differently, and an event is in at
most one published partial, whoever read it and however often.

Commit rule (:meth:`SharedWindows.commit_offset`): a partition up to the first offset of its
oldest partial not yet published; published ones are durably shared, so a crash replays
exactly the unpublished ones.

Idle partitions: a caught-up partition with no newer event passes a slot once the wall clock
is ``idle_grace_seconds`` past the slot's end, as in :class:`.windows.MergedWindows`; here its
open partial is published then and its progress moves to the newest slot the clock has passed,
so a silent partition never holds the others' slots. An event that arrives later stamped in a
passed slot counts in the next one (:attr:`Publication.late_events`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .drift import CompiledReference, KsMethod
from .windows import ClosedWindow, EventBatch, SlotPartial, WindowState, merged_window


@dataclass(frozen=True)
class Progress:
    """How far a partition is shared: events up to ``offset`` are in published partials
    (-1: none yet) and every slot up to ``slot`` is finished for it."""

    offset: int
    slot: int

    def encode(self) -> str:
        return f"{self.offset} {self.slot}"

    @classmethod
    def decode(cls, raw: str | bytes) -> Progress:
        text = raw.decode() if isinstance(raw, bytes) else raw
        offset, slot = text.split()
        return cls(int(offset), int(slot))


@dataclass(frozen=True)
class PartitionPublication:
    """What one partition publishes at once: its finished partials and its new progress."""

    partition: int
    partials: tuple[SlotPartial, ...]
    progress: Progress


@dataclass
class Publication:
    """Everything an instance has to publish after a fetch (see :meth:`SharedWindows.advance`)."""

    model_version: str
    partitions: list[PartitionPublication] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.partitions)


@dataclass
class _Owned:
    """One owned partition's unshared state."""

    #: Progress as stored (the floor for replayed events).
    stored: Progress | None
    #: The slot the partition is in (its open partial's, or the floor after an idle pass).
    slot: int | None = None
    open: SlotPartial | None = None
    #: Finished partials not yet published, oldest first.
    done: list[SlotPartial] = field(default_factory=list)
    #: Slot through which the partition is finished (at least ``stored.slot``).
    through: int | None = None


class SharedWindows:
    """One instance's side of the cross-consumer merge: slot partials per owned partition,
    the progress to publish, and the commit rule."""

    def __init__(
        self,
        slot_seconds: float,
        reference: CompiledReference | None = None,
        *,
        idle_grace_seconds: float = 2.0,
    ) -> None:
        if slot_seconds <= 0:
            raise ValueError("slot_seconds must be > 0")
        self.slot_us = round(slot_seconds * 1e6)
        self.idle_grace_us = round(idle_grace_seconds * 1e6)
        self._reference = reference
        self._parts: dict[int, _Owned] = {}
        self.late_events = 0

    @property
    def reference(self) -> CompiledReference | None:
        return self._reference

    def switch(self, reference: CompiledReference | None) -> None:
        """New baseline: everything unshared is dropped (progress is per model version, so
        every partition is loaded again from the store)."""
        self._reference = reference
        self._parts.clear()

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions (revoked, or a restart): their next owner replays them."""
        for p in partitions:
            self._parts.pop(p, None)

    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def known(self, partition: int) -> bool:
        """True once the partition's stored progress was loaded (:meth:`load`)."""
        return partition in self._parts

    def load(self, partition: int, stored: Progress | None) -> None:
        """Start on a partition from its progress in the store (``None``: nothing shared)."""
        slot = None if stored is None else stored.slot + 1
        through = None if stored is None else stored.slot
        self._parts[partition] = _Owned(stored, slot=slot, through=through)

    def add(self, partition: int, batch: EventBatch, bin_index: np.ndarray | None = None) -> None:
        """Add a partition's events (offset order); those already shared are skipped."""
        ref = self._reference
        owned = self._parts.get(partition)
        if ref is None or owned is None or len(batch) == 0:
            if ref is not None and owned is None and len(batch):
                raise RuntimeError(f"partition {partition}: progress not loaded before its events")
            return
        idx = ref.bin_index(batch.values) if bin_index is None else bin_index
        if owned.stored is not None:
            fresh = batch.offsets > owned.stored.offset
            if not fresh.all():
                batch = EventBatch(
                    batch.offsets[fresh], batch.timestamps_us[fresh], batch.values[fresh]
                )
                idx = idx[fresh]
                if len(batch) == 0:
                    return
        raw = batch.timestamps_us // self.slot_us
        current = int(raw[0]) if owned.slot is None else owned.slot
        floor = np.maximum(raw, current)
        slots = np.maximum.accumulate(floor)
        # stamped before a slot the partition had passed by the idle rule (or before its
        # stored floor): counted in a later slot
        if owned.through is not None:
            self.late_events += int(np.count_nonzero(raw <= owned.through))
        cuts = [0, *(np.flatnonzero(np.diff(slots)) + 1).tolist(), len(batch)]
        for a, b in itertools.pairwise(cuts):
            slot = int(slots[a])
            part = owned.open
            if part is not None and part.slot != slot:
                owned.done.append(part)
                part = None
            if part is None:
                empty = WindowState.empty(ref.model_version, len(ref.series), ref.n_bins)
                part = owned.open = SlotPartial(partition, slot, empty)
            part.state.extend(
                partition,
                batch.offsets[a:b],
                batch.timestamps_us[a:b],
                batch.values[a:b],
                ref.counts_from_index(idx[a:b]),
            )
        owned.slot = int(slots[-1])

    def advance(self, now_us: int, caught_up: Callable[[int], bool]) -> Publication | None:
        """What to publish now: finished partials and each partition's new progress.

        A partition is finished through the slot before its current one; a caught-up one
        also through the newest slot the wall clock passed ``idle_grace`` ago (its open
        partial, if that old, is finished then). Nothing changes until :meth:`published`.
        """
        ref = self._reference
        if ref is None:
            return None
        idle_slot = (now_us - self.idle_grace_us) // self.slot_us - 1
        publication = Publication(ref.model_version)
        for p, owned in sorted(self._parts.items()):
            done = list(owned.done)
            through = owned.through
            if owned.slot is not None:
                through = owned.slot - 1 if through is None else max(through, owned.slot - 1)
            open_part = owned.open
            if caught_up(p) and (owned.slot is None or owned.slot <= idle_slot):
                if open_part is not None:
                    done.append(open_part)
                through = idle_slot if through is None else max(through, idle_slot)
            if through is None or (
                not done and owned.stored is not None and through <= owned.stored.slot
            ):
                continue
            last = owned.stored.offset if owned.stored is not None else -1
            if done:
                last = done[-1].state.segments[p][1]
            publication.partitions.append(
                PartitionPublication(p, tuple(done), Progress(last, through))
            )
        return publication if publication else None

    def published(self, publication: Publication) -> None:
        """The store took ``publication``: its partials are shared (commits may pass them)."""
        ref = self._reference
        if ref is None or ref.model_version != publication.model_version:
            return
        for pp in publication.partitions:
            owned = self._parts.get(pp.partition)
            if owned is None:
                continue
            shared = {id(part) for part in pp.partials}
            owned.done = [part for part in owned.done if id(part) not in shared]
            if owned.open is not None and id(owned.open) in shared:
                owned.open = None
                owned.slot = pp.progress.slot + 1
            owned.stored = pp.progress
            owned.through = pp.progress.slot
            if owned.slot is None or owned.slot <= pp.progress.slot:
                owned.slot = pp.progress.slot + 1

    def commit_offset(self, partition: int, next_offset: int) -> int:
        """Offset safe to commit: the first offset of the partition's oldest unpublished
        partial (``next_offset`` when everything read is shared). A partition whose progress
        is not loaded yet holds at 0 (nothing of it is windowed, nothing may pass), unless no
        reference is loaded (its events are not windowed at all)."""
        owned = self._parts.get(partition)
        if owned is None:
            return next_offset if self._reference is None else 0
        firsts = [part.state.segments[partition][0] for part in owned.done]
        if owned.open is not None:
            firsts.append(owned.open.state.segments[partition][0])
        return min([next_offset, *firsts])


# --- the aggregation (pure): published partials -> merged windows ---------------------------


@dataclass(frozen=True)
class Cursor:
    """Where the aggregation of a model version stands: every slot before ``next_slot`` is
    merged; ``open_from`` is the first slot of the window still filling (``None``: none)."""

    next_slot: int | None = None
    open_from: int | None = None

    def encode(self) -> str:
        return f"{_opt(self.next_slot)} {_opt(self.open_from)}"

    @classmethod
    def decode(cls, raw: str | bytes | None) -> Cursor:
        if raw is None:
            return cls()
        text = raw.decode() if isinstance(raw, bytes) else raw
        a, b = text.split()
        return cls(None if a == "-" else int(a), None if b == "-" else int(b))

    @property
    def read_from(self) -> int | None:
        """The first slot whose partials the next aggregation needs."""
        return self.open_from if self.open_from is not None else self.next_slot


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def global_through(progress: dict[int, Progress], partitions: Iterable[int]) -> int | None:
    """The newest slot every partition of the topic has passed (None: one has no progress)."""
    through: int | None = None
    for p in partitions:
        mine = progress.get(p)
        if mine is None:
            return None
        through = mine.slot if through is None else min(through, mine.slot)
    return through


@dataclass(frozen=True)
class Aggregation:
    """The windows a run of the aggregation closed and the cursor it leaves."""

    windows: list[ClosedWindow]
    cursor: Cursor
    #: Slots merged by this run (newly, not those re-read for the open window).
    slots: list[int]


def aggregate(
    ref: CompiledReference,
    partials: dict[int, list[SlotPartial]],
    cursor: Cursor,
    through: int,
    *,
    min_events: int,
    slot_us: int,
    ks_method: KsMethod = "auto",
) -> Aggregation:
    """Merge the published partials of slots ``cursor.read_from..through`` (all partitions
    are past them) into windows of at least ``min_events``, as :class:`.windows.MergedWindows`
    does: a window takes whole slots in order; fewer than ``min_events`` and it stays open.
    A pure function of the partials and the cursor, so every aggregator gets the same."""
    start = cursor.read_from
    slots = sorted(s for s in partials if (start is None or s >= start) and s <= through)
    windows: list[ClosedWindow] = []
    acc: list[SlotPartial] = []
    first: int | None = None
    for slot in slots:
        group = sorted(partials[slot], key=lambda part: part.partition)
        if not group:
            continue
        acc.extend(group)
        first = slot if first is None else first
        if sum(part.state.count for part in acc) >= min_events:
            windows.append(
                merged_window(ref, acc, first, slot, slot_us=slot_us, ks_method=ks_method)
            )
            acc, first = [], None
    new_slots = [s for s in slots if cursor.next_slot is None or s >= cursor.next_slot]
    return Aggregation(windows, Cursor(through + 1, first), new_slots)


# --- wire format of a partial (exact: integers and float64 bytes) ----------------------------


def encode_partial(part: SlotPartial) -> bytes:
    """A partial as bytes: a JSON header line, the bin counts (int64) and the values
    (float64), little-endian, so a decoded partial is bit-identical."""
    state = part.state
    first, last = state.segments[part.partition]
    values = state.values()
    header = {
        "model_version": state.model_version,
        "partition": part.partition,
        "slot": part.slot,
        "first_offset": first,
        "last_offset": last,
        "count": state.count,
        "start_us": state.start_us,
        "end_us": state.end_us,
        "n_series": state.n_series,
        "n_bins": state.n_bins,
        "rows": int(values.shape[0]),
    }
    return b"".join(
        (
            json.dumps(header, separators=(",", ":")).encode(),
            b"\n",
            np.ascontiguousarray(state.bin_counts, dtype="<i8").tobytes(),
            np.ascontiguousarray(values, dtype="<f8").tobytes(),
        )
    )


def decode_partial(blob: bytes) -> SlotPartial:
    head, _, body = blob.partition(b"\n")
    h = json.loads(head)
    n_series, n_bins, rows = h["n_series"], h["n_bins"], h["rows"]
    counts_len = n_series * n_bins * 8
    if len(body) != counts_len + rows * n_series * 8:
        raise ValueError(f"partial {h['partition']}/{h['slot']}: body of {len(body)} bytes")
    counts = np.frombuffer(body[:counts_len], dtype="<i8").reshape(n_series, n_bins).copy()
    values = np.frombuffer(body[counts_len:], dtype="<f8").reshape(rows, n_series).copy()
    state = WindowState(
        model_version=h["model_version"],
        n_series=n_series,
        n_bins=n_bins,
        bin_counts=counts.astype(np.int64),
        segments={h["partition"]: (h["first_offset"], h["last_offset"])},
        start_us=h["start_us"],
        end_us=h["end_us"],
        count=h["count"],
        chunks=[values.astype(np.float64)],
    )
    return SlotPartial(h["partition"], h["slot"], state)
