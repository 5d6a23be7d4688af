"""Assembles the bridge: routers, error handlers, and a lifespan that owns Redis, Airflow and
the retry worker.

``create_app(settings)`` loads the routing rules eagerly, so a bad rules file fails before the
server listens. Tests pass their own ``redis``, ``trigger`` and ``clock``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from redis.asyncio import Redis

from driftloop_service import Backoff, install_error_handlers, metrics_router, stop_tasks

from .airflow_trigger import AirflowTrigger
from .auth import AuthConfig
from .brake import Brake, BrakePolicy
from .decisions import DecisionLog
from .dedupe import Deduper
from .deps import Bridge
from .dispatcher import Dispatcher
from .metrics import BridgeMetrics
from .retry_queue import RetryQueue, Trigger
from .routes import api_router
from .rules import RuleSet, load_rules
from .settings import BridgeSettings
from .store import Clock, RedisKeys, make_redis

log = structlog.get_logger(__name__)


def create_app(
    settings: BridgeSettings,
    *,
    redis: Redis | None = None,
    trigger: Trigger | None = None,
    clock: Clock = time.time,
    rules: RuleSet | None = None,
    run_worker: bool = True,
    metrics: BridgeMetrics | None = None,
) -> FastAPI:
    """Build the app. Injected ``redis``/``trigger`` are not closed by the app."""
    ruleset = rules if rules is not None else load_rules(settings.rules_file)
    bridge_metrics = metrics or BridgeMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_redis = redis is None
        client = redis or make_redis(settings.redis_url)
        airflow: AirflowTrigger | None = None
        calls: Trigger
        if trigger is None:
            calls = airflow = AirflowTrigger(
                settings.airflow_url,
                settings.airflow_username,
                settings.airflow_password,
                default_timeout=settings.airflow_timeout_seconds,
                clock=clock,
                metrics=bridge_metrics,
            )
        else:
            calls = trigger
        keys = RedisKeys(settings.redis_prefix)
        policy = BrakePolicy(
            max_triggers=settings.brake_max_triggers,
            window_seconds=settings.brake_window_seconds,
            hold_seconds=settings.brake_hold_seconds,
        )
        brake = Brake(client, keys, policy, clock=clock, metrics=bridge_metrics)
        decisions = DecisionLog(client, keys, keep=settings.decisions_keep, clock=clock)
        queue = RetryQueue(
            client,
            keys,
            calls,
            clock=clock,
            backoff=Backoff(settings.retry_initial_seconds, settings.retry_max_backoff_seconds),
            max_age_seconds=settings.retry_max_age_seconds,
            poll_seconds=settings.retry_poll_seconds,
            call_timeout_seconds=settings.airflow_timeout_seconds,
            metrics=bridge_metrics,
        )
        dispatcher = Dispatcher(
            rules=ruleset,
            deduper=Deduper(
                client,
                keys,
                clock=clock,
                cooldown_seconds=settings.cooldown_seconds,
                incident_ttl_seconds=settings.incident_ttl_seconds,
                brake=policy,
            ),
            queue=queue,
            decisions=decisions,
            clock=clock,
            inline_timeout_seconds=settings.inline_trigger_timeout_seconds,
            metrics=bridge_metrics,
        )
        queue.set_final_hook(dispatcher.record_final)
        app.state.bridge = Bridge(
            settings=settings,
            redis=client,
            auth=AuthConfig.from_settings(settings),
            dispatcher=dispatcher,
            queue=queue,
            decisions=decisions,
            clock=clock,
            metrics=bridge_metrics,
            brake=brake,
        )
        if settings.allow_unauthenticated and settings.webhook_token is None:
            log.warning("bridge_insecure", detail="webhooks accepted WITHOUT authentication")
        log.info(
            "bridge_start",
            rules=len(ruleset),
            rules_file=str(settings.rules_file),
            airflow_url=settings.airflow_url,
            hmac=settings.hmac_secret is not None,
            cooldown_s=settings.cooldown_seconds,
            brake_max_triggers=policy.max_triggers,
            brake_window_s=policy.window_seconds,
        )
        stopping = asyncio.Event()
        workers = (
            [
                asyncio.create_task(queue.run(stopping)),
                asyncio.create_task(brake.watch(stopping, settings.brake_refresh_seconds)),
            ]
            if run_worker
            else []
        )
        try:
            yield
        finally:
            stopping.set()
            if workers:
                await stop_tasks(workers, settings.graceful_shutdown_seconds)
            if airflow is not None:
                airflow.close()
            if own_redis:
                await client.aclose()
            log.info("bridge_stop")

    app = FastAPI(
        title="driftloop bridge",
        summary="Authenticated alert webhooks -> deduplicated, durable Airflow DAG triggers",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(metrics_router(lambda request: bridge_metrics.registry))
    return app
