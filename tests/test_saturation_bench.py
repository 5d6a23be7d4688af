"""The saturation bench's decisions (bench/saturation.py), on made-up steps: no stack, no locust.

What is pinned: a stage is called saturated where its own signal says so (achieved stops
following offered; the replicas' buffer grows; the consumer's lag grows while it consumes less
than is published; Redis at a full core), and not before; the bound named is the machine when
all cores were busy, else the process at a full core; the cluster sizes follow the stated rule.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.saturation import (
    CONSUMER,
    EVENTS,
    REDIS,
    SERVING,
    TARGET_UTILISATION,
    Capacity,
    Step,
    Verdict,
    bound_by,
    decide,
    extrapolate,
    offered_rps,
)


def step(users: int, offered: float, achieved: float, **kw: object) -> Step:
    base: dict[str, object] = dict(
        seconds=50.0,
        failures=0,
        p50_ms=5.0,
        p99_ms=20.0,
        published_eps=achieved,
        delivery_failures=0.0,
        buffered_start=0.0,
        buffered_end=0.0,
        consumed_eps=achieved,
        lag_start=0.0,
        lag_end=0.0,
        redis_ops=2 * achieved,
        redis_instant_ops=2 * achieved,
        cpu_pct={"model-api-0": 30.0, "model-api-1": 30.0, "machine": 100.0},
    )
    base.update(kw)
    return Step(users=users, offered_rps=offered, achieved_rps=achieved, **base)  # type: ignore[arg-type]


def by_stage(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.stage: v for v in verdicts}


def test_offered_is_the_zero_latency_rate_of_the_closed_loop() -> None:
    # 4 users, mean think 0.125 s -> 8 iterations/s each; 1 + 0.5 * 0.98 requests per iteration
    assert offered_rps(4, 0.05, 0.2, 0.5, 0.02) == 4 * 1.49 / 0.125


def test_nothing_saturates_while_every_stage_follows() -> None:
    steps = [step(2, 24, 22), step(4, 48, 44), step(8, 96, 86)]
    v = by_stage(decide(steps, replicas=2, cores=2))
    assert [v[s].saturated for s in (SERVING, EVENTS, CONSUMER, REDIS)] == [False] * 4
    assert v[SERVING].rate_held == 86
    assert v[SERVING].bounded_by == "not saturated"


def test_serving_saturates_where_achieved_stops_following_and_names_the_hot_replica() -> None:
    hot = {"model-api-0": 97.0, "model-api-1": 95.0, "nginx": 20.0, "machine": 150.0}
    steps = [step(2, 24, 22), step(4, 48, 44), step(8, 96, 50, cpu_pct=hot, p99_ms=300.0)]
    v = by_stage(decide(steps, replicas=2, cores=2))[SERVING]
    assert v.saturated and v.step_users == 8
    assert v.rate_held == 50
    assert v.bounded_by == "model-api-0 97% of a core, model-api-1 95% of a core"
    assert "gain 0.12" in v.evidence


def test_a_failed_request_is_saturation_at_that_step() -> None:
    steps = [step(2, 24, 22), step(4, 48, 44, failures=1)]
    v = by_stage(decide(steps, replicas=2, cores=2))[SERVING]
    assert v.saturated and v.step_users == 4


def test_the_machine_is_the_bound_when_all_cores_are_busy() -> None:
    full = {"model-api-0": 60.0, "model-api-1": 55.0, "locust": 50.0, "machine": 190.0}
    st = step(8, 96, 50, cpu_pct=full)
    assert bound_by(st, ["model-api-0", "model-api-1", "nginx"], cores=2).startswith(
        "the machine's 2 cores (190% of 200%; busiest model-api-0 60%"
    )
    # the same step on 4 cores: not the machine, and no process at a full core
    assert bound_by(st, ["model-api-0"], cores=4).startswith("no CPU bound found")


def test_the_load_generator_at_a_full_core_is_named() -> None:
    st = step(8, 96, 50, cpu_pct={"locust": 99.0, "machine": 150.0})
    assert bound_by(st, ["model-api-0"], cores=2) == "locust 99% of a core"


def test_consumer_saturates_only_when_lag_grows_and_it_consumes_less_than_published() -> None:
    cpu = {"drift-consumer": 98.0, "machine": 150.0}
    # lag grew but it kept up (a burst being drained): not saturated
    keeping_up = step(4, 48, 44, lag_start=0.0, lag_end=500.0, consumed_eps=44)
    growing = step(8, 96, 86, lag_start=500, lag_end=3000, consumed_eps=60.0, cpu_pct=cpu)
    v = by_stage(decide([step(2, 24, 22), keeping_up, growing], replicas=2, cores=2))[CONSUMER]
    assert v.saturated and v.step_users == 8
    assert v.rate_held == 60.0
    assert v.bounded_by == "drift-consumer 98% of a core"


def test_publishing_saturates_when_the_replicas_buffer_grows() -> None:
    steps = [step(2, 24, 22), step(4, 48, 44, buffered_start=10, buffered_end=400)]
    v = by_stage(decide(steps, replicas=2, cores=2))[EVENTS]
    assert v.saturated and v.step_users == 4 and "buffered 10 → 400" in v.evidence


def test_redis_saturates_at_a_full_core() -> None:
    cpu = {"redis": 95.0, "machine": 120.0}
    steps = [step(2, 24, 22), step(4, 48, 44, cpu_pct=cpu)]
    v = by_stage(decide(steps, replicas=2, cores=2))[REDIS]
    assert v.saturated and v.rate_held == 88 and v.bounded_by == "redis 95% of its one core"


def test_cluster_size_for_10x_and_100x() -> None:
    cap = Capacity(
        held_rps=100.0,
        per_replica_rps=200.0,
        events_per_request=1.0,
        per_consumer_eps=500.0,
        redis_ops_per_request=3.0,
        redis_ops_per_core=50_000.0,
        assumptions=[],
    )
    ten, hundred = extrapolate(cap)
    assert (ten.requests_per_s, ten.events_per_s) == (1000.0, 1000.0)
    # ceil(1000 / (200 * 0.7)) = 8 replicas; ceil(1000 / (500 * 0.7)) = 3 consumers
    assert TARGET_UTILISATION == 0.7
    assert (ten.replicas, ten.consumers, ten.partitions, ten.redis_shards) == (8, 3, 6, 1)
    # 10000 req/s: 72 replicas, 29 consumers, 58 partitions, ceil(30000 / 35000) = 1 shard
    assert (hundred.replicas, hundred.consumers, hundred.partitions) == (72, 29, 58)
    assert hundred.redis_shards == 1
