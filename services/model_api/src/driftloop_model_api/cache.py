"""In-process LRU cache of predictions, keyed by model version and the exact feature values.

Why in-process and not Redis (docs/performance.md, "Serving"): a Redis cache cost every
request a GET (and every miss a SET) on the event loop, about 0.3 ms of CPU per ``/predict``
between the replica and Redis, and under load some look-ups ran past their budget. What it
bought was small: random traffic never repeats a row, and the load test's traffic, which
samples the 20,640 rows of the California data, hit 4.6 % of look-ups in a 90 s run. A hit
saves one row of a micro-batched model call, not a call. A dictionary look-up in the process
costs about a microsecond, so the same hits are worth having there; sharing them between
replicas is not (each replica sees about half of the repeats).

The key carries the model version, so a promotion can never serve the previous champion's
answer: the new version simply misses and recomputes (and the old entries age out). Features
are floats after validation, so ``41`` and ``41.0`` (and ``-0.0``/``0.0``) are one key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .metrics import Metrics


class PredictionCache:
    """``get``/``put`` predictions (USD) of one replica; the least recently used entry goes first.

    Example::

        cache = PredictionCache(Metrics("r"), max_entries=100_000)
        cache.put("7", row, 452_600.0)
        cache.get("7", row)  # 452600.0 (counted as a hit)
    """

    def __init__(self, metrics: Metrics, *, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0 (0 turns the cache off)")
        self._metrics = metrics
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, tuple[float, ...]], float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._max > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model_version: str, row: Sequence[float]) -> float | None:
        """The cached USD value for ``row`` under ``model_version``, or ``None`` (a miss)."""
        key = (model_version, tuple(row))
        value = self._entries.get(key)
        if value is None:
            self._metrics.cache("miss")
            return None
        self._entries.move_to_end(key)
        self._metrics.cache("hit")
        return value

    def put(self, model_version: str, row: Sequence[float], value: float) -> None:
        self._entries[(model_version, tuple(row))] = value
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
