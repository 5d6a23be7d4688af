"""InfluxDB sink: per-window history over the v1 HTTP ``/write`` endpoint (line protocol).

``/write`` is the one write endpoint InfluxDB 1.x, 2.x (v1 compatibility) and 3.x all accept;
Debian's InfluxDB 1.6 has no ``/api/v2/write`` (ARCHITECTURE.md). Lines are serialised by
``influxdb_client``'s :class:`Point` (escaping, integer/boolean fields, precision) and POSTed
with httpx, one request per Kafka batch (split at ``batch_lines``).

Idempotent: a point's identity in InfluxDB is measurement + tag set + timestamp, and a window's
timestamp is derived from its own events (:attr:`ClosedWindow.time_ns`), so writing a replayed
window again overwrites the same points instead of adding a window.

Measurements (what Grafana charts)::

    drift         tags feature, statistic, model_version, partition   field value
    drift_window  tags model_version, partition
                  fields events, drift_share, drifted_series, declared, first_offset, last_offset
    drift_partial tags model_version, partition (a merged window's shares; the merged
                  window itself is partition -1 in drift and drift_window)
                  fields events, slot, first_offset, last_offset
    online_error  tags model_version
                  fields rmse_usd, mae_usd, bias_usd, rmse_ratio, rows

A Grafana panel's query, e.g.::

    SELECT max("value") FROM "drift" WHERE "statistic" = 'psi' AND $timeFilter
    GROUP BY time($__interval), "feature"
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import httpx
import structlog

from driftloop_service import Backoff, RetryHook, retrying

from ..drift import DriftDecision
from ..errors import InfluxWriteError
from ..windows import ClosedWindow

if TYPE_CHECKING:
    from influxdb_client import Point

log = structlog.get_logger(__name__)

DRIFT_MEASUREMENT = "drift"
WINDOW_MEASUREMENT = "drift_window"
ONLINE_ERROR_MEASUREMENT = "online_error"
#: A merged window's per-partition shares (windows.MergedWindows), partition ``-1`` in the others.
PARTIAL_MEASUREMENT = "drift_partial"


def _point(measurement: str) -> Point:
    from influxdb_client import Point  # heavy import (~seconds); only where points are built

    return Point(measurement)


def window_lines(window: ClosedWindow, decision: DriftDecision) -> list[str]:
    """Line protocol of one closed window: one ``drift`` point per series x statistic and one
    ``drift_window`` summary, all at the window's own timestamp."""
    from influxdb_client import WritePrecision

    ts = window.time_ns
    partition = str(window.partition)
    lines = []
    for series, statistic, value in window.statistics.values():
        if not math.isfinite(value):
            continue
        p = (
            _point(DRIFT_MEASUREMENT)
            .tag("feature", series)
            .tag("statistic", statistic)
            .tag("model_version", window.model_version)
            .tag("partition", partition)
            .field("value", float(value))
            .time(ts, WritePrecision.NS)
        )
        lines.append(p.to_line_protocol())
    summary = (
        _point(WINDOW_MEASUREMENT)
        .tag("model_version", window.model_version)
        .tag("partition", partition)
        .field("events", int(window.n))
        .field("drift_share", float(decision.drift_share))
        .field("drifted_series", len(decision.drifted_series))
        .field("declared", bool(decision.any_drift))
        .field("first_offset", int(window.first_offset))
        .field("last_offset", int(window.last_offset))
        .time(ts, WritePrecision.NS)
    )
    lines.append(summary.to_line_protocol())
    for part in window.parts:  # a merged window: each partition's share, for accounting
        lines.append(
            _point(PARTIAL_MEASUREMENT)
            .tag("model_version", window.model_version)
            .tag("partition", str(part.partition))
            .field("events", part.events)
            .field("slot", part.slot)
            .field("first_offset", part.first_offset)
            .field("last_offset", part.last_offset)
            .time(part.time_ns, WritePrecision.NS)
            .to_line_protocol()
        )
    return lines


def online_error_line(
    model_version: str,
    *,
    rmse: float,
    mae: float,
    bias: float,
    ratio: float | None,
    rows: int,
    time_ns: int,
) -> str:
    from influxdb_client import WritePrecision

    p = (
        _point(ONLINE_ERROR_MEASUREMENT)
        .tag("model_version", model_version)
        .field("rmse_usd", float(rmse))
        .field("mae_usd", float(mae))
        .field("bias_usd", float(bias))
        .field("rows", int(rows))
        .time(time_ns, WritePrecision.NS)
    )
    if ratio is not None and math.isfinite(ratio):
        p = p.field("rmse_ratio", float(ratio))
    return p.to_line_protocol()


class InfluxSink:
    """Batched, retried ``/write`` of line-protocol lines to one database."""

    def __init__(
        self,
        url: str,
        db: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
        batch_lines: int = 5_000,
        attempts: int = 3,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._db = db
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None
        self._batch = batch_lines
        self._attempts = attempts
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._on_retry = on_retry
        self._db_ready = False

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def ensure_database(self) -> None:
        """``CREATE DATABASE`` is idempotent in InfluxDB 1.x; other versions create on write
        or reject the statement, and both are fine here."""
        try:
            r = await self._client.post(
                f"{self._url}/query", data={"q": f'CREATE DATABASE "{self._db}"'}
            )
        except httpx.HTTPError as exc:
            raise InfluxWriteError(f"InfluxDB unreachable at {self._url}: {exc!r}") from exc
        if r.status_code < 500:
            self._db_ready = True
        else:
            raise InfluxWriteError(f"CREATE DATABASE answered {r.status_code}: {r.text[:200]}")

    async def write(self, lines: Iterable[str]) -> int:
        """Write all lines (in chunks); returns how many were accepted.

        Transient failures (connection, 5xx, timeouts) are tried ``attempts`` times with the
        shared backoff (:func:`driftloop_service.retrying`) and then raised as
        :class:`InfluxWriteError` (the caller keeps the batch and retries later). A
        400 means the lines themselves are bad: logged and dropped, never retried forever.
        """
        batch = [line for line in lines if line]
        if not batch:
            return 0
        if not self._db_ready:
            await self.ensure_database()
        written = 0
        for start in range(0, len(batch), self._batch):
            chunk = batch[start : start + self._batch]
            written += await self._write_chunk("\n".join(chunk).encode())
        return written

    async def _write_chunk(self, body: bytes) -> int:
        policy = retrying(
            backoff=self._backoff,
            attempts=self._attempts,
            retry_on=_Transient,
            on_retry=self._on_retry,
        )
        try:
            return await policy(self._post_chunk, body)
        except _Transient as exc:
            raise InfluxWriteError(f"InfluxDB write to {self._url} failed: {exc}") from None

    async def _post_chunk(self, body: bytes) -> int:
        """One ``/write``: the number of lines accepted, or :class:`_Transient` to try again."""
        params = {"db": self._db, "precision": "ns"}
        try:
            r = await self._client.post(f"{self._url}/write", params=params, content=body)
        except httpx.HTTPError as exc:
            raise _Transient(repr(exc)) from exc
        if r.status_code in (200, 204):
            return body.count(b"\n") + 1
        if r.status_code == 404 and "database not found" in r.text:
            self._db_ready = False
            await self.ensure_database()  # InfluxWriteError if it cannot: not retried here
            raise _Transient("database not found (created)")
        if r.status_code == 400:
            log.error("influx_lines_rejected", status=400, body=r.text[:300])
            return 0
        raise _Transient(f"HTTP {r.status_code}: {r.text[:200]}")


class _Transient(Exception):
    """A failed ``/write`` worth another try (connection, timeout, 5xx, database missing)."""
