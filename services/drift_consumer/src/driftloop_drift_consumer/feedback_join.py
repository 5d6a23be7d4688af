"""Feedback join: predictions wait in Redis for their ground truth; joined rows are buffered per
feedback partition until the labelled-data log has them; online error per model version.

Join state lives in Redis (one key per request, ``SET ... EX join_ttl_seconds``), not in this
process: it survives a restart, is bounded by its TTL, and is shared by every instance of the
consumer group, so a partition that moves to another instance still finds its predictions.
A prediction is stored *before* its offset is committed. Keys are not deleted on a join (the
TTL does that), so a replayed feedback record joins again to the same row.

Exactly once in the log: a feedback partition's records go through a :class:`FeedbackBuffer`
in offset order. Each record becomes a row (joined), or is skipped (invalid, or its prediction
never arrived within ``feedback_wait_seconds``); only a contiguous prefix of decided records is
flushed, to one part file named by its offset range, and the partition is committed up to the
first record not yet flushed. After a restart the part files written but not committed are
found again (see :mod:`.sinks.labelled_log`) and their offsets are skipped, so a replay neither
loses nor repeats a row. A flush whose rows fall in two hours is split at the hour into
consecutive offset ranges, one part file each (every file a whole link of the offset chain), so
a crash between two files leaves a shorter chain, never a gap.

One row per ``request_id`` (first label wins, as the feedback API's 409 keeps the first): a
joined record claims its request in Redis (``SET driftloop:join-claim:<request_id>
<partition>:<offset> NX EX join_ttl_seconds``). The record that holds the claim gives the row,
also when it is replayed after a crash or a rebalance (the claim names it); any other record
for that request is skipped as ``duplicate_label``.

Errors are ``prediction - actual`` in USD: a positive bias means the model over-predicts.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from driftloop_contracts import (
    FEATURE_NAMES,
    LABELLED_LOG_COLUMNS,
    FeedbackEvent,
    PredictionEvent,
    partition_dir,
)
from driftloop_contracts.redis_keys import JOIN_CLAIM_PREFIX, JOIN_PREFIX

from .errors import JoinStoreError

JOIN_KEY_PREFIX = JOIN_PREFIX
#: Marker of the feedback record that labelled a request (value ``<partition>:<offset>``).
LABEL_KEY_PREFIX = JOIN_CLAIM_PREFIX


@dataclass(frozen=True)
class StoredPrediction:
    """The half of a labelled row that the prediction event carries."""

    request_id: str
    predicted_at: datetime
    model_name: str
    model_version: str
    features: tuple[float, ...]
    prediction: float
    #: The previous champion's answer during a post-promotion watch (see :mod:`.watch`).
    shadow_model_version: str | None = None
    shadow_prediction: float | None = None

    @classmethod
    def from_event(
        cls, event: PredictionEvent, features: tuple[float, ...] | None = None
    ) -> StoredPrediction:
        """``features`` in contract order, if the caller already extracted them."""
        row = features if features is not None else tuple(event.feature_row())
        return cls(
            event.request_id,
            event.timestamp,
            event.model_name,
            event.model_version,
            tuple(float(v) for v in row),
            float(event.prediction),
            event.shadow_model_version if event.shadow_prediction is not None else None,
            event.shadow_prediction if event.shadow_model_version is not None else None,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "request_id": self.request_id,
                "predicted_at": self.predicted_at.isoformat(),
                "model_name": self.model_name,
                "model_version": self.model_version,
                "features": list(self.features),
                "prediction": self.prediction,
                **(
                    {"shadow_version": self.shadow_model_version, "shadow": self.shadow_prediction}
                    if self.shadow_model_version is not None
                    else {}
                ),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredPrediction:
        d = json.loads(raw)
        return cls(
            d["request_id"],
            datetime.fromisoformat(d["predicted_at"]),
            d["model_name"],
            d["model_version"],
            tuple(float(v) for v in d["features"]),
            float(d["prediction"]),
            d.get("shadow_version"),
            float(d["shadow"]) if d.get("shadow") is not None else None,
        )


@dataclass(frozen=True)
class LabelledRow:
    """One row of the labelled-data log (USD)."""

    request_id: str
    predicted_at: datetime
    labelled_at: datetime
    model_name: str
    model_version: str
    features: tuple[float, ...]
    prediction: float
    actual: float
    #: Set during a post-promotion watch: the previous champion's answer to the same request
    #: (not a column of the log; the watch accumulates it, see :mod:`.watch`).
    shadow_model_version: str | None = None
    shadow_prediction: float | None = None

    @property
    def error(self) -> float:
        return self.prediction - self.actual

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "request_id": self.request_id,
            "predicted_at": self.predicted_at,
            "labelled_at": self.labelled_at,
            "model_name": self.model_name,
            "model_version": self.model_version,
            **dict(zip(FEATURE_NAMES, self.features, strict=True)),
            "prediction": self.prediction,
            "actual": self.actual,
        }
        return {c: record[c] for c in LABELLED_LOG_COLUMNS}


def join(prediction: StoredPrediction, feedback: FeedbackEvent) -> LabelledRow:
    return LabelledRow(
        prediction.request_id,
        prediction.predicted_at,
        feedback.timestamp,
        prediction.model_name,
        prediction.model_version,
        prediction.features,
        prediction.prediction,
        float(feedback.actual),
        prediction.shadow_model_version,
        prediction.shadow_prediction,
    )


class JoinStore:
    """Predictions waiting for feedback, in Redis (``redis.asyncio`` client)."""

    def __init__(
        self,
        redis: Any,
        ttl_seconds: int,
        prefix: str = JOIN_KEY_PREFIX,
        label_prefix: str = LABEL_KEY_PREFIX,
    ) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._label_prefix = label_prefix

    async def put(self, predictions: list[StoredPrediction]) -> None:
        if not predictions:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for p in predictions:
                pipe.set(self._prefix + p.request_id, p.to_json(), ex=self._ttl)
            await pipe.execute()
        except Exception as exc:
            raise JoinStoreError(f"could not store {len(predictions)} predictions: {exc}") from exc

    async def get_many(self, request_ids: list[str]) -> dict[str, StoredPrediction]:
        if not request_ids:
            return {}
        try:
            raw = await self._redis.mget([self._prefix + r for r in request_ids])
        except Exception as exc:
            raise JoinStoreError(f"could not read {len(request_ids)} predictions: {exc}") from exc
        found: dict[str, StoredPrediction] = {}
        for request_id, value in zip(request_ids, raw, strict=True):
            if value is not None:
                try:
                    found[request_id] = StoredPrediction.from_json(value)
                except (ValueError, KeyError, TypeError):
                    continue  # a foreign value under our key: treat as missing
        return found

    async def claim_labels(self, claims: list[tuple[str, str]]) -> dict[str, str]:
        """Claim each ``(request_id, record key)`` in order (``SET NX`` with the join TTL) and
        return the record key that owns each request: the first claim ever made for it, so
        a replayed record finds its own claim and a later record for the request does not."""
        if not claims:
            return {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for request_id, key in claims:
                pipe.set(self._label_prefix + request_id, key, nx=True, ex=self._ttl)
                pipe.get(self._label_prefix + request_id)
            replies = await pipe.execute()
        except Exception as exc:
            raise JoinStoreError(f"could not claim {len(claims)} labels: {exc}") from exc
        owners: dict[str, str] = {}
        for (request_id, key), owner in zip(claims, replies[1::2], strict=True):
            if owner is None:  # expired in between: nobody else holds it
                owners.setdefault(request_id, key)
            else:
                owners[request_id] = owner.decode() if isinstance(owner, bytes) else str(owner)
        return owners


@dataclass
class _Entry:
    offset: int
    arrived: float
    request_id: str = ""
    feedback: FeedbackEvent | None = None
    row: LabelledRow | None = None
    decided: bool = False
    outcome: str = ""  # "joined" | "invalid" | "unmatched" | "duplicate" | "logged"


@dataclass(frozen=True)
class Resolved:
    """What :meth:`FeedbackBuffer.resolve` decided: new rows, and the offsets of records
    skipped because another record already labelled their request."""

    rows: list[LabelledRow]
    duplicates: list[int]


@dataclass(frozen=True)
class Flush:
    """Decided records ``first_offset..last_offset`` of one partition: one part file, whose
    rows all fall in one hour partition (a zero-row file when every record was skipped, so the
    files of a partition always chain offset to offset); an ``already_logged`` flush names
    records a previous run wrote and writes nothing."""

    partition: int
    first_offset: int
    last_offset: int
    rows: list[LabelledRow]
    already_logged: bool = False


class FeedbackBuffer:
    """Feedback records of one partition, in offset order, until they are flushed."""

    def __init__(self, partition: int, logged_through: int | None = None) -> None:
        self.partition = partition
        #: Offsets up to here are already in the log (found on assignment); skip them.
        self.logged_through = logged_through
        self._entries: deque[_Entry] = deque()
        self._waiting: dict[str, list[_Entry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, offset: int, event: FeedbackEvent, now: float) -> None:
        if self.logged_through is not None and offset <= self.logged_through:
            self._entries.append(_Entry(offset, now, decided=True, outcome="logged"))
            return
        entry = _Entry(offset, now, event.request_id, event)
        self._entries.append(entry)
        self._waiting.setdefault(event.request_id, []).append(entry)

    def add_skipped(self, offset: int, now: float) -> None:
        """A record that will never yield a row (malformed...): decided at once."""
        logged = self.logged_through is not None and offset <= self.logged_through
        self._entries.append(
            _Entry(offset, now, decided=True, outcome="logged" if logged else "invalid")
        )

    def waiting_ids(self) -> list[str]:
        return list(self._waiting)

    def record_key(self, offset: int) -> str:
        """How a label claim names a record of this partition."""
        return f"{self.partition}:{offset}"

    def label_claims(self, found: dict[str, StoredPrediction]) -> list[tuple[str, str]]:
        """``(request_id, record key)`` of the waiting records that ``found`` would join, in
        offset order: to claim (:meth:`JoinStore.claim_labels`) before :meth:`resolve`."""
        entries = [e for rid in found for e in self._waiting.get(rid, [])]
        return [(e.request_id, self.record_key(e.offset)) for e in sorted(entries, key=_offset)]

    def resolve(self, found: dict[str, StoredPrediction], owners: dict[str, str]) -> Resolved:
        """Join waiting records whose prediction was found. A record joins only if it owns
        its request's label claim (``owners``: request_id -> record key); any other is a
        duplicate label, decided without a row."""
        rows: list[LabelledRow] = []
        duplicates: list[int] = []
        for request_id, prediction in found.items():
            for entry in self._waiting.pop(request_id, []):
                assert entry.feedback is not None
                entry.decided = True
                if owners.get(request_id) == self.record_key(entry.offset):
                    entry.row = join(prediction, entry.feedback)
                    entry.outcome = "joined"
                    rows.append(entry.row)
                else:
                    entry.outcome = "duplicate"
                    duplicates.append(entry.offset)
        return Resolved(rows, sorted(duplicates))

    def expire(
        self,
        now: float,
        wait_s: float,
        settled: Callable[[datetime], bool] = lambda _ts: True,
    ) -> list[int]:
        """Give up on records that waited at least ``wait_s`` *and* whose prediction can no
        longer arrive (``settled(feedback time)``: the co-partitioned predictions partition
        has been read past that time, or is caught up). A consumer working through a backlog
        therefore never drops feedback just because its predictions are still queued.
        Returns the offsets given up on."""
        expired: list[int] = []
        for request_id in list(self._waiting):
            entries = self._waiting[request_id]
            keep = []
            for e in entries:
                assert e.feedback is not None
                if now - e.arrived >= wait_s and settled(e.feedback.timestamp):
                    e.decided = True
                    e.outcome = "unmatched"
                    expired.append(e.offset)
                else:
                    keep.append(e)
            if keep:
                self._waiting[request_id] = keep
            else:
                del self._waiting[request_id]
        return expired

    def ready(self) -> tuple[int, float | None]:
        """(joined rows in the flushable prefix, arrival time of its oldest record)."""
        rows = 0
        oldest: float | None = None
        for entry in self._entries:
            if not entry.decided:
                break
            if oldest is None:
                oldest = entry.arrived
            rows += entry.row is not None
        return rows, oldest

    def take(self) -> list[Flush]:
        """Remove the decided prefix: an already-logged part (no file), then new parts in
        offset order, split wherever the rows' hour partition changes (one file each)."""
        taken: list[_Entry] = []
        while self._entries and self._entries[0].decided:
            taken.append(self._entries.popleft())
        if not taken:
            return []
        logged = [e for e in taken if e.outcome == "logged"]
        fresh = [e for e in taken if e.outcome != "logged"]
        flushes = []
        if logged:
            flushes.append(Flush(self.partition, logged[0].offset, logged[-1].offset, [], True))
        for part in _split_by_hour(fresh):
            rows = [e.row for e in part if e.row is not None]
            flushes.append(Flush(self.partition, part[0].offset, part[-1].offset, rows))
        return flushes

    def commit_offset(self, next_offset: int) -> int:
        """First offset not yet flushed (everything before it is in the log or skipped)."""
        return self._entries[0].offset if self._entries else next_offset


