"""``create_app(settings)``: assembles middleware, routes and the lifespan that owns clients.

The lifespan builds the runtime (metrics, model holder, cache, publisher, reloader), starts
the background tasks and stops them in reverse order. Collaborators can be injected (a fake
registry, a recording producer) so tests run without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

import structlog
from fastapi import FastAPI

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC
from driftloop_service import (
    install_error_handlers,
    metrics_router,
    model_events_consumer_factory,
)

from .batching import MicroBatcher
from .cache import PredictionCache
from .deps import Runtime
from .label_gate import REJECTION_REASONS, LabelGate
from .label_store import LabelRedis, LabelStore, label_redis_client
from .ledger import EventLedger, MmapLedger
from .metrics import Metrics, MetricsMiddleware
from .model_holder import ModelHolder
from .model_source import MlflowModelSource, ModelSource
from .publisher import EventPublisher, ProducerFactory, aiokafka_producer_factory
from .recovery import KeyFinder, LossRecovery, kafka_key_finder
from .reloader import ConsumerFactory, Reloader
from .routes import api_router
from .serving import PredictionService
from .settings import LOCAL_FEEDBACK_TOKEN_KEY, ModelApiSettings
from .shadow import ShadowMetrics, ShadowStage
from .shadow_watch import ShadowWatch
from .tokens import FeedbackTokens

log = structlog.get_logger(__name__)


class _Default(enum.Enum):
    """Marks "not passed" apart from an explicit ``None`` (which disables the component)."""

    NOT_SET = enum.auto()


_NOT_SET: Final = _Default.NOT_SET


class _NullProducer:
    """Stands in for Kafka when ``kafka_enabled`` is false: accepts and forgets."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def abort(self) -> None:
        return None

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> object:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def create_app(
    settings: ModelApiSettings,
    *,
    source: ModelSource | None = None,
    producer_factory: ProducerFactory | None = None,
    consumer_factory: ConsumerFactory | Literal[_Default.NOT_SET] | None = _NOT_SET,
    metrics: Metrics | None = None,
    label_redis: LabelRedis | Literal[_Default.NOT_SET] | None = _NOT_SET,
    key_finder: KeyFinder | None = None,
) -> FastAPI:
    """The model API for one replica.

    Example::

        app = create_app(load_settings(ModelApiSettings))
        uvicorn.run(app, host=settings.host, port=settings.port)
    """
    metrics = metrics or Metrics(settings.replica_id)
    client_id = f"driftloop-model-api-{settings.replica_id}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model_source = source or MlflowModelSource(
            settings.mlflow_tracking_uri, settings.model_name
        )
        if producer_factory is not None:
            make_producer = producer_factory
        elif settings.kafka_enabled:
            make_producer = aiokafka_producer_factory(
                settings.kafka_bootstrap,
                topics=(PREDICTIONS_TOPIC, FEEDBACK_TOPIC),
                linger_ms=settings.publish_linger_ms,
                request_timeout_ms=settings.publish_request_timeout_ms,
                client_id=client_id,
            )
        else:
            make_producer = _NullProducer
        make_consumer: ConsumerFactory | None
        if consumer_factory is not _NOT_SET:
            make_consumer = consumer_factory
        elif settings.kafka_enabled:
            make_consumer = model_events_consumer_factory(
                settings.kafka_bootstrap,
                client_id=client_id,
                session_timeout_ms=settings.kafka_session_timeout_ms,
            )
        else:
            make_consumer = None
        topics = (PREDICTIONS_TOPIC, FEEDBACK_TOPIC)
        buffer_sizes = {
            PREDICTIONS_TOPIC: settings.publish_buffer_size,
            FEEDBACK_TOPIC: settings.publish_feedback_buffer_size,
        }
        ledger: EventLedger | None = None
        recovery: LossRecovery | None = None
        if settings.state_dir is not None:
            find = key_finder
            if find is None and settings.kafka_enabled:
                find = kafka_key_finder(settings.kafka_bootstrap, client_id=client_id)
            recovery = LossRecovery(settings.state_dir, settings.replica_id, topics, metrics, find)
            recovery.load()  # before this incarnation's own ledger exists
            ledger = MmapLedger(
                settings.state_dir,
                settings.replica_id,
                topics,
                EventPublisher.ledger_slots(
                    buffer_sizes,
                    settings.publish_batch_size,
                    held=settings.shadow_max_pending if settings.shadow_enabled else 0,
                ),
            )
        holder = ModelHolder()
        cache = PredictionCache(
            metrics, max_entries=settings.cache_max_entries if settings.cache_enabled else 0
        )
        publisher = EventPublisher(
            make_producer,
            metrics,
            buffer_sizes=buffer_sizes,
            batch_size=settings.publish_batch_size,
            retry_max_s=settings.publish_retry_max_seconds,
            ack_timeout_s=settings.publish_ack_timeout_seconds,
            drain_timeout_s=settings.publish_drain_seconds,
            ledger=ledger,
        )
        shadow_metrics = ShadowMetrics(metrics.registry, settings.replica_id)
        shadow = ShadowStage(
            lambda event, slot: service.publish_prediction(event, slot),
            shadow_metrics,
            reserve=lambda event: service.reserve_prediction(event),
            max_batch=settings.shadow_max_batch_rows,
            max_pending=settings.shadow_max_pending,
            linger_s=settings.shadow_linger_ms / 1000,
        )
        shadow_watch = (
            ShadowWatch(shadow, model_source, shadow_metrics) if settings.shadow_enabled else None
        )
        reloader = Reloader(
            holder,
            model_source,
            metrics,
            alias=settings.model_alias,
            consumer_factory=make_consumer,
            check_interval_s=settings.alias_check_interval_seconds,
            retry_initial_s=settings.load_retry_initial_seconds,
            retry_max_s=settings.load_retry_max_seconds,
            reload_attempts=settings.reload_attempts,
            shadow=shadow_watch,
        )
        labels = _label_gate(settings, metrics, label_redis)
        batcher = MicroBatcher(settings.micro_batch_max_rows) if settings.micro_batching else None
        service = PredictionService(
            holder, cache, publisher, metrics, settings.replica_id, batcher=batcher, shadow=shadow
        )
        app.state.runtime = Runtime(
            settings=settings,
            metrics=metrics,
            service=service,
            publisher=publisher,
            reloader=reloader,
            labels=labels,
        )
        await publisher.start()
        await reloader.start()
        stopping = asyncio.Event()
        recovering = (
            asyncio.create_task(recovery.run(stopping), name="lost-event-recovery")
            if recovery is not None
            else None
        )
        log.info(
            "model_api_started",
            replica_id=settings.replica_id,
            port=settings.port,
            model=f"models:/{settings.model_name}@{settings.model_alias}",
        )
        try:
            yield
        finally:
            stopping.set()
            if recovering is not None:
                recovering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recovering
            await reloader.stop()
            await shadow.drain()
            await publisher.stop()
            if ledger is not None:
                ledger.close()
            await labels.store.close()
            log.info("model_api_stopped", replica_id=settings.replica_id)

    app = FastAPI(
        title="driftloop model API",
        summary="House-price predictions with validated input, event streaming and hot reload",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(metrics_router(lambda request: metrics.registry))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _label_gate(
    settings: ModelApiSettings,
    metrics: Metrics,
    client: LabelRedis | Literal[_Default.NOT_SET] | None,
) -> LabelGate:
    """Producer keys, feedback tokens and the Redis record of labelled ids (label_gate.py)."""
    if client is _NOT_SET:
        client = label_redis_client(settings.redis_url, settings.label_store_timeout_seconds)
    if settings.feedback_token_key.get_secret_value() == LOCAL_FEEDBACK_TOKEN_KEY:
        log.warning(
            "feedback_token_key_is_the_local_default", variable="DRIFTLOOP_FEEDBACK_TOKEN_KEY"
        )
    for reason in REJECTION_REASONS:
        metrics.feedback_rejected(reason, 0)
    return LabelGate(
        api_keys=settings.feedback_api_keys,
        tokens=FeedbackTokens(
            settings.feedback_token_key.get_secret_value().encode(),
            settings.feedback_token_ttl_seconds,
        ),
        store=LabelStore(
            client,
            ttl_s=settings.feedback_token_ttl_seconds,
            timeout_s=settings.label_store_timeout_seconds,
        ),
        replica_id=settings.replica_id,
    )
