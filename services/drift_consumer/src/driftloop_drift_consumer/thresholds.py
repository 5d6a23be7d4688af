"""Thresholds as data: contract defaults, run-time overrides in one Redis hash.

The hash :data:`THRESHOLDS_REDIS_KEY` maps ``"<statistic>"`` (every series) or
``"<statistic>:<series>"`` (one feature, or ``prediction``) to a number. The effective value of
``(statistic, series)`` is the per-series override, else the statistic override, else
:data:`DEFAULT_THRESHOLDS`. ``drift_share`` and ``rmse_ratio`` are dataset/model-level and
take no series.

The consumer polls the hash (``thresholds_poll_seconds``) and exports every effective value
as ``driftloop_drift_threshold{feature,statistic}``, so alert rules compare gauge to gauge and
a change is live within a scrape interval, with no rule file edited or reloaded.

The CLI (``driftloop thresholds show|set|reset``) calls the synchronous functions here::

    import redis
    from driftloop_drift_consumer.thresholds import set_threshold, show_thresholds

    client = redis.Redis.from_url("redis://127.0.0.1:18079/0")
    set_threshold(client, "psi", 0.3, feature="median_income_in_block")
    for row in show_thresholds(client):
        print(row.statistic, row.feature, row.value, row.source)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from driftloop_contracts import (
    DEFAULT_THRESHOLDS,
    SERIES_NAMES,
    SERIES_STATISTICS,
    STATISTICS,
    THRESHOLDS_REDIS_KEY,
)

from .errors import ThresholdError

log = structlog.get_logger(__name__)

#: Statistics that apply to the dataset or model as a whole (exported with ``feature=""``).
GLOBAL_STATISTICS: tuple[str, ...] = tuple(s for s in STATISTICS if s not in SERIES_STATISTICS)


@dataclass(frozen=True)
class ThresholdRow:
    """One effective threshold and where its value comes from."""

    statistic: str
    feature: str
    value: float
    source: str  # "default" | "override" | "feature override"


def field_name(statistic: str, feature: str | None = None) -> str:
    """The Redis hash field for an override; raises :class:`ThresholdError` naming the problem."""
    if statistic not in STATISTICS:
        raise ThresholdError(
            f"unknown statistic {statistic!r}; expected one of {', '.join(STATISTICS)}"
        )
    if not feature:
        return statistic
    if statistic in GLOBAL_STATISTICS:
        raise ThresholdError(f"statistic {statistic!r} is not per feature; drop the feature")
    if feature not in SERIES_NAMES:
        raise ThresholdError(
            f"unknown feature {feature!r}; expected one of {', '.join(SERIES_NAMES)}"
        )
    return f"{statistic}:{feature}"


def parse_value(value: object) -> float:
    """A threshold is a finite number >= 0 (a string from Redis or the CLI is accepted)."""
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ThresholdError(f"threshold {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ThresholdError(f"threshold {number} must be a finite number >= 0")
    return number


class ThresholdSet:
    """Effective thresholds: defaults plus validated overrides. Callable as
    ``(statistic, series) -> value``, the lookup :func:`driftloop_drift_consumer.drift.decide`
    takes."""

    def __init__(
        self,
        overrides: Mapping[str, float] | None = None,
        defaults: Mapping[str, float] | None = None,
    ) -> None:
        self.defaults: dict[str, float] = dict(defaults or DEFAULT_THRESHOLDS)
        self.overrides: dict[str, float] = dict(overrides or {})

    def get(self, statistic: str, feature: str = "") -> float:
        if feature:
            value = self.overrides.get(f"{statistic}:{feature}")
            if value is not None:
                return value
        value = self.overrides.get(statistic)
        return value if value is not None else self.defaults[statistic]

    __call__ = get

    def source(self, statistic: str, feature: str = "") -> str:
        if feature and f"{statistic}:{feature}" in self.overrides:
            return "feature override"
        return "override" if statistic in self.overrides else "default"

    def rows(self) -> list[ThresholdRow]:
        """Every (series x per-series statistic) pair, then the global statistics."""
        rows = [
            ThresholdRow(stat, name, self.get(stat, name), self.source(stat, name))
            for stat in SERIES_STATISTICS
            for name in SERIES_NAMES
        ]
        rows += [
            ThresholdRow(stat, "", self.get(stat), self.source(stat)) for stat in GLOBAL_STATISTICS
        ]
        return rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThresholdSet) and (self.defaults, self.overrides) == (
            other.defaults,
            other.overrides,
        )

    def __repr__(self) -> str:
        return f"ThresholdSet(overrides={self.overrides!r})"

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> tuple[ThresholdSet, list[str]]:
        """Parse a Redis hash; invalid fields are skipped and reported (never fatal)."""
        overrides: dict[str, float] = {}
        problems: list[str] = []
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            statistic, _, feature = name.partition(":")
            try:
                overrides[field_name(statistic, feature or None)] = parse_value(value)
            except ThresholdError as exc:
                problems.append(f"{THRESHOLDS_REDIS_KEY}[{name}]: {exc}")
        return cls(overrides), problems


# --- synchronous API for the CLI ----------------------------------------------------------


def _client(client: Any) -> Any:
    if isinstance(client, str):
        import redis

        return redis.Redis.from_url(client, socket_timeout=5, socket_connect_timeout=5)
    return client


def load_thresholds(client: Any) -> ThresholdSet:
    """The effective thresholds as stored now (``client``: ``redis.Redis`` or a URL)."""
    thresholds, problems = ThresholdSet.from_hash(_client(client).hgetall(THRESHOLDS_REDIS_KEY))
    for problem in problems:
        log.warning("threshold_override_ignored", problem=problem)
    return thresholds


def show_thresholds(client: Any) -> list[ThresholdRow]:
    """Every effective threshold with its source (``default``, ``override``...)."""
    return load_thresholds(client).rows()


def set_threshold(
    client: Any, statistic: str, value: float | str, feature: str | None = None
) -> ThresholdRow:
    """Override one threshold (for every series, or one ``feature``); returns the new row."""
    name = field_name(statistic, feature)
    number = parse_value(value)
    _client(client).hset(THRESHOLDS_REDIS_KEY, name, repr(number))
    return ThresholdRow(
        statistic, feature or "", number, "feature override" if feature else "override"
    )


def reset_thresholds(client: Any, statistic: str | None = None, feature: str | None = None) -> int:
    """Remove overrides: all of them, one statistic's (incl. its per-feature ones), or one
    ``statistic:feature``. Returns how many fields were removed."""
    c = _client(client)
    if statistic is None:
        if feature:
            raise ThresholdError("name the statistic whose feature override to reset")
        return int(c.delete(THRESHOLDS_REDIS_KEY))  # 1 if there was a hash
    if feature:
        return int(c.hdel(THRESHOLDS_REDIS_KEY, field_name(statistic, feature)))
    field_name(statistic)
    fields = [f.decode() if isinstance(f, bytes) else f for f in c.hkeys(THRESHOLDS_REDIS_KEY)]
    doomed = [f for f in fields if f == statistic or f.startswith(f"{statistic}:")]
    return int(c.hdel(THRESHOLDS_REDIS_KEY, *doomed)) if doomed else 0


# --- the consumer's watcher ---------------------------------------------------------------


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
        raw = await self._redis.hgetall(THRESHOLDS_REDIS_KEY)
        thresholds, problems = ThresholdSet.from_hash(raw)
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
            await _sleep_or_stop(self._interval, stopping)


async def _sleep_or_stop(seconds: float, stopping: asyncio.Event | None) -> None:
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    waiter: Awaitable[Any] = stopping.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiter, seconds)
