"""Retention of the labelled-data log: hour partitions older than ``labelled_retention_days``
are deleted, whole, once an hour, by the drift consumer (the log's only writer).

A partition ``date=YYYY-MM-DD/hour=HH`` is expired once its *end* (the next hour) is more than
the retention before now, so no file that a retraining run's lookback or the consumer's
``labelled_scan_hours`` can still read is ever removed, as long as the retention covers them
(the settings validator checks the scan; docs/operations.md names the DAG's lookback).
Deleting is idempotent: two consumers of one group may both prune, and a partition that is
already gone is skipped. A failure is logged and retried at the next pass; it never affects
consumption.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from driftloop_service.retry import wait_or_stop

log = structlog.get_logger(__name__)

#: One pass an hour: partitions are hourly, so pruning more often frees nothing more.
PRUNE_INTERVAL_SECONDS = 3600.0
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR = re.compile(r"^hour=(\d{2})$")


def expired_partitions(root: Path, keep_days: int, now: datetime) -> list[Path]:
    """Hour-partition directories under ``root`` that ended more than ``keep_days`` ago."""
    cutoff = now.astimezone(UTC) - timedelta(days=keep_days)
    out: list[Path] = []
    if not root.is_dir():
        return out
    for date_dir in sorted(root.iterdir()):
        m = _DATE.match(date_dir.name)
        if not m or not date_dir.is_dir():
            continue
        day = datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
        for hour_dir in sorted(date_dir.iterdir()):
            h = _HOUR.match(hour_dir.name)
            if h and hour_dir.is_dir() and day + timedelta(hours=int(h.group(1)) + 1) <= cutoff:
                out.append(hour_dir)
    return out


def prune(root: Path, keep_days: int, now: datetime | None = None) -> list[Path]:
    """Delete the expired hour partitions (and date directories left empty); returns them."""
    now = now or datetime.now(UTC)
    removed = []
    for hour_dir in expired_partitions(root, keep_days, now):
        try:
            shutil.rmtree(hour_dir)
        except FileNotFoundError:  # another consumer of the group pruned it first
            continue
        removed.append(hour_dir)
        date_dir = hour_dir.parent
        with contextlib.suppress(FileNotFoundError, OSError):  # gone, or not empty yet
            if not any(date_dir.iterdir()):
                date_dir.rmdir()
    return removed


async def run_retention(
    root: Path,
    keep_days: int,
    stopping: asyncio.Event,
    interval_s: float = PRUNE_INTERVAL_SECONDS,
) -> None:
    """Prune at start and then every ``interval_s`` until ``stopping`` is set."""
    while True:
        try:
            removed = await asyncio.to_thread(prune, root, keep_days)
            if removed:
                log.info(
                    "labelled_partitions_deleted",
                    count=len(removed),
                    oldest=str(removed[0].relative_to(root)),
                    keep_days=keep_days,
                )
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # retried at the next pass; consumption goes on
            log.warning("labelled_retention_failed", error=str(exc), root=str(root))
        if await wait_or_stop(stopping, interval_s):
            return
