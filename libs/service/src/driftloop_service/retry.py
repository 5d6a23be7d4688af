"""One way to retry: :func:`retrying` builds a :class:`tenacity.AsyncRetrying` for every loop.

Every service retries the same way, so an outage looks the same everywhere:

* **Backoff** is capped exponential, ``min(maximum, initial * 2 ** (attempt - 1))``
  (:class:`Backoff`; the same numbers as tenacity's ``wait_exponential``). The bridge's durable
  queue, whose attempt count lives in Redis rather than in a running loop, asks the same
  object for the wait after its n-th attempt (:meth:`Backoff.delay`).
* **Stop-aware sleep**: with ``stopping`` (the service's shutdown event) the wait between two
  attempts ends the moment it is set, and retrying ends with :class:`RetryStopped` instead of
  trying once more; nobody waits out a 10-second backoff to shut down.
* **Metrics hook**: ``on_retry(attempt, error, delay)`` runs before every wait, so a service
  counts and logs its retries (``driftloop_retries_total``, see :mod:`.metrics`) in one place.
* **Giving up**: after ``attempts`` tries the last error is re-raised unchanged (``reraise``),
  so callers catch their own exception types, never tenacity's ``RetryError``.

Example::

    policy = retrying(backoff=Backoff(0.2, 5.0), attempts=3, retry_on=InfluxWriteError,
                      on_retry=hook, stopping=stopping)
    await policy(sink.write, lines)          # or: async for attempt in policy: with attempt: ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import tenacity
from tenacity import AsyncRetrying, RetryCallState
from tenacity.wait import wait_base

__all__ = ["Backoff", "RetryHook", "RetryStopped", "retrying", "wait_or_stop"]

#: ``2 ** 16`` times the initial wait is beyond any cap; bigger exponents would only overflow.
_MAX_EXPONENT = 16


class RetryStopped(Exception):
    """Retrying ended because the service is stopping (raised from the wait between tries)."""


@dataclass(frozen=True)
class Backoff(wait_base):
    """Capped exponential wait: ``initial``, ``2 * initial``, ... up to ``maximum`` seconds.

    A tenacity wait strategy (pass it as ``wait=``), and a plain function of the attempt
    count for retries whose state outlives a process.
    """

    initial: float
    maximum: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed try (1-based)."""
        exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
        return float(min(self.maximum, self.initial * 2**exponent))

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)


class RetryHook(Protocol):
    """Called before each wait: which try failed (1-based), with what, and the coming wait."""

    def __call__(self, attempt: int, error: BaseException, delay: float) -> None: ...


async def wait_or_stop(stopping: asyncio.Event | None, seconds: float) -> bool:
    """Sleep up to ``seconds``; return True (early) as soon as ``stopping`` is set."""
    if stopping is None:
        await asyncio.sleep(seconds)
        return False
    if stopping.is_set():
        return True
    # Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the
    # event is set (a shutdown does both), and the cancelled task then runs on.
    waiter = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return bool(done)


class _StopAwareSleep:
    """tenacity's ``sleep``: waits like :func:`wait_or_stop` and ends retrying on shutdown."""

    def __init__(self, stopping: asyncio.Event | None) -> None:
        self._stopping = stopping

    async def __call__(self, seconds: float) -> None:
        if await wait_or_stop(self._stopping, seconds):
            raise RetryStopped("stopping: retrying abandoned")


def _before_sleep(hook: RetryHook) -> Callable[[RetryCallState], None]:
    def call(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if error is not None:
            hook(state.attempt_number, error, state.upcoming_sleep)

    return call


def retrying(
    *,
    backoff: Backoff,
    attempts: int | None = None,
    retry_on: type[BaseException] | Iterable[type[BaseException]] = Exception,
    stopping: asyncio.Event | None = None,
    on_retry: RetryHook | None = None,
) -> AsyncRetrying:
    """The retry policy every loop uses (see the module docstring).

    ``attempts=None`` retries until it works (or ``stopping`` is set); errors that are not
    ``retry_on`` pass through at once, and so does cancellation.
    """
    kinds = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)
    return AsyncRetrying(
        wait=backoff,
        stop=tenacity.stop_never if attempts is None else tenacity.stop_after_attempt(attempts),
        retry=tenacity.retry_if_exception_type(kinds),
        sleep=_StopAwareSleep(stopping),
        reraise=True,
        before_sleep=_before_sleep(on_retry) if on_retry is not None else None,
    )
