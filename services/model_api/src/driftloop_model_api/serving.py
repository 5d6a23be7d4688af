"""The prediction path shared by the routes: model, cache, event, metrics, in that order.

Routes parse and reply; this class does the work in between, so the single-row and batch
routes (and tests) share one definition of what "serving a prediction" means.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter

from driftloop_contracts import (
    FEATURE_NAMES,
    FEEDBACK_TOPIC,
    PREDICTIONS_TOPIC,
    FeedbackEvent,
    PredictionEvent,
    encode_key,
    utcnow,
)

from .batching import MicroBatcher
from .cache import PredictionCache
from .metrics import Metrics
from .model_holder import LoadedModel, ModelHolder
from .publisher import EventPublisher
from .shadow import ShadowStage


class PredictionService:
    """Predict with the current model, through the cache, and publish what was served."""

    def __init__(
        self,
        holder: ModelHolder,
        cache: PredictionCache,
        publisher: EventPublisher,
        metrics: Metrics,
        replica_id: str,
        batcher: MicroBatcher | None = None,
        shadow: ShadowStage | None = None,
    ) -> None:
        self.batcher = batcher
        self.holder = holder
        self.cache = cache
        self.publisher = publisher
        self.metrics = metrics
        self.replica_id = replica_id
        #: During a post-promotion watch, holds each event for the previous champion's
        #: prediction (off the answer path; :mod:`.shadow`).
        self.shadow = shadow

    async def predict_one(
        self, request_id: str, row: Sequence[float], started: float
    ) -> tuple[LoadedModel, float]:
        """One prediction (USD). The model is read once: a swap mid-request does not affect it."""
        model = self.holder.require()
        cached = self.cache.enabled
        value = self.cache.get(model.version, row) if cached else None
        hit = value is not None
        if value is None:
            if self.batcher is not None:
                value = await self.batcher.predict(model, row)
            else:
                value = model.predict_usd([row])[0]
            if cached:
                self.cache.put(model.version, row, value)
        self._emit(model, request_id, row, value, started, cache_hit=hit)
        return model, value

    def predict_many(
        self, request_id: str, rows: Sequence[Sequence[float]], started: float
    ) -> tuple[LoadedModel, list[tuple[str, float]]]:
        """A batch in one model call; each row gets its own id (``<request_id>-<i>``) and event."""
        model = self.holder.require()
        values = model.predict_usd(rows)
        out: list[tuple[str, float]] = []
        for i, (row, value) in enumerate(zip(rows, values, strict=True)):
            row_id = f"{request_id}-{i}"
            self._emit(model, row_id, row, value, started, cache_hit=False)
            out.append((row_id, value))
        return model, out

    def feedback(self, request_id: str, actual_usd: float) -> None:
        event = FeedbackEvent(request_id=request_id, timestamp=utcnow(), actual=actual_usd)
        self.publisher.publish(FEEDBACK_TOPIC, encode_key(request_id), event.to_bytes())

    def _emit(
        self,
        model: LoadedModel,
        request_id: str,
        row: Sequence[float],
        value: float,
        started: float,
        *,
        cache_hit: bool,
    ) -> None:
        self.metrics.prediction_usd.observe(value)
        event = PredictionEvent(
            request_id=request_id,
            timestamp=utcnow(),
            model_name=model.name,
            model_version=model.version,
            features=dict(zip(FEATURE_NAMES, row, strict=True)),
            prediction=value,
            latency_ms=(perf_counter() - started) * 1000.0,
            replica_id=self.replica_id,
            cache_hit=cache_hit,
        )
        if self.shadow is None or not self.shadow.submit(event, row):
            self.publish_prediction(event)

    def reserve_prediction(self, event: PredictionEvent) -> int:
        """The ledger slot of a prediction event held for the shadow (published later)."""
        return self.publisher.reserve(PREDICTIONS_TOPIC, encode_key(event.request_id))

    def publish_prediction(self, event: PredictionEvent, slot: int | None = None) -> None:
        self.publisher.publish(
            PREDICTIONS_TOPIC, encode_key(event.request_id), event.to_bytes(), slot
        )
