"""Decide a post-promotion watch and carry the decision out: roll back or keep.

A task of the drift consumer (:class:`PostPromotionWatch`), every
``WATCH_CHECK_INTERVAL_SECONDS``:

1. a decision recorded but not finished (Redis ``pending``, see :mod:`.watch_store`)? carry it
   out, without asking MLflow first (it may be down, or a half-done rollback may already have
   moved ``champion``);
2. otherwise read the watch from the registry: alias ``shadow`` (absent: no watch), alias
   ``champion`` and its ``driftloop.watch_until`` tag. If MLflow does not answer, the last
   watch read is used, so a rollback is still *decided* (and recorded in Redis) while the
   registry is down;
3. read the sums of the pair from Redis and apply :func:`.watch.decide`; a decision is recorded
   with ``HSETNX`` (first instance wins, figures frozen), then carried out.

Carrying out (one instance at a time: a Redis lease lock; every step idempotent and marked
done in Redis, so an instance that dies half way is finished by the next tick of any other):

* ``rolled_back``: move ``champion`` back to the shadow version, but only if it still names
  the watched version (if it names the shadow already, the move was done; if a third
  version, a newer promotion overtook the watch: nothing is moved or announced, and the
  outcome is recorded and counted as ``superseded``);
* tag both versions with the decision and its figures (``driftloop.rollback.*``);
* delete alias ``shadow`` if it still names the shadow version;
* ``rolled_back``: announce ``ModelPromoted(version=<shadow>, reason="rollback: ...")`` on
  ``model-events`` (replicas and the drift consumer follow the alias);
* count ``driftloop_watch_decisions_total{outcome}`` once (``HSETNX done``); ``outcome`` is
  ``rolled_back``, ``kept`` or ``superseded``.

Each registry or Kafka step is retried until it succeeds (capped backoff up to
``WATCH_RETRY_MAX_SECONDS``; ``driftloop_retries_total{operation="watch_action"}`` and
``driftloop_watch_failures_total{step}``): an MLflow outage delays a rollback, never loses it.
The announcement is the one step that can repeat (the lease expired during a long outage and a
second instance sent it too, or a crash came between sending and marking); a repeated
``ModelPromoted`` is harmless, everyone follows the alias.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from driftloop_contracts import WATCH_DECISION_TAG_PREFIX, WATCH_UNTIL_TAG, ModelPromoted, utcnow
from driftloop_service import Backoff, RetryStopped, retrying, wait_or_stop

from .errors import DriftConsumerError, WatchActionError
from .metrics import ConsumerMetrics
from .settings import DriftConsumerSettings
from .watch import Decision, Outcome, Pair, WatchPolicy, decide
from .watch_store import WatchStore

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Steps of carrying a decision out, as marked in Redis (and the ``step`` label of failures).
MOVED, TAGGED, SHADOW_REMOVED, ANNOUNCED, DONE = (
    "moved",
    "tagged",
    "shadow_removed",
    "announced",
    "done",
)
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class WatchState:
    """A watch in progress, as the registry shows it."""

    pair: Pair
    #: End of the watch (the champion's ``driftloop.watch_until`` tag); ``None``: no end set,
    #: the watch runs until a rollback (or until someone removes the alias).
    until: datetime | None

    def over(self, now: datetime) -> bool:
        return self.until is not None and now >= self.until


class WatchRegistry(Protocol):
    """The registry operations of a watch (MLflow in production, a fake in tests). Blocking;
    each raises :class:`WatchActionError` when the registry fails."""

    def watch(self) -> WatchState | None: ...

    def champion(self) -> str | None: ...

    def move_champion(self, version: str) -> None: ...

    def remove_shadow(self, expected: str) -> None: ...

    def tag(self, version: str, tags: dict[str, str]) -> None: ...

    def run_id(self, version: str) -> str: ...


class Announcer(Protocol):
    async def announce(self, event: ModelPromoted) -> None:
        """Publish ``event`` on ``model-events`` and wait for the ack (raise
        :class:`WatchActionError` if it was not acknowledged)."""
        ...


def parse_until(raw: str | None) -> datetime | None:
    """The ``driftloop.watch_until`` tag (ISO-8601, UTC); ``None`` if absent or unreadable."""
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        log.warning("watch_until_unreadable", value=raw)
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=utcnow().tzinfo)


_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


class MlflowWatchRegistry:
    """:class:`WatchRegistry` over ``MlflowClient`` (model name and aliases from settings)."""

    def __init__(self, tracking_uri: str, model_name: str, champion: str, shadow: str) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._uri = tracking_uri
        self._name = model_name
        self._champion = champion
        self._shadow = shadow
        self._client: MlflowClient | None = None

    def _mlflow(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        return self._client

    def _call(self, what: str, op: Callable[[], T]) -> T:
        try:
            return op()
        except Exception as exc:
            raise WatchActionError(f"MLflow failed to {what}: {exc}") from exc

    def _by_alias(self, alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self._mlflow().get_model_version_by_alias(self._name, alias)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND:
                return None
            raise

    def watch(self) -> WatchState | None:
        def read() -> WatchState | None:
            shadow = self._by_alias(self._shadow)
            if shadow is None:
                return None
            champion = self._by_alias(self._champion)
            if champion is None or str(champion.version) == str(shadow.version):
                return None  # nothing to compare (a finished rollback is found via ``pending``)
            until = parse_until((champion.tags or {}).get(WATCH_UNTIL_TAG))
            return WatchState(Pair(str(champion.version), str(shadow.version)), until)

        return self._call("read the watch aliases", read)

    def champion(self) -> str | None:
        mv = self._call(f"read alias {self._champion}", lambda: self._by_alias(self._champion))
        return str(mv.version) if mv is not None else None

    def move_champion(self, version: str) -> None:
        self._call(
            f"move alias {self._champion} to version {version}",
            lambda: self._mlflow().set_registered_model_alias(self._name, self._champion, version),
        )

    def remove_shadow(self, expected: str) -> None:
        def remove() -> None:
            mv = self._by_alias(self._shadow)
            if mv is not None and str(mv.version) == expected:
                self._mlflow().delete_registered_model_alias(self._name, self._shadow)

        self._call(f"remove alias {self._shadow}", remove)

    def tag(self, version: str, tags: dict[str, str]) -> None:
        def write() -> None:
            for key, value in tags.items():
                self._mlflow().set_model_version_tag(self._name, version, key, value)

        self._call(f"tag version {version}", write)

    def run_id(self, version: str) -> str:
        mv = self._call(
            f"read version {version}",
            lambda: self._mlflow().get_model_version(self._name, version),
        )
        return str(mv.run_id or "")


class KafkaAnnouncer:
    """Publishes a rollback's ``ModelPromoted`` (acks=all, keyed by model name, as the DAG's
    promotion does). A producer per announcement: a rollback is rare."""

    def __init__(self, bootstrap: str, topic: str, *, client_id: str, timeout_s: float = 10.0):
        self._bootstrap = bootstrap
        self._topic = topic
        self._client_id = client_id
        self._timeout = timeout_s

    async def announce(self, event: ModelPromoted) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=int(self._timeout * 1000),
        )
        try:
            await asyncio.wait_for(producer.start(), self._timeout)
            await asyncio.wait_for(
                producer.send_and_wait(
                    self._topic, event.to_bytes(), key=event.model_name.encode()
                ),
                self._timeout,
            )
        except Exception as exc:
            raise WatchActionError(
                f"could not announce the rollback on {self._topic}: {exc!r}"
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()


class PostPromotionWatch:
    """The watch task of one consumer instance (see the module docstring)."""

    def __init__(
        self,
        settings: DriftConsumerSettings,
        *,
        store: WatchStore,
        registry: WatchRegistry,
        announcer: Announcer,
        metrics: ConsumerMetrics,
        stopping: asyncio.Event,
        on_rolled_back: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.announcer = announcer
        self.metrics = metrics
        self.stopping = stopping
        self.policy = WatchPolicy(settings.watch_rmse_margin, settings.watch_min_rows)
        self._on_rolled_back = on_rolled_back
        self._clock = clock
        self._backoff = Backoff(1.0, settings.watch_retry_max_seconds)
        self._count_retry = metrics.retries.hook("watch_action")
        #: The last watch the registry showed: decisions go on while MLflow is down.
        self._last: WatchState | None = None

    async def run(self) -> None:
        """Tick until stopping; a failed tick is logged and counted, the next one retries."""
        while not self.stopping.is_set():
            try:
                await self.tick()
            except RetryStopped:
                return
            except DriftConsumerError as exc:
                self.metrics.watch_failures.labels("tick").inc()
                log.warning("watch_tick_failed", error=str(exc))
            except Exception as exc:  # a bug must not end the task: log it loudly, go on
                self.metrics.watch_failures.labels("tick").inc()
                log.exception("watch_tick_crashed", error=repr(exc))
            if await wait_or_stop(self.stopping, self.settings.watch_check_interval_seconds):
                return

    async def tick(self) -> Decision | None:
        """One look: finish a pending decision, or decide the current watch. Returns the
        decision carried out (``None``: no watch, or keep watching)."""
        pending = await self.store.pending()
        if pending is not None:
            decision = await self.store.decision(pending)
            if decision is not None:
                await self.carry_out(decision)
                return decision
        state = await self._read_watch()
        if state is None:
            self.metrics.clear_watch()
            return None
        sums = await self.store.sums(state.pair)
        self.metrics.set_watch(state.pair.champion, sums)
        decision = await self.store.decision(state.pair)
        if decision is None:
            now = self._clock()
            outcome = decide(sums, self.policy, watch_over=state.over(now))
            if outcome is None:
                return None
            decision = await self.store.record(
                Decision(
                    outcome,
                    state.pair,
                    sums,
                    self.policy.rmse_margin,
                    self.policy.min_rows,
                    now,
                )
            )
            log.info(
                "watch_decided",
                outcome=decision.outcome.value,
                champion=decision.pair.champion,
                shadow=decision.pair.shadow,
                figures=decision.summary(),
            )
        await self.carry_out(decision)
        return decision

    async def _read_watch(self) -> WatchState | None:
        try:
            self._last = await asyncio.to_thread(self.registry.watch)
        except WatchActionError as exc:
            self.metrics.watch_failures.labels("read_watch").inc()
            log.warning(
                "watch_registry_unavailable",
                error=str(exc),
                using_last=self._last is not None,
            )
        return self._last

    async def carry_out(self, decision: Decision) -> None:
        """Finish ``decision`` (idempotent; see the module docstring)."""
        pair = decision.pair
        if DONE in await self.store.done_steps(pair):
            await self.store.clear_pending(pair)
            return
        lock = self.store.lock(pair, self.settings.watch_lock_seconds)
        if not await lock.acquire():
            return  # another instance is carrying it out
        try:
            steps = await self.store.done_steps(pair)
            if DONE in steps:
                return
            rolling_back = decision.outcome is Outcome.ROLLED_BACK
            if rolling_back and MOVED not in steps:
                champion = await self._step(MOVED, self.registry.champion)
                if champion == pair.champion:
                    await self._step(MOVED, self.registry.move_champion, pair.shadow)
                elif champion != pair.shadow:
                    log.warning(
                        "rollback_superseded",
                        watched=pair.champion,
                        shadow=pair.shadow,
                        champion_now=champion,
                    )
                    await self.store.mark(pair, SUPERSEDED)
                await self.store.mark(pair, MOVED)
            superseded = SUPERSEDED in await self.store.done_steps(pair)
            if TAGGED not in steps:
                tags = decision.tags()
                if superseded:
                    tags[f"{WATCH_DECISION_TAG_PREFIX}.outcome"] = SUPERSEDED
                await self._step(TAGGED, self.registry.tag, pair.champion, tags)
                await self._step(TAGGED, self.registry.tag, pair.shadow, tags)
                await self.store.mark(pair, TAGGED)
            if SHADOW_REMOVED not in steps:
                await self._step(SHADOW_REMOVED, self.registry.remove_shadow, pair.shadow)
                await self.store.mark(pair, SHADOW_REMOVED)
            announce = rolling_back and not superseded
            if announce and ANNOUNCED not in steps:
                run_id = await self._step(ANNOUNCED, self.registry.run_id, pair.shadow)
                event = ModelPromoted(
                    model_name=self.settings.model_name,
                    version=pair.shadow,
                    run_id=run_id,
                    reason=decision.reason(),
                )
                await self._retry(ANNOUNCED, lambda: self.announcer.announce(event))
                await self.store.mark(pair, ANNOUNCED)
            if await self.store.mark(pair, DONE):
                outcome = SUPERSEDED if superseded else decision.outcome.value
                self.metrics.watch_decisions.labels(outcome).inc()
                log.warning(
                    "model_rolled_back" if announce else "watch_ended",
                    outcome=outcome,
                    champion=pair.shadow if announce else pair.champion,
                    figures=decision.summary(),
                )
            await self.store.clear_pending(pair)
            self._last = None
            self.metrics.clear_watch(rolled_back=pair.champion if announce else None)
        finally:
            with contextlib.suppress(Exception):
                await lock.release()
        if decision.outcome is Outcome.ROLLED_BACK and self._on_rolled_back is not None:
            self._on_rolled_back()

    async def _step(self, step: str, fn: Callable[..., T], *args: Any) -> T:
        """A blocking registry call, in a thread, retried until it succeeds."""
        return await self._retry(step, lambda: asyncio.to_thread(fn, *args))

    async def _retry(self, step: str, op: Callable[[], Awaitable[T]]) -> T:
        def failed(attempt: int, error: BaseException, delay: float) -> None:
            self._count_retry(attempt, error, delay)
            self.metrics.watch_failures.labels(step).inc()
            log.warning("watch_step_failed", step=step, error=str(error), retry_in_s=delay)

        policy = retrying(
            backoff=self._backoff,
            retry_on=WatchActionError,
            stopping=self.stopping,
            on_retry=failed,
        )
        async for attempt in policy:
            with attempt:
                result = await op()
        return result
