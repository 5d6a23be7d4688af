"""threshold_watcher.py: changes reach the loop once; a Redis outage keeps the last values."""

from __future__ import annotations

import pytest

from driftloop_contracts import THRESHOLDS_REDIS_KEY, ThresholdSet
from driftloop_drift_consumer.threshold_watcher import ThresholdWatcher

from .conftest import FakeAsyncRedis, FakeRedisState


async def test_watcher_reports_changes_and_survives_outages() -> None:
    state = FakeRedisState()
    seen: list[ThresholdSet] = []
    errors: list[Exception] = []
    watcher = ThresholdWatcher(FakeAsyncRedis(state), seen.append, on_error=errors.append)
    await watcher.refresh()
    assert seen == []  # nothing changed from the defaults
    state.hashes.setdefault(THRESHOLDS_REDIS_KEY, {})["ks"] = b"0.33"
    await watcher.refresh()
    assert seen[-1]("ks", "block_latitude") == 0.33
    await watcher.refresh()
    assert len(seen) == 1
    state.fail = True
    with pytest.raises(ConnectionError):
        await watcher.refresh()
    assert watcher.current("ks", "x") == 0.33  # keeps the last known values
