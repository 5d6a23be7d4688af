"""A record of the events a replica has accepted but the broker has not acknowledged, kept where
a SIGKILL cannot erase it: a memory-mapped file in the state directory.

Why a file mapping: a killed process cannot count its own loss, but the pages of a
``MAP_SHARED`` file mapping belong to the kernel's page cache, so every byte stored before the
kill is in the file afterwards, with no ``fsync`` and no system call per event. (A machine
crash or power cut can lose the last pages; that is outside what this counts.)

Why the keys, not counters: ``accepted - delivered - dropped`` of a killed process is only an
upper bound of its loss. The batch in flight when it died may have reached the broker without
the ack being seen, and nginx retries the requests the dead process had not answered on
another replica, which publishes them again under the same ``request_id``. Neither is lost.
Keeping the key of every pending event lets the next incarnation look for them on the topic
(:mod:`.recovery`) and count exactly the ones that are not there.

Alternatives considered. prometheus-client's multiprocess mode also keeps counters in mmap'd
files that outlive the process, but it holds counters only (no keys, so no exact count), is
switched on process-wide by an environment variable (the tests build many apps, each on its
own registry, in one process) and would change how every metric of the service is collected.
LMDB (``lmdb``) would keep the key set crash-safely too, but costs a write transaction per
event (several µs) and a C dependency for what is, given that the publisher already bounds
how many events can be pending, a fixed table of slots: one slice assignment per accepted
event and one byte per settled one (``bench/bench_ledger.py`` measures both, well under 1 µs).

File layout (little-endian; one file per incarnation, ``events-ledger.<replica>.<incarnation>.bin``):

* header (:data:`HEADER_BYTES`): magic, slot count, slot size, topic count, partitions per
  topic; then per topic its name and, per partition, the offset from which an unacknowledged
  event of this incarnation can be on the topic (``-1``: unknown, read from the start).
* slots: byte 0 = topic index + 1 (0 = free), byte 1 = key length, then the key (a key longer
  than :data:`KEY_BYTES` is stored as its BLAKE2b digest, see :func:`slot_key`). The tag byte is
  written last, so a slot is either free or complete whenever the process dies.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

MAGIC = b"DLLEDGR1"
HEADER_BYTES = 8192
#: Kafka partitions per topic the header has room for (the data topics have 4).
MAX_PARTITIONS = 64
TOPIC_NAME_BYTES = 56
KEY_BYTES = 142
SLOT_BYTES = 2 + KEY_BYTES
_HEAD = struct.Struct("<8sIIII")
_OFFSET = struct.Struct("<q")
_TOPIC_BYTES = TOPIC_NAME_BYTES + MAX_PARTITIONS * _OFFSET.size
PREFIX = "events-ledger"
SUFFIX = ".bin"


def slot_key(key: bytes) -> bytes:
    """What a slot holds for ``key``: the key itself, or ``#`` + its digest if it is too long.

    The recovery scan applies the same function to the keys it reads, so both sides compare
    like with like. (Request ids are at most 132 characters; the digest is a safety net.)
    """
    if len(key) <= KEY_BYTES:
        return key
    return b"#" + hashlib.blake2b(key, digest_size=32).hexdigest().encode()


def ledger_glob(replica_id: str) -> str:
    return f"{PREFIX}.{_safe(replica_id)}.*{SUFFIX}"


def totals_name(replica_id: str) -> str:
    """The running total of a replica's lost events (see :mod:`.recovery`)."""
    return f"events-lost.{_safe(replica_id)}.json"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


class EventLedger(Protocol):
    """What the publisher records: one slot per accepted event, freed once settled."""

    def add(self, topic: str, key: bytes) -> int:
        """Record an accepted event; returns its slot (``-1``: not recorded)."""

    def settle(self, slot: int) -> None:
        """The event in ``slot`` was acknowledged or counted as dropped."""

    def acked(self, topic: str, partition: int, offset: int) -> None:
        """The broker acknowledged offset ``offset`` of ``topic``/``partition`` for us."""

    def close(self) -> None:
        """Unmap; remove the file if nothing is pending (a clean shutdown)."""


class NullLedger:
    """No state directory configured: nothing is recorded, nothing can be recovered."""

    def add(self, topic: str, key: bytes) -> int:
        return -1

    def settle(self, slot: int) -> None:
        return None

    def acked(self, topic: str, partition: int, offset: int) -> None:
        return None

    def close(self) -> None:
        return None


