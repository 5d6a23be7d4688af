"""sinks/influx.py: line protocol per window, and a /write client that retries, creates the
database, and never loops on lines InfluxDB rejects."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from driftloop_contracts.thresholds import ThresholdSet
from driftloop_drift_consumer.drift import decide
from driftloop_drift_consumer.errors import InfluxWriteError
from driftloop_drift_consumer.sinks.influx import InfluxSink, online_error_line, window_lines
from driftloop_drift_consumer.windows import EventBatch, WindowManager, WindowPolicy

from .conftest import ReferenceData


def closed_window(reference: ReferenceData):
    wm = WindowManager(WindowPolicy(), reference.compiled)
    values = reference.values[:200]
    (w,) = wm.add(1, EventBatch(np.arange(100, 300), np.full(200, 1_700_000_000_000_000), values))
    return w


def test_window_lines(reference: ReferenceData) -> None:
    w = closed_window(reference)
    lines = window_lines(w, decide(w.statistics, ThresholdSet()))
    assert len(lines) == 9 * 4 + 1
    ts = str(w.time_ns)
    assert all(line.endswith(" " + ts) for line in lines)
    assert any(
        line.startswith(
            "drift,feature=median_income_in_block,model_version=1,partition=1,statistic=psi value="
        )
        for line in lines
    )
    summary = lines[-1]
    assert summary.startswith("drift_window,model_version=1,partition=1 ")
    assert "events=200i" in summary and "first_offset=100i" in summary
    assert "last_offset=299i" in summary and "declared=" in summary
    assert w.time_ns == 1_700_000_000_000_000 * 1000 + 299


def test_online_error_line_skips_unknown_ratio() -> None:
    line = online_error_line("4", rmse=1.0, mae=0.5, bias=-0.1, ratio=None, rows=10, time_ns=5)
    assert line == "online_error,model_version=4 bias_usd=-0.1,mae_usd=0.5,rmse_usd=1,rows=10i 5"


def make_sink(handler, on_retry=None) -> tuple[InfluxSink, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return InfluxSink(
        "http://influx:8086/",
        "driftloop",
        client=client,
        batch_lines=2,
        retry_initial_s=0.001,
        on_retry=on_retry,
    ), seen


async def test_write_creates_the_database_once_and_chunks() -> None:
    sink, seen = make_sink(lambda r: httpx.Response(204 if r.url.path == "/write" else 200))
    assert await sink.write(["a v=1 1", "b v=2 2", "c v=3 3"]) == 3
    paths = [r.url.path for r in seen]
    assert paths == ["/query", "/write", "/write"]
    assert seen[1].url.params["db"] == "driftloop" and seen[1].url.params["precision"] == "ns"
    assert seen[1].content == b"a v=1 1\nb v=2 2"
    await sink.write(["d v=4 4"])
    assert [r.url.path for r in seen].count("/query") == 1


async def test_transient_failures_are_retried_then_raised() -> None:
    calls = {"n": 0}

    def flaky(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/query":
            return httpx.Response(200)
        calls["n"] += 1
        return httpx.Response(503 if calls["n"] < 3 else 204)

    retries: list[tuple[int, str]] = []
    sink, _ = make_sink(
        flaky, on_retry=lambda attempt, error, delay: retries.append((attempt, str(error)[:8]))
    )
    assert await sink.write(["a v=1 1"]) == 1
    assert retries == [(1, "HTTP 503"), (2, "HTTP 503")]  # each retry reaches the metrics hook
    down, _ = make_sink(
        lambda r: (
            httpx.Response(200) if r.url.path == "/query" else httpx.Response(500, text="boom")
        )
    )
    with pytest.raises(InfluxWriteError, match="boom"):
        await down.write(["a v=1 1"])

    def refuse(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    unreachable, _ = make_sink(refuse)
    with pytest.raises(InfluxWriteError, match="unreachable"):
        await unreachable.write(["a v=1 1"])


async def test_missing_database_is_created_and_bad_lines_are_dropped() -> None:
    state = {"db": False}

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/query":
            state["db"] = True
            return httpx.Response(200)
        if not state["db"]:
            return httpx.Response(404, text='{"error":"database not found: \\"driftloop\\""}')
        if b"bad" in r.content:
            return httpx.Response(400, text="unable to parse")
        return httpx.Response(204)

    sink, _ = make_sink(handler)
    sink._db_ready = True  # pretend it existed, then was dropped
    assert await sink.write(["a v=1 1"]) == 1
    assert await sink.write(["bad line"]) == 0
