"""Shutdown: the one ``stopping`` event every task of an instance watches, and a sleep that
wakes early when it is set.

A task that backs off (a sink retry, a restart of the Kafka consumer, a reference check) waits
with :func:`sleep_unless_stopping`, so shutdown never waits out a back-off. A retry that is
interrupted by shutdown raises :class:`Stopping`: the batch is abandoned and nothing is
committed, so the records are simply read again by the next run.
"""

from __future__ import annotations

import asyncio


class Stopping(Exception):
    """Raised inside a retry when shutdown was requested: abandon the batch, commit nothing."""


async def sleep_unless_stopping(
    stopping: asyncio.Event, seconds: float, also: asyncio.Event | None = None
) -> None:
    """Sleep up to ``seconds``; wake early on shutdown (or when ``also`` is set)."""
    waiters = [asyncio.ensure_future(stopping.wait())]
    if also is not None:
        waiters.append(asyncio.ensure_future(also.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
