"""The retry helper: retries with capped exponential waits, reports each retry, gives up with
the original error, and ends at once (without another try) when the service stops."""

from __future__ import annotations

import asyncio

import pytest

from driftloop_service import Backoff, RetryStopped, retrying, wait_or_stop


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"done"``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


def test_backoff_is_capped_exponential() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(0) == 0.5
    assert backoff.delay(10_000) == 10.0  # no overflow for a long outage


async def test_retries_until_it_works_and_reports_every_retry() -> None:
    seen: list[tuple[int, str, float]] = []
    flaky = Flaky(3)
    policy = retrying(
        backoff=Backoff(0.001, 0.002),
        on_retry=lambda attempt, error, delay: seen.append((attempt, str(error), delay)),
    )
    assert await policy(flaky) == "done"
    assert flaky.calls == 4
    assert seen == [(1, "failure 1", 0.001), (2, "failure 2", 0.002), (3, "failure 3", 0.002)]


async def test_gives_up_after_attempts_with_the_original_error() -> None:
    flaky = Flaky(10)
    retries: list[int] = []
    policy = retrying(
        backoff=Backoff(0.001, 0.001),
        attempts=3,
        on_retry=lambda attempt, error, delay: retries.append(attempt),
    )
    with pytest.raises(ConnectionError, match="failure 3"):
        await policy(flaky)
    assert flaky.calls == 3
    assert retries == [1, 2]  # the third failure is not retried, so not reported


async def test_other_errors_pass_through_untried() -> None:
    flaky = Flaky(1, ValueError)
    with pytest.raises(ValueError):
        await retrying(backoff=Backoff(0.001, 0.001), retry_on=ConnectionError)(flaky)
    assert flaky.calls == 1


async def test_stopping_cuts_the_wait_short_and_ends_retrying() -> None:
    stopping = asyncio.Event()
    flaky = Flaky(100)
    policy = retrying(backoff=Backoff(60.0, 60.0), stopping=stopping)
    task: asyncio.Task[str] = asyncio.create_task(policy(flaky))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while flaky.calls < 1:
        assert loop.time() < deadline
        await asyncio.sleep(0)
    started = loop.time()
    stopping.set()
    with pytest.raises(RetryStopped):
        await asyncio.wait_for(task, 5)
    assert loop.time() - started < 1.0  # not the 60-second backoff
    assert flaky.calls == 1  # no further try after the stop


async def test_already_stopping_does_not_wait_at_all() -> None:
    stopping = asyncio.Event()
    stopping.set()
    flaky = Flaky(100)
    with pytest.raises(RetryStopped):
        await asyncio.wait_for(retrying(backoff=Backoff(60, 60), stopping=stopping)(flaky), 5)
    assert flaky.calls == 1


async def test_async_for_form() -> None:
    flaky = Flaky(2)
    result = None
    async for attempt in retrying(backoff=Backoff(0.001, 0.001), attempts=5):
        with attempt:
            result = await flaky()
    assert result == "done" and flaky.calls == 3


async def test_wait_or_stop() -> None:
    stopping = asyncio.Event()
    assert await wait_or_stop(stopping, 0.001) is False
    assert await wait_or_stop(None, 0.001) is False
    stopping.set()
    assert await asyncio.wait_for(wait_or_stop(stopping, 60), 5) is True


async def test_a_cancel_that_arrives_with_the_stop_is_not_swallowed() -> None:
    """A shutdown sets ``stopping`` and cancels the task in the same tick: the task must end."""
    stopping = asyncio.Event()
    ran_on = asyncio.Event()

    async def sleeper() -> None:
        await wait_or_stop(stopping, 30)
        ran_on.set()  # only reached if the cancellation was lost
        await asyncio.Event().wait()

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0.01)  # it is waiting now
    stopping.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done and task.cancelled() and not ran_on.is_set()
