"""The durable retry queue: backoff, leasing, max age -> dead letter, survival across restarts."""

from __future__ import annotations

import asyncio

import pytest

from driftloop_bridge.retry_queue import Attempt, AttemptOutcome, PendingTrigger, RetryQueue
from driftloop_bridge.store import RedisKeys
from driftloop_service import Backoff

KEYS = RedisKeys("q")

#: What the final-outcome hook saw: (dag_run_id, outcome) per trigger.
Finals = list[tuple[str, AttemptOutcome]]


def _queue(redis, trigger, clock, finals: Finals | None = None, max_age: float = 300) -> RetryQueue:
    async def on_final(item: PendingTrigger, attempt: Attempt) -> None:
        if finals is not None:
            finals.append((item.dag_run_id, attempt.outcome))

    return RetryQueue(
        redis,
        KEYS,
        trigger,
        clock=clock,
        backoff=Backoff(1.0, 30.0),
        max_age_seconds=max_age,
        poll_seconds=0.05,
        call_timeout_seconds=1.0,
        on_final=on_final,
    )


async def _enqueue(redis, item: PendingTrigger, due: float) -> None:
    await redis.hset(KEYS.pending_items, item.dag_run_id, item.to_json())
    await redis.zadd(KEYS.pending_schedule, {item.dag_run_id: due * 1000})


def _item(clock, run_id: str = "run-1") -> PendingTrigger:
    return PendingTrigger(
        dag_id="retrain",
        dag_run_id=run_id,
        conf={"labels": {"feature": "x"}},
        source="grafana",
        alertname="DriftFeatureHigh",
        fingerprint="f",
        rule="r",
        first_seen=clock(),
    )


def test_backoff_is_exponential_and_capped() -> None:
    backoff = Backoff(1.0, 30.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert Backoff(0.5, 60).delay(3) == 2.0


async def test_success_removes_the_item(redis, clock, fake_trigger) -> None:
    queue = _queue(redis, fake_trigger, clock)
    item = _item(clock)
    await _enqueue(redis, item, clock())
    attempt = await queue.attempt(item)
    assert attempt.outcome == "created"
    assert await queue.counts() == (0, 0)


async def test_repeat_after_success_is_exists(redis, clock, fake_trigger) -> None:
    queue = _queue(redis, fake_trigger, clock)
    item = _item(clock)
    assert (await queue.attempt(item)).outcome == "created"
    assert (await queue.attempt(_item(clock))).outcome == "exists"


async def test_unavailable_airflow_reschedules_with_growing_backoff(redis, clock, fake_trigger):
    fake_trigger.mode = "down"
    queue = _queue(redis, fake_trigger, clock)
    item = _item(clock)
    await _enqueue(redis, item, clock())
    waits = []
    for _ in range(4):
        assert await queue.process_due() == 1
        score = await redis.zscore(KEYS.pending_schedule, item.dag_run_id)
        waits.append(score / 1000 - clock())
        # nothing is due before the backoff has passed
        assert await queue.process_due() == 0
        clock.advance(waits[-1])
    assert waits == [1.0, 2.0, 4.0, 8.0]
    (stored,) = await queue.pending()
    assert stored.attempts == 4
    assert "connection refused" in stored.last_error


async def test_items_survive_a_new_queue_instance(redis, clock, fake_trigger) -> None:
    fake_trigger.mode = "down"
    first = _queue(redis, fake_trigger, clock)
    item = _item(clock)
    await _enqueue(redis, item, clock())
    await first.process_due()
    # "restart": a brand-new queue object on the same Redis, Airflow back
    fake_trigger.mode = "ok"
    finals: Finals = []
    second = _queue(redis, fake_trigger, clock, finals)
    clock.advance(1)
    assert await second.process_due() == 1
    assert finals == [("run-1", "created")]
    assert await second.counts() == (0, 0)
    assert list(fake_trigger.runs) == ["run-1"]


async def test_max_age_moves_to_dead_letters(redis, clock, fake_trigger) -> None:
    fake_trigger.mode = "down"
    finals: Finals = []
    queue = _queue(redis, fake_trigger, clock, finals, max_age=10)
    item = _item(clock)
    await _enqueue(redis, item, clock())
    for _ in range(40):
        if not await queue.process_due():
            clock.advance(1)
    assert finals == [("run-1", "dead_letter")]
    assert await queue.counts() == (0, 1)
    (dead,) = await queue.dead_letters()
    assert dead.dag_run_id == "run-1"
    assert "max age" in dead.last_error


async def test_rejected_trigger_is_dead_lettered_at_once(redis, clock, fake_trigger) -> None:
    fake_trigger.mode = "reject"
    queue = _queue(redis, fake_trigger, clock)
    item = _item(clock)
    await _enqueue(redis, item, clock())
    attempt = await queue.attempt(item)
    assert attempt.outcome == "dead_letter"
    assert "rejected by Airflow" in attempt.detail
    assert await queue.counts() == (0, 1)


async def test_lease_keeps_a_second_worker_off(redis, clock, fake_trigger) -> None:
    fake_trigger.mode = "down"
    queue_a = _queue(redis, fake_trigger, clock)
    queue_b = _queue(redis, fake_trigger, clock)
    await _enqueue(redis, _item(clock), clock())
    results = await asyncio.gather(queue_a.process_due(), queue_b.process_due())
    assert sorted(results) == [0, 1]


async def test_run_loop_drains_and_stops(redis, fake_trigger) -> None:
    import time

    queue = _queue(redis, fake_trigger, time.time)
    for i in range(3):
        item = _item(time.time, f"run-{i}")
        await _enqueue(redis, item, time.time())
    stopping = asyncio.Event()
    task = asyncio.create_task(queue.run(stopping))
    for _ in range(250):  # poll, 5 s deadline
        if (await queue.counts())[0] == 0:
            break
        await asyncio.sleep(0.02)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert sorted(fake_trigger.runs) == ["run-0", "run-1", "run-2"]


@pytest.mark.parametrize("attempts", [0, 1])
def test_pending_trigger_json_round_trip(attempts: int) -> None:
    item = PendingTrigger("d", "r", {"a": [1]}, "grafana", "A", "f", "rule", 1.5, attempts)
    assert PendingTrigger.from_json(item.to_json()) == item
