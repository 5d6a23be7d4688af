"""Follows the threshold overrides in Redis so a change is live within one poll.

The store itself (validation, the hash, the CLI's show/set/reset) is
:mod:`driftloop_contracts.threshold_store`; this module is only the consumer's polling policy:
hand every change to ``on_change`` (the loop, which exports the values as
``driftloop_drift_threshold`` gauges), keep the last known values through a Redis outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from driftloop_contracts.threshold_store import fetch_thresholds
from driftloop_contracts.thresholds import ThresholdSet
from driftloop_service import wait_or_stop

log = structlog.get_logger(__name__)


class ThresholdWatcher:
    """Polls the Redis hash and hands every change to ``on_change``.

    A Redis outage keeps the last known thresholds (counted by ``on_error``); it never stops
    drift computation.
    """

    def __init__(
        self,
        redis: Any,
        on_change: Callable[[ThresholdSet], None],
        *,
        interval_s: float = 1.0,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._redis = redis
        self._on_change = on_change
        self._on_error = on_error
        self._interval = interval_s
        self.current = ThresholdSet()
        self._reported: set[str] = set()

    async def refresh(self) -> ThresholdSet:
        thresholds, problems = await fetch_thresholds(self._redis)
        for problem in problems:
            if problem not in self._reported:
                log.warning("threshold_override_ignored", problem=problem)
        self._reported = set(problems)
        if thresholds != self.current:
            log.info("thresholds_changed", overrides=thresholds.overrides)
            self.current = thresholds
            self._on_change(thresholds)
        return thresholds

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        self._on_change(self.current)
        failing = False
        while stopping is None or not stopping.is_set():
            try:
                await self.refresh()
                if failing:
                    log.info("thresholds_refresh_recovered")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: keep the last known values
                if self._on_error is not None:
                    self._on_error(exc)
                if not failing:  # once per outage, not once per poll
                    log.warning("thresholds_refresh_failed", error=str(exc))
                failing = True
            await wait_or_stop(stopping, self._interval)
