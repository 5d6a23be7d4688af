"""Assembles the bridge: routers, error handlers, and a lifespan that owns Redis, Airflow and
the retry worker.

``create_app(settings)`` loads the routing rules eagerly, so a bad rules file fails before the
server listens. Tests pass their own ``redis``, ``trigger`` and ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from .airflow_trigger import AirflowTrigger
from .auth import AuthConfig
from .decisions import DecisionLog
from .dedupe import Deduper
from .deps import Bridge
from .dispatcher import Dispatcher
from .errors import AuthError, BodyTooLarge, PayloadError, StoreUnavailable
from .retry_queue import Backoff, RetryQueue, Trigger
from .routes import api_router
from .rules import RuleSet, load_rules
from .settings import BridgeSettings
from .store import Clock, RedisKeys, make_redis

log = structlog.get_logger(__name__)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse(
            status_code=401,
            content={"detail": f"unauthorized: {exc}"},
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(PayloadError)
    async def _payload(_: Request, exc: PayloadError) -> JSONResponse:
        return JSONResponse(
            status_code=422, content={"detail": exc.message, "problems": exc.problems}
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(status_code=413, content={"detail": str(exc)})

    @app.exception_handler(StoreUnavailable)
    async def _store(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("request.redis_unavailable", error=str(exc))
        return JSONResponse(
            status_code=503,
            content={"detail": "state store (Redis) unavailable; retry later"},
            headers={"Retry-After": "5"},
        )


def create_app(
    settings: BridgeSettings,
    *,
    redis: Redis | None = None,
    trigger: Trigger | None = None,
    clock: Clock = time.time,
    rules: RuleSet | None = None,
    run_worker: bool = True,
) -> FastAPI:
    """Build the app. Injected ``redis``/``trigger`` are not closed by the app."""
    ruleset = rules if rules is not None else load_rules(settings.rules_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_redis = redis is None
        client = redis or make_redis(settings.redis_url)
        airflow: AirflowTrigger | None = None
        if trigger is None:
            airflow = AirflowTrigger(
                settings.airflow_url,
                settings.airflow_username,
                settings.airflow_password,
                default_timeout=settings.airflow_timeout_seconds,
                clock=clock,
            )
        keys = RedisKeys(settings.redis_prefix)
        decisions = DecisionLog(client, keys, keep=settings.decisions_keep, clock=clock)
        queue = RetryQueue(
            client,
            keys,
            trigger or airflow,  # type: ignore[arg-type]
            clock=clock,
            backoff=Backoff(settings.retry_initial_seconds, settings.retry_max_backoff_seconds),
            max_age_seconds=settings.retry_max_age_seconds,
            poll_seconds=settings.retry_poll_seconds,
            call_timeout_seconds=settings.airflow_timeout_seconds,
        )
        dispatcher = Dispatcher(
            rules=ruleset,
            deduper=Deduper(
                client,
                keys,
                clock=clock,
                cooldown_seconds=settings.cooldown_seconds,
                incident_ttl_seconds=settings.incident_ttl_seconds,
            ),
            queue=queue,
            decisions=decisions,
            clock=clock,
            inline_timeout_seconds=settings.inline_trigger_timeout_seconds,
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
        )
        if settings.allow_unauthenticated and settings.webhook_token is None:
            log.warning("bridge.insecure", detail="webhooks accepted WITHOUT authentication")
        log.info(
            "bridge.start",
            rules=len(ruleset),
            rules_file=str(settings.rules_file),
            airflow_url=settings.airflow_url,
            hmac=settings.hmac_secret is not None,
            cooldown_s=settings.cooldown_seconds,
        )
        stopping = asyncio.Event()
        worker = asyncio.create_task(queue.run(stopping)) if run_worker else None
        try:
            yield
        finally:
            stopping.set()
            if worker is not None:
                try:
                    await asyncio.wait_for(worker, timeout=settings.airflow_timeout_seconds + 5)
                except TimeoutError:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
            if airflow is not None:
                airflow.close()
            if own_redis:
                await client.aclose()
            log.info("bridge.stop")

    app = FastAPI(
        title="driftloop bridge",
        summary="Authenticated alert webhooks -> deduplicated, durable Airflow DAG triggers",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.include_router(api_router)
    return app
