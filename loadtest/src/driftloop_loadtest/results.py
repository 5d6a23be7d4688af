"""Reading a headless run's reports back (for tests and summaries).

Locust's ``<prefix>_stats.csv`` has one row per request name plus an ``Aggregated`` row;
expected 422s of the bad-request mix are already successes there (see locustfile).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AGGREGATED", "EndpointStats", "read_failures", "read_schedule_log", "read_stats"]

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class EndpointStats:
    """One row of ``_stats.csv``: a request name's counts."""

    method: str
    name: str
    requests: int
    failures: int


def read_stats(stats_csv: Path) -> dict[str, EndpointStats]:
    """Rows of ``stats_csv`` keyed by request name (``"Aggregated"`` for the total)."""
    out: dict[str, EndpointStats] = {}
    with stats_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = row["Name"]
            out[name] = EndpointStats(
                method=row.get("Type", ""),
                name=name,
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
            )
    return out


def read_failures(failures_csv: Path) -> list[dict[str, str]]:
    """Rows of ``_failures.csv`` (method, name, error, occurrences); empty if none."""
    if not failures_csv.exists():
        return []
    with failures_csv.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_schedule_log(path: Path) -> list[dict[str, Any]]:
    """The scenario switches a run recorded (one JSON object per line), oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
