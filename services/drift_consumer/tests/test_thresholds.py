"""thresholds.py: the CLI's show/set/reset functions and the consumer's watcher."""

from __future__ import annotations

import pytest

from driftloop_contracts import DEFAULT_THRESHOLDS, SERIES_NAMES, THRESHOLDS_REDIS_KEY
from driftloop_drift_consumer.errors import ThresholdError
from driftloop_drift_consumer.thresholds import (
    ThresholdSet,
    ThresholdWatcher,
    reset_thresholds,
    set_threshold,
    show_thresholds,
)

from .conftest import FakeAsyncRedis, FakeRedisState, FakeSyncRedis


def test_show_lists_every_series_and_statistic_with_defaults() -> None:
    rows = show_thresholds(FakeSyncRedis())
    assert len(rows) == 3 * len(SERIES_NAMES) + 2
    assert {(r.statistic, r.value) for r in rows if r.feature == ""} == {
        ("drift_share", DEFAULT_THRESHOLDS["drift_share"]),
        ("rmse_ratio", DEFAULT_THRESHOLDS["rmse_ratio"]),
    }
    assert all(r.source == "default" for r in rows)


def test_feature_override_beats_statistic_override_beats_default() -> None:
    client = FakeSyncRedis()
    set_threshold(client, "psi", 0.4)
    row = set_threshold(client, "psi", "0.9", feature="median_income_in_block")
    assert row.value == 0.9 and row.source == "feature override"
    t = ThresholdSet.from_hash(client.hgetall(THRESHOLDS_REDIS_KEY))[0]
    assert t("psi", "median_income_in_block") == 0.9
    assert t("psi", "block_latitude") == 0.4
    assert t("ks", "block_latitude") == DEFAULT_THRESHOLDS["ks"]
    by_key = {(r.statistic, r.feature): r for r in show_thresholds(client)}
    assert by_key[("psi", "block_latitude")].source == "override"
    # reset one feature, then the statistic (with its per-feature fields), then everything
    assert reset_thresholds(client, "psi", "median_income_in_block") == 1
    set_threshold(client, "psi", 0.5, feature="prediction")
    set_threshold(client, "ks", 0.5)
    assert reset_thresholds(client, "psi") == 2
    assert set(client.state.hashes[THRESHOLDS_REDIS_KEY]) == {"ks"}
    assert reset_thresholds(client) == 1
    assert all(r.source == "default" for r in show_thresholds(client))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("kl", 0.1), "unknown statistic 'kl'"),
        (("psi", 0.1, "rooms"), "unknown feature 'rooms'"),
        (("drift_share", 0.1, "block_latitude"), "not per feature"),
        (("psi", "abc"), "not a number"),
        (("psi", -1), "finite number >= 0"),
        (("psi", float("nan")), "finite number >= 0"),
    ],
)
def test_invalid_input_names_the_problem(args: tuple, message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        set_threshold(FakeSyncRedis(), *args)


def test_bad_fields_in_redis_are_ignored_not_fatal() -> None:
    t, problems = ThresholdSet.from_hash({b"psi": b"0.3", b"bogus": b"1", b"ks": b"x"})
    assert t.overrides == {"psi": 0.3}
    assert len(problems) == 2


async def test_watcher_reports_changes_and_survives_outages() -> None:
    state = FakeRedisState()
    seen: list[ThresholdSet] = []
    errors: list[Exception] = []
    watcher = ThresholdWatcher(FakeAsyncRedis(state), seen.append, on_error=errors.append)
    await watcher.refresh()
    assert seen == []  # nothing changed from the defaults
    FakeSyncRedis(state).hset(THRESHOLDS_REDIS_KEY, "ks", "0.33")
    await watcher.refresh()
    assert seen[-1]("ks", "block_latitude") == 0.33
    await watcher.refresh()
    assert len(seen) == 1
    state.fail = True
    with pytest.raises(ConnectionError):
        await watcher.refresh()
    assert watcher.current("ks", "x") == 0.33  # keeps the last known values
