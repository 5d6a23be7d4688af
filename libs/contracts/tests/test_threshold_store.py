"""threshold_store.py: the CLI's show/set/reset and the consumer's fetch, against a faked Redis."""

from __future__ import annotations

import fakeredis
import pytest

from driftloop_contracts import DEFAULT_THRESHOLDS, SERIES_NAMES, THRESHOLDS_REDIS_KEY
from driftloop_contracts.threshold_store import (
    fetch_thresholds,
    reset_thresholds,
    set_threshold,
    show_thresholds,
)
from driftloop_contracts.thresholds import ThresholdError, ThresholdSet


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_show_lists_every_series_and_statistic_with_defaults(client: fakeredis.FakeRedis) -> None:
    rows = show_thresholds(client)
    assert len(rows) == 3 * len(SERIES_NAMES) + 2
    assert {(r.statistic, r.value) for r in rows if r.feature == ""} == {
        ("drift_share", DEFAULT_THRESHOLDS["drift_share"]),
        ("rmse_ratio", DEFAULT_THRESHOLDS["rmse_ratio"]),
    }
    assert all(r.source == "default" for r in rows)


def test_feature_override_beats_statistic_override_beats_default(
    client: fakeredis.FakeRedis,
) -> None:
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
    assert set(client.hkeys(THRESHOLDS_REDIS_KEY)) == {b"ks"}
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
def test_invalid_input_names_the_problem(
    client: fakeredis.FakeRedis, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ThresholdError, match=message):
        set_threshold(client, *args)
    assert client.hgetall(THRESHOLDS_REDIS_KEY) == {}


def test_reset_of_a_feature_needs_its_statistic(client: fakeredis.FakeRedis) -> None:
    with pytest.raises(ThresholdError, match="name the statistic"):
        reset_thresholds(client, feature="block_latitude")


async def test_fetch_reads_the_same_hash_asynchronously() -> None:
    server = fakeredis.FakeServer()
    set_threshold(fakeredis.FakeRedis(server=server), "ks", 0.33)
    async_client = fakeredis.FakeAsyncRedis(server=server)
    thresholds, problems = await fetch_thresholds(async_client)
    assert thresholds("ks", "block_latitude") == 0.33 and problems == []
