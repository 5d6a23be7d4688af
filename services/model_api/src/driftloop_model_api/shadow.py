"""The shadow: the previous champion predicting every request during a post-promotion watch.

While the registry's ``shadow`` alias names a version (:mod:`.shadow_watch` keeps it loaded),
each prediction event is held here instead of being published at once; the shadow predicts the
held rows and the events leave with ``shadow_model_version`` and ``shadow_prediction`` set.
The client's answer never waits for this and never contains the shadow's value: the route has
already been answered when the shadow runs.

Cost policy (why the answer is not slowed):

* **Off the answer path**: :meth:`ShadowStage.submit` only appends to a list; the first row
  starts a drain task, which runs on a later turn of the event loop, after the request that
  submitted it has been answered.
* **Batched**: the drain waits ``linger_s`` (default 20 ms) for more rows, then predicts
  everything held in one model call (up to ``max_batch`` rows); a tree ensemble costs about
  the same for 1 row as for 256 (~1.3-2.5 ms), so the shadow's CPU per request shrinks with
  traffic instead of adding a model call per request. Only the event waits, not the answer.
* **In a worker thread**: the model call runs in ``asyncio.to_thread``; scikit-learn's tree
  prediction releases the GIL, so the event loop keeps answering requests meanwhile. One call
  in flight at a time: what arrives meanwhile waits for the next call (bigger batch).
* **Bounded**: at most ``max_pending`` held events; beyond it an event is published without
  the shadow and counted (``overloaded``).

Never fails a request: a shadow call that raises, or a non-finite value, publishes the events
without the shadow fields, counted in ``driftloop_shadow_failures_total{reason}``. Delivery:
held events enter the publisher after one shadow call, i.e. a few ms late, but they enter its
ledger when held (``reserve``): a replica killed while holding them leaves their keys behind,
and the next incarnation counts the ones that never reached the topic as lost, like the events
of its buffers. :meth:`ShadowStage.drain` flushes them at shutdown, before the publisher drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftloop_contracts import PredictionEvent

from .model_holder import LoadedModel

log = structlog.get_logger(__name__)

#: ``driftloop_shadow_failures_total`` reasons raised on the predict path (loads add theirs).
PREDICT_ERROR = "predict_error"
NON_FINITE = "non_finite"
OVERLOADED = "overloaded"
#: A load that failed without a refusal (a refusal counts under its ModelRejected reason).
LOAD_ERROR = "load_error"

SHADOW_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ShadowMetrics:
    """The shadow's series, on the replica's registry, labelled with its ``replica`` id."""

    def __init__(self, registry: CollectorRegistry, replica_id: str) -> None:
        self.replica_id = replica_id
        self._info = Gauge(
            "driftloop_shadow_model_info",
            "The previous champion loaded as a shadow during a post-promotion watch (value 1;"
            " no series outside a watch)",
            ["replica", "model_name", "model_version"],
            registry=registry,
        )
        self._loaded = Gauge(
            "driftloop_shadow_loaded",
            "1 while a shadow model is loaded, else 0",
            ["replica"],
            registry=registry,
        ).labels(replica_id)
        self.predictions = Counter(
            "driftloop_shadow_predictions_total",
            "Prediction events published with the shadow's prediction",
            ["replica"],
            registry=registry,
        ).labels(replica_id)
        self._failures = Counter(
            "driftloop_shadow_failures_total",
            "Shadow work that failed (the request was served and its event published without"
            " the shadow), by reason: load_error or a ModelRejected reason (load),"
            " predict_error, non_finite, overloaded (predict)",
            ["replica", "reason"],
            registry=registry,
        )
        self.call_seconds = Histogram(
            "driftloop_shadow_call_seconds",
            "Duration of one shadow model call (a batch of held events), in its worker thread",
            ["replica"],
            buckets=SHADOW_CALL_BUCKETS,
            registry=registry,
        ).labels(replica_id)
        self._loaded.set(0)
        for reason in (LOAD_ERROR, PREDICT_ERROR, NON_FINITE, OVERLOADED):
            self._failures.labels(replica_id, reason)

    def failed(self, reason: str, n: int = 1) -> None:
        self._failures.labels(self.replica_id, reason).inc(n)

    def set_model(self, model: LoadedModel | None) -> None:
        self._info.clear()
        if model is not None:
            self._info.labels(self.replica_id, model.name, model.version).set(1)
        self._loaded.set(0 if model is None else 1)


@dataclass(slots=True)
class _Held:
    event: PredictionEvent
    row: Sequence[float]
    shadow: LoadedModel
    #: The event's ledger slot, reserved when it was held (``-1``: none).
    slot: int


class ShadowStage:
    """Holds prediction events for the shadow's prediction, then publishes them (docstring)."""

    def __init__(
        self,
        publish: Callable[[PredictionEvent, int], None],
        metrics: ShadowMetrics,
        *,
        reserve: Callable[[PredictionEvent], int] = lambda _event: -1,
        max_batch: int = 1_024,
        max_pending: int = 20_000,
        linger_s: float = 0.0,
    ) -> None:
        self._publish = publish
        self._reserve = reserve
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._linger_s = linger_s
        self._held: list[_Held] = []
        self._draining: asyncio.Task[None] | None = None
        self._model: LoadedModel | None = None

    @property
    def model(self) -> LoadedModel | None:
        """The shadow now (``None`` outside a watch)."""
        return self._model

    @property
    def held(self) -> int:
        return len(self._held)

    def set(self, model: LoadedModel | None) -> None:
        """Predict with ``model`` from now on (``None``: no shadow). Held events keep the
        shadow they were submitted with, like a request keeps its champion across a swap."""
        self._model = model
        self._metrics.set_model(model)

    def submit(self, event: PredictionEvent, row: Sequence[float]) -> bool:
        """Hold ``event`` for the shadow; ``False`` when no shadow applies (publish it now).

        A shadow of the version that served the request (a rollback caught half-way) adds
        nothing and is skipped.
        """
        shadow = self._model
        if shadow is None or shadow.version == event.model_version:
            return False
        if len(self._held) >= self._max_pending:
            self._metrics.failed(OVERLOADED)
            return False
        self._held.append(_Held(event, row, shadow, self._reserve(event)))
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(
                self._drain_held(), name="shadow-predict"
            )
        return True

    async def drain(self) -> None:
        """Publish everything held (shutdown: before the publisher drains)."""
        while self._draining is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._draining)
        if self._held:  # submitted without a running drain (cannot happen; belt and braces)
            await self._drain_held()

    async def _drain_held(self) -> None:
        try:
            while self._held:
                if self._linger_s > 0 and len(self._held) < self._max_batch:
                    await asyncio.sleep(self._linger_s)  # gather rows for one model call
                batch = self._held[: self._max_batch]
                del self._held[: self._max_batch]
                await self._predict_and_publish(batch)
        finally:
            self._draining = None

    async def _predict_and_publish(self, batch: list[_Held]) -> None:
        groups: dict[int, list[_Held]] = {}
        for item in batch:
            groups.setdefault(id(item.shadow), []).append(item)
        for items in groups.values():
            shadow = items[0].shadow
            started = perf_counter()
            try:
                values = await asyncio.to_thread(shadow.predict_usd, [i.row for i in items])
                if len(values) != len(items):
                    raise ValueError(f"{len(values)} predictions for {len(items)} rows")
            except Exception as exc:
                self._metrics.failed(PREDICT_ERROR, len(items))
                log.error("shadow_predict_failed", version=shadow.version, error=str(exc))
                for item in items:
                    self._publish(item.event, item.slot)
                continue
            self._metrics.call_seconds.observe(perf_counter() - started)
            published = 0
            for item, value in zip(items, values, strict=True):
                if math.isfinite(value):
                    event = item.event.model_copy(
                        update={"shadow_model_version": shadow.version, "shadow_prediction": value}
                    )
                    published += 1
                else:
                    event = item.event
                    self._metrics.failed(NON_FINITE)
                self._publish(event, item.slot)
            self._metrics.predictions.inc(published)
