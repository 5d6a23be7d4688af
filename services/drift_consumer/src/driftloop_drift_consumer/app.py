"""``create_app(settings)``: the HTTP face of one consumer instance and the lifespan that runs it.

Routes (in ``routes/``): ``/health/live`` and ``/health/ready`` (the shared vocabulary; ready =
consuming, a reference loaded, every sink writing), ``/reports``, ``/reports/latest`` and
``/reports/{name}``, ``/thresholds`` (read-only); ``/metrics`` serves this app's own registry.
Errors answer in the shared body (:mod:`driftloop_service.http_errors`).

The lifespan builds the collaborators (which tests may inject: a fake registry, a consumer
factory, a Redis client, a watch registry), starts the consumer loop, the reference and
model-events tasks, the threshold watcher, the report scheduler and the post-promotion watch
(:mod:`.rollback`), and stops them in reverse on shutdown (the loop
flushes finished work and commits before it leaves the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from driftloop_service import (
    DeadLetterPublisher,
    ModelEventsConsumer,
    dead_letter_producer_factory,
    install_error_handlers,
    metrics_router,
    model_events_consumer_factory,
    stop_tasks,
)

from .feedback_join import JoinStore
from .kafka_consumer import ConsumerFactory, data_consumer_factory
from .labelled_retention import run_retention
from .loop import DriftLoop
from .metrics import ConsumerMetrics
from .redis_memory import run_memory_watch
from .reference import MlflowReferenceSource, ReferenceManager, ReferenceSource
from .reports import ReportScheduler, ReportStore
from .rollback import (
    Announcer,
    KafkaAnnouncer,
    MlflowWatchRegistry,
    PostPromotionWatch,
    WatchRegistry,
)
from .routes import api_router
from .settings import DriftConsumerSettings
from .shared_store import SharedStore
from .sinks.influx import InfluxSink
from .sinks.labelled_log import LabelledLogWriter
from .threshold_watcher import ThresholdWatcher
from .watch_store import WatchStore
from .windows import WindowManager, WindowPolicy

log = structlog.get_logger(__name__)

_NOT_SET: Any = object()


def create_app(
    settings: DriftConsumerSettings,
    *,
    reference_source: ReferenceSource | None = None,
    consumer_factory: ConsumerFactory | None = None,
    model_events_factory: Callable[[], ModelEventsConsumer] | None = _NOT_SET,
    redis: Any = None,
    metrics: ConsumerMetrics | None = None,
    watch_registry: WatchRegistry | None = None,
    announcer: Announcer | None = None,
) -> FastAPI:
    """The drift consumer for one instance.

    Example::

        app = create_app(load_settings(DriftConsumerSettings))
        uvicorn.run(app, host=settings.host, port=settings.port)
    """
    metrics = metrics or ConsumerMetrics()
    store = ReportStore(settings.reports_dir, settings.reports_keep)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import redis.asyncio as aioredis

        # influxdb_client takes seconds to import: do it now, off the event loop.
        await asyncio.to_thread(importlib.import_module, "influxdb_client")
        client = redis or aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        influx = (
            InfluxSink(
                settings.influx_url,
                settings.influx_db,
                timeout_s=settings.influx_timeout_seconds,
                batch_lines=settings.influx_batch_lines,
                retry_initial_s=settings.sink_retry_initial_seconds,
                retry_max_s=settings.sink_retry_max_seconds,
                on_retry=metrics.retries.hook("influx_write"),
            )
            if settings.influx_enabled
            else None
        )
        reports = (
            ReportScheduler(
                store,
                settings.reports_interval_seconds,
                on_outcome=lambda o: metrics.reports.labels(o).inc(),
            )
            if settings.reports_interval_seconds > 0
            else None
        )
        events_factory = model_events_factory
        if events_factory is _NOT_SET:
            events_factory = model_events_consumer_factory(
                settings.kafka_bootstrap,
                client_id=f"driftloop-drift-{settings.instance_id}",
                session_timeout_ms=settings.kafka_session_timeout_ms,
                topic=settings.model_events_topic,
            )
        dead_letters = (
            DeadLetterPublisher(
                dead_letter_producer_factory(
                    settings.kafka_bootstrap,
                    client_id=f"driftloop-drift-dlq-{settings.instance_id}",
                ),
                on_outcome=lambda topic, outcome: metrics.dead_letters.labels(topic, outcome).inc(),
                on_retry=metrics.retries.hook("dead_letter_publish"),
                attempts=settings.dead_letter_attempts,
            )
            if settings.dead_letters_enabled
            else None
        )
        watch_store = WatchStore(
            client, model_name=settings.model_name, ttl_seconds=settings.join_ttl_seconds
        )
        loop = DriftLoop(
            settings,
            metrics=metrics,
            windows=WindowManager(
                WindowPolicy(
                    settings.window_events, settings.window_seconds, settings.min_window_events
                ),
                ks_method=settings.ks_method,
            ),
            references=ReferenceManager(
                reference_source
                or MlflowReferenceSource(
                    settings.mlflow_tracking_uri, settings.model_name, settings.champion_alias
                ),
                settings.state_dir,
            ),
            join_store=JoinStore(client, settings.join_ttl_seconds),
            labelled=LabelledLogWriter(settings.labelled_log_dir),
            influx=influx,
            reports=reports,
            consumer_factory=consumer_factory or data_consumer_factory(settings),
            model_events_factory=events_factory,
            dead_letters=dead_letters,
            watch_store=watch_store,
            shared_store=(
                SharedStore(
                    client,
                    group=settings.consumer_group,
                    ttl_seconds=settings.join_ttl_seconds,
                    instance_id=settings.instance_id,
                )
                if settings.shared_windows
                else None
            ),
        )
        watcher = ThresholdWatcher(
            client,
            loop.set_thresholds,
            interval_s=settings.thresholds_poll_seconds,
            on_error=lambda exc: metrics.sink_failures.labels("redis_thresholds").inc(),
        )
        app.state.loop = loop
        tasks = [
            asyncio.create_task(loop.reference_task(), name="reference"),
            asyncio.create_task(loop.model_events_task(), name="model-events"),
            asyncio.create_task(watcher.run(loop.stopping), name="thresholds"),
            asyncio.create_task(loop.run(), name="consumer"),
        ]
        memory = run_memory_watch(
            client, metrics, loop.stopping, settings.redis_memory_poll_seconds
        )
        tasks.append(asyncio.create_task(memory, name="redis-memory"))
        if reports is not None:
            tasks.append(asyncio.create_task(reports.run(loop.stopping), name="reports"))
        # A caller that injects a fake reference source (a test) gets no watch on the real
        # MLflow unless it injects a watch registry too: it must never move a real alias.
        registry = watch_registry
        if registry is None and reference_source is None:
            registry = MlflowWatchRegistry(
                settings.mlflow_tracking_uri,
                settings.model_name,
                settings.champion_alias,
                settings.shadow_alias,
            )
        if settings.watch_enabled and registry is not None:
            post_promotion = PostPromotionWatch(
                settings,
                store=watch_store,
                registry=registry,
                announcer=announcer
                or KafkaAnnouncer(
                    settings.kafka_bootstrap,
                    settings.model_events_topic,
                    client_id=f"driftloop-drift-watch-{settings.instance_id}",
                ),
                metrics=metrics,
                stopping=loop.stopping,
                on_rolled_back=loop.request_reference_check,
            )
            tasks.append(asyncio.create_task(post_promotion.run(), name="post-promotion-watch"))
        if settings.labelled_retention_days > 0:
            retention = run_retention(
                settings.labelled_log_dir, settings.labelled_retention_days, loop.stopping
            )
            tasks.append(asyncio.create_task(retention, name="labelled-retention"))
        log.info(
            "drift_consumer_started",
            instance=settings.instance_id,
            group=settings.consumer_group,
            window_events=settings.window_events,
        )
        try:
            yield
        finally:
            loop.stopping.set()
            await stop_tasks(tasks, settings.graceful_shutdown_seconds)
            if reports is not None:
                reports.close()
            if influx is not None:
                await influx.close()
            if dead_letters is not None:
                await dead_letters.close()
            if redis is None:
                with contextlib.suppress(Exception):
                    await client.aclose()
            log.info("drift_consumer_stopped")

    app = FastAPI(title="driftloop drift consumer", lifespan=lifespan)
    app.state.report_store = store
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(metrics_router(lambda request: metrics.registry))
    return app
