"""Carrying a watch decision out: the real :class:`WatchStore` on fakeredis, a fake registry and
announcer. Rollback and kept, exactly once with two instances, an instance dying half way, and
MLflow down at decision time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from driftloop_contracts import MODEL_NAME, ROLLBACK_REASON_PREFIX, ModelPromoted
from driftloop_drift_consumer.errors import WatchActionError
from driftloop_drift_consumer.metrics import ConsumerMetrics
from driftloop_drift_consumer.rollback import PostPromotionWatch, WatchState
from driftloop_drift_consumer.settings import DriftConsumerSettings
from driftloop_drift_consumer.watch import Outcome, Pair, RowErrors
from driftloop_drift_consumer.watch_store import WatchStore

PAIR = Pair("2", "1")
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
UNTIL = NOW + timedelta(minutes=10)


class FakeRegistry:
    """Aliases and version tags of one model; ``down`` makes every call fail like MLflow."""

    def __init__(self) -> None:
        self.aliases = {"champion": "2", "shadow": "1"}
        self.until: datetime | None = UNTIL
        self.tags: dict[str, dict[str, str]] = {"1": {}, "2": {}}
        self.moves: list[str] = []
        self.down = 0  # calls still to fail

    def _call(self) -> None:
        if self.down:
            self.down -= 1
            raise WatchActionError("MLflow failed: connection refused")

    def watch(self) -> WatchState | None:
        self._call()
        if "shadow" not in self.aliases or self.aliases["shadow"] == self.aliases["champion"]:
            return None
        return WatchState(Pair(self.aliases["champion"], self.aliases["shadow"]), self.until)

    def champion(self) -> str | None:
        self._call()
        return self.aliases.get("champion")

    def move_champion(self, version: str) -> None:
        self._call()
        self.moves.append(version)
        self.aliases["champion"] = version

    def remove_shadow(self, expected: str) -> None:
        self._call()
        if self.aliases.get("shadow") == expected:
            del self.aliases["shadow"]

    def tag(self, version: str, tags: dict[str, str]) -> None:
        self._call()
        self.tags[version].update(tags)

    def run_id(self, version: str) -> str:
        self._call()
        return f"run-{version}"


class FakeAnnouncer:
    def __init__(self) -> None:
        self.events: list[ModelPromoted] = []

    async def announce(self, event: ModelPromoted) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


def make_watch(
    redis: fakeredis.FakeAsyncRedis,
    registry: FakeRegistry,
    announcer: FakeAnnouncer,
    clock: Clock | None = None,
) -> tuple[PostPromotionWatch, ConsumerMetrics]:
    settings = DriftConsumerSettings(watch_retry_max_seconds=0.01, watch_min_rows=200)
    metrics = ConsumerMetrics()
    watch = PostPromotionWatch(
        settings,
        store=WatchStore(redis, model_name=MODEL_NAME, ttl_seconds=3600),
        registry=registry,
        announcer=announcer,
        metrics=metrics,
        stopping=asyncio.Event(),
        clock=clock or Clock(),
    )
    return watch, metrics


def rows(n: int, champion_error: float, shadow_error: float, start: int = 0) -> list[RowErrors]:
    return [RowErrors(f"r{i}", champion_error, shadow_error) for i in range(start, start + n)]


def decisions(metrics: ConsumerMetrics, outcome: str) -> float:
    return metrics.watch_decisions.labels(outcome)._value.get()


async def test_a_worse_champion_is_rolled_back_once(redis: fakeredis.FakeAsyncRedis) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    watch, metrics = make_watch(redis, registry, announcer)
    await watch.store.add({PAIR: rows(199, 30_000.0, 20_000.0)})
    assert await watch.tick() is None  # 199 rows: not enough
    await watch.store.add({PAIR: rows(1, 30_000.0, 20_000.0, start=199)})

    decision = await watch.tick()

    assert decision is not None and decision.outcome is Outcome.ROLLED_BACK
    assert registry.moves == ["1"]
    assert registry.aliases == {"champion": "1"}
    for version in ("1", "2"):
        assert registry.tags[version]["driftloop.rollback.outcome"] == "rolled_back"
        assert registry.tags[version]["driftloop.rollback.rows"] == "200"
        assert registry.tags[version]["driftloop.rollback.champion_rmse_usd"] == "30000.00"
        assert registry.tags[version]["driftloop.rollback.shadow_rmse_usd"] == "20000.00"
    [event] = announcer.events
    assert (event.version, event.run_id) == ("1", "run-1")
    assert event.reason.startswith(ROLLBACK_REASON_PREFIX)
    assert decisions(metrics, "rolled_back") == 1
    # a later tick (or a replay of the same rows) changes nothing
    await watch.store.add({PAIR: rows(200, 30_000.0, 20_000.0)})
    assert await watch.tick() is None
    assert (registry.moves, len(announcer.events), decisions(metrics, "rolled_back")) == (
        ["1"],
        1,
        1,
    )


def watch_open(metrics: ConsumerMetrics) -> dict[str, float]:
    return {
        s.labels["model_version"]: s.value
        for family in metrics.watch_open.collect()
        for s in family.samples
    }


async def test_the_watched_champion_is_exported_as_open_until_the_decision_is_carried_out(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    """``driftloop_watch_open{model_version}`` is what keeps PerformanceDegraded from judging
    a champion the watch is still judging (libs/monitoring alerts)."""
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    watch, metrics = make_watch(redis, registry, announcer)
    assert watch_open(metrics) == {}
    await watch.store.add({PAIR: rows(199, 30_000.0, 20_000.0)})
    assert await watch.tick() is None
    assert watch_open(metrics) == {"2": 1.0}  # undecided: the watch owns the judgement
    await watch.store.add({PAIR: rows(1, 30_000.0, 20_000.0, start=199)})
    assert (await watch.tick()) is not None  # rolled back: the shadow alias is gone
    assert await watch.tick() is None
    # the rolled-back version's online error is exported until the reference leaves it
    assert watch_open(metrics) == {"2": 1.0}
    metrics.set_reference("1", "profile-1")
    assert watch_open(metrics) == {}
    # a later promotion's watch names only its own champion; kept, it is judged again
    registry.aliases, registry.tags["3"] = {"champion": "3", "shadow": "1"}, {}
    assert await watch.tick() is None
    assert watch_open(metrics) == {"3": 1.0}
    registry.until = NOW
    assert (await watch.tick()) is not None
    assert watch_open(metrics) == {}


async def test_a_rolled_back_version_made_champion_again_is_judged_again(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    watch, metrics = make_watch(redis, registry, announcer)
    metrics.set_reference("1", "profile-1")  # the reference moved before the watch finished
    await watch.store.add({PAIR: rows(200, 30_000.0, 20_000.0)})
    assert (await watch.tick()) is not None
    assert watch_open(metrics) == {"2": 1.0}
    metrics.set_reference("2", "profile-2")  # someone promoted it again, by hand
    assert watch_open(metrics) == {}


async def test_replayed_rows_are_counted_once(redis: fakeredis.FakeAsyncRedis) -> None:
    store = WatchStore(redis, model_name=MODEL_NAME, ttl_seconds=3600)
    await store.add({PAIR: rows(150, 3.0, 4.0)})
    await store.add({PAIR: rows(150, 3.0, 4.0)})  # the same requests again (a replay)
    sums = await store.sums(PAIR)
    assert (sums.rows, sums.champion_rmse, sums.shadow_rmse) == (150, 3.0, 4.0)


async def test_two_instances_roll_back_once(redis: fakeredis.FakeAsyncRedis) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    a, metrics_a = make_watch(redis, registry, announcer)
    b, metrics_b = make_watch(redis, registry, announcer)
    await a.store.add({PAIR: rows(300, 30_000.0, 20_000.0)})

    await asyncio.gather(a.tick(), b.tick())
    await asyncio.gather(a.tick(), b.tick())

    assert registry.moves == ["1"]
    assert len(announcer.events) == 1
    assert decisions(metrics_a, "rolled_back") + decisions(metrics_b, "rolled_back") == 1


async def test_a_better_champion_is_kept_when_the_watch_ends(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    registry, announcer, clock = FakeRegistry(), FakeAnnouncer(), Clock()
    watch, metrics = make_watch(redis, registry, announcer, clock)
    await watch.store.add({PAIR: rows(500, 10_000.0, 20_000.0)})
    assert await watch.tick() is None  # better, but the watch is still running
    clock.now = UNTIL

    decision = await watch.tick()

    assert decision is not None and decision.outcome is Outcome.KEPT
    assert registry.aliases == {"champion": "2"}  # shadow gone, champion unchanged
    assert registry.moves == [] and announcer.events == []
    assert registry.tags["2"]["driftloop.rollback.outcome"] == "kept"
    assert registry.tags["2"]["driftloop.rollback.champion_rmse_usd"] == "10000.00"
    assert decisions(metrics, "kept") == 1 and decisions(metrics, "rolled_back") == 0


async def test_mlflow_down_at_decision_time_delays_the_rollback_but_keeps_it(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    watch, metrics = make_watch(redis, registry, announcer)
    assert await watch.tick() is None  # the watch is known (no rows yet)
    await watch.store.add({PAIR: rows(300, 30_000.0, 20_000.0)})
    registry.down = 4  # the watch read and three step attempts fail

    decision = await watch.tick()

    assert decision is not None and decision.outcome is Outcome.ROLLED_BACK
    assert registry.moves == ["1"] and len(announcer.events) == 1
    assert metrics.watch_failures.labels("read_watch")._value.get() == 1
    assert metrics.watch_failures.labels("moved")._value.get() == 3
    assert decisions(metrics, "rolled_back") == 1


async def test_a_decision_recorded_while_mlflow_is_down_is_finished_by_another_instance(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    a, metrics_a = make_watch(redis, registry, announcer)
    await a.tick()
    await a.store.add({PAIR: rows(300, 30_000.0, 20_000.0)})
    registry.down = 10**9
    a.stopping.set()  # instance A decides, then stops (dies) while MLflow is still down
    with pytest.raises(Exception, match="stopping"):
        await a.tick()
    assert registry.moves == []
    assert await a.store.pending() == PAIR  # the decision is in Redis

    registry.down = 0
    b, metrics_b = make_watch(redis, registry, announcer)  # a fresh instance, no memory
    decision = await b.tick()

    assert decision is not None and decision.outcome is Outcome.ROLLED_BACK
    assert registry.moves == ["1"] and len(announcer.events) == 1
    assert decisions(metrics_a, "rolled_back") + decisions(metrics_b, "rolled_back") == 1
    assert await b.store.pending() is None


async def test_a_half_done_rollback_is_finished_without_moving_twice(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    watch, _ = make_watch(redis, registry, announcer)
    await watch.store.add({PAIR: rows(300, 30_000.0, 20_000.0)})
    await watch.tick()
    # as if an instance had died after moving the alias: the pending decision, steps undone
    await redis.hdel(watch.store.key(PAIR, "decision"), "tagged", "shadow_removed", "done")
    await redis.hdel(watch.store.key(PAIR, "decision"), "announced")
    await redis.set(f"driftloop:watch:{MODEL_NAME}:pending", "2 1")
    registry.aliases["shadow"] = "1"

    again, metrics = make_watch(redis, registry, announcer)
    await again.tick()

    assert registry.moves == ["1"]  # champion already names the shadow: not moved again
    assert "shadow" not in registry.aliases
    assert len(announcer.events) == 2  # the one step that may repeat (harmless)
    assert decisions(metrics, "rolled_back") == 1


async def test_a_newer_promotion_supersedes_the_rollback(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    registry, announcer = FakeRegistry(), FakeAnnouncer()
    watch, metrics = make_watch(redis, registry, announcer)
    await watch.tick()
    await watch.store.add({PAIR: rows(300, 30_000.0, 20_000.0)})
    registry.aliases["champion"] = "3"  # promoted between the read and the rollback
    registry.down = 1  # the watch read fails: the last watch (2 vs 1) is used

    await watch.tick()

    assert registry.aliases["champion"] == "3" and registry.moves == []
    assert announcer.events == []
    assert registry.tags["2"]["driftloop.rollback.outcome"] == "superseded"
    assert decisions(metrics, "superseded") == 1 and decisions(metrics, "rolled_back") == 0