class MmapLedger:
    """The ledger of the running incarnation (see the module docstring for the layout)."""

    def __init__(self, directory: Path, replica_id: str, topics: tuple[str, ...], slots: int):
        if not 0 < len(topics) <= (HEADER_BYTES - _HEAD.size) // _TOPIC_BYTES:
            raise ValueError(f"unsupported number of topics: {topics}")
        directory.mkdir(parents=True, exist_ok=True)
        incarnation = f"{time.time_ns()}-{os.getpid()}"
        self.path = directory / f"{PREFIX}.{_safe(replica_id)}.{incarnation}{SUFFIX}"
        self._topics = {t: i for i, t in enumerate(topics)}
        self._slots = slots
        size = HEADER_BYTES + slots * SLOT_BYTES
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: a page is allocated when first written
            self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        _HEAD.pack_into(self._mm, 0, MAGIC, slots, SLOT_BYTES, len(topics), MAX_PARTITIONS)
        for topic, i in self._topics.items():
            at = _HEAD.size + i * _TOPIC_BYTES
            self._mm[at : at + TOPIC_NAME_BYTES] = topic.encode().ljust(TOPIC_NAME_BYTES, b"\0")
            for p in range(MAX_PARTITIONS):
                _OFFSET.pack_into(self._mm, at + TOPIC_NAME_BYTES + p * _OFFSET.size, -1)
        self._acked: dict[tuple[int, int], int] = {}
        #: Free slots, lowest on top: the file's touched pages stay few.
        self._free = list(range(slots - 1, -1, -1))
        self.pending = 0

    def add(self, topic: str, key: bytes) -> int:
        if not self._free:  # cannot happen when sized by the publisher's bounds
            return -1
        slot = self._free.pop()
        data = slot_key(key)
        at = HEADER_BYTES + slot * SLOT_BYTES
        self._mm[at + 1 : at + 2 + len(data)] = bytes((len(data),)) + data
        self._mm[at] = self._topics[topic] + 1
        self.pending += 1
        return slot

    def settle(self, slot: int) -> None:
        if slot < 0:
            return
        self._mm[HEADER_BYTES + slot * SLOT_BYTES] = 0
        self._free.append(slot)
        self.pending -= 1

    def acked(self, topic: str, partition: int, offset: int) -> None:
        index = self._topics[topic]
        if not 0 <= partition < MAX_PARTITIONS or self._acked.get((index, partition), -1) >= offset:
            return
        self._acked[(index, partition)] = offset
        at = _HEAD.size + index * _TOPIC_BYTES + TOPIC_NAME_BYTES + partition * _OFFSET.size
        _OFFSET.pack_into(self._mm, at, offset)

    def close(self) -> None:
        if self._mm.closed:
            return
        self._mm.close()
        if self.pending == 0:
            self.path.unlink(missing_ok=True)


@dataclass
class LedgerContents:
    """What a previous incarnation left: its pending keys and where to look for them."""

    path: Path
    #: topic -> keys (as :func:`slot_key` stored them), one per pending event.
    pending: dict[str, list[bytes]] = field(default_factory=dict)
    #: topic -> partition -> highest offset acknowledged to it (unacknowledged events can only
    #: be after it); a partition absent here must be read from its start.
    acked: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(keys) for keys in self.pending.values())


class LedgerUnreadable(ValueError):
    """The file is not a ledger (truncated, another format)."""


def read_ledger(path: Path) -> LedgerContents:
    """Read a ledger file left by an earlier incarnation (never the running one's)."""
    data = path.read_bytes()
    if len(data) < HEADER_BYTES:
        raise LedgerUnreadable(f"{path}: {len(data)} bytes, shorter than the header")
    magic, slots, slot_bytes, n_topics, partitions = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or slot_bytes != SLOT_BYTES or partitions != MAX_PARTITIONS:
        raise LedgerUnreadable(f"{path}: not a ledger of this format")
    if len(data) < HEADER_BYTES + slots * slot_bytes:
        raise LedgerUnreadable(f"{path}: truncated slot table")
    out = LedgerContents(path)
    topics: list[str] = []
    for i in range(n_topics):
        at = _HEAD.size + i * _TOPIC_BYTES
        topic = data[at : at + TOPIC_NAME_BYTES].rstrip(b"\0").decode()
        topics.append(topic)
        out.pending[topic] = []
        offsets = (
            _OFFSET.unpack_from(data, at + TOPIC_NAME_BYTES + p * _OFFSET.size)[0]
            for p in range(MAX_PARTITIONS)
        )
        out.acked[topic] = {p: o for p, o in enumerate(offsets) if o >= 0}
    view = memoryview(data)
    for slot in range(slots):
        at = HEADER_BYTES + slot * SLOT_BYTES
        tag = data[at]
        if tag == 0:
            continue
        if tag > n_topics:
            raise LedgerUnreadable(f"{path}: slot {slot} names topic {tag - 1}")
        length = data[at + 1]
        out.pending[topics[tag - 1]].append(bytes(view[at + 2 : at + 2 + length]))
    return out