def _offset(entry: _Entry) -> int:
    return entry.offset


def _split_by_hour(entries: list[_Entry]) -> list[list[_Entry]]:
    """Consecutive runs of ``entries`` whose rows share one hour partition; a record without a
    row stays with the run before it (or, at the start, the first run)."""
    parts: list[list[_Entry]] = []
    hour: PurePosixPath | None = None
    for entry in entries:
        row_hour = partition_dir(entry.row.labelled_at) if entry.row is not None else None
        if not parts or (row_hour is not None and hour is not None and row_hour != hour):
            parts.append([])
        if row_hour is not None:
            hour = row_hour
        parts[-1].append(entry)
    return parts


@dataclass(frozen=True)
class ErrorSummary:
    n: int
    rmse: float
    mae: float
    bias: float


class OnlineError:
    """Rolling error over the latest ``rows`` labelled rows, per model version."""

    def __init__(self, rows: int) -> None:
        self._rows = rows
        self._errors: dict[str, deque[float]] = {}

    def add(self, model_version: str, errors: list[float] | np.ndarray) -> None:
        buf = self._errors.setdefault(model_version, deque(maxlen=self._rows))
        buf.extend(float(e) for e in errors)

    def versions(self) -> list[str]:
        return list(self._errors)

    def forget(self, model_version: str) -> None:
        self._errors.pop(model_version, None)

    def summary(self, model_version: str) -> ErrorSummary | None:
        buf = self._errors.get(model_version)
        if not buf:
            return None
        e = np.fromiter(buf, dtype="float64", count=len(buf))
        return ErrorSummary(
            n=len(e),
            rmse=float(math.sqrt(np.mean(e * e))),
            mae=float(np.mean(np.abs(e))),
            bias=float(np.mean(e)),
        )
