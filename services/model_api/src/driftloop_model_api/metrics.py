"""Prometheus metrics of one replica; the names are the ones the monitoring config reads.

Each app builds its own :class:`Metrics` on its own registry
(:func:`driftloop_service.new_registry`; tests build many apps). Every
series carries ``replica``, so several replicas scraped into one Prometheus stay apart.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop_service import RetryCounter, new_registry

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: USD; the training data is capped at 500,001.
PREDICTION_BUCKETS = tuple(float(v) for v in range(50_000, 650_001, 50_000))


class Metrics:
    """All series of the model API, bound to one replica id."""

    def __init__(self, replica_id: str, registry: CollectorRegistry | None = None) -> None:
        self.replica_id = replica_id
        self.registry = registry or new_registry()
        r = self.registry
        #: ``driftloop_retries_total{replica,operation}``: one hook per retried operation.
        self.retries = RetryCounter(r, {"replica": replica_id})
        self._http_requests = Counter(
            "driftloop_http_requests_total",
            "HTTP requests answered, by route template and status",
            ["replica", "route", "status"],
            registry=r,
        )
        self._http_duration = Histogram(
            "driftloop_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["replica", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction_usd = Histogram(
            "driftloop_prediction_usd",
            "Predicted median house value, USD",
            ["replica"],
            buckets=PREDICTION_BUCKETS,
            registry=r,
        ).labels(replica_id)
        self._model_info = Gauge(
            "driftloop_model_info",
            "The model version being served (value 1)",
            ["replica", "model_name", "model_version"],
            registry=r,
        )
        self._model_loaded_at = Gauge(
            "driftloop_model_loaded_timestamp_seconds",
            "Unix time at which this replica started serving the model version",
            ["replica", "model_name", "model_version"],
            registry=r,
        )
        self._reloads = Counter(
            "driftloop_model_reloads_total",
            "Model loads, by outcome (success|failure)",
            ["replica", "outcome"],
            registry=r,
        )
        self._load_failures = Counter(
            "driftloop_model_load_failures_total",
            "Model loads that failed, by reason: a refused artifact (untrusted_type,"
            " digest_mismatch, digest_missing, legacy_format, rejected) or error (registry"
            " unreachable, model unfit for the schema)",
            ["replica", "reason"],
            registry=r,
        )
        self._alias_check_failures = Counter(
            "driftloop_model_alias_check_failures_total",
            "Reads of the champion alias that failed (the model registry unreachable or"
            " erroring): the replica keeps serving its model and reads again at the next check"
            " or event, so a promotion or rollback waits for the registry",
            ["replica"],
            registry=r,
        )
        self._alias_check_failures.labels(replica_id)  # exported at 0: increase() sees the first
        self._events_ignored = Counter(
            "driftloop_model_events_ignored_total",
            "ModelPromoted events not acted on as announced, by reason"
            " (driftloop_contracts.PromotionIgnored)",
            ["replica", "reason"],
            registry=r,
        )
        self._published = Counter(
            "driftloop_events_published_total",
            "Events acknowledged by the broker",
            ["replica", "topic"],
            registry=r,
        )
        self._failed = Counter(
            "driftloop_events_failed_total",
            "Delivery attempts that failed (the event is re-queued, not lost)",
            ["replica", "topic"],
            registry=r,
        )
        self._dropped = Counter(
            "driftloop_events_dropped_total",
            "Events discarded undelivered (their topic's buffer full: oldest first; or unsent"
            " at shutdown)",
            ["replica", "topic"],
            registry=r,
        )
        self._buffered = Gauge(
            "driftloop_events_buffered",
            "Events accepted but not yet acknowledged (waiting + in flight), per topic buffer",
            ["replica", "topic"],
            registry=r,
        )
        self._lost = Counter(
            "driftloop_events_lost_total",
            "Events accepted (answered 200/202) that never reached the broker, by why:"
            " process_killed = pending when the process died, found missing by its next"
            " incarnation. Cumulative over the replica's restarts (kept in its state dir)",
            ["replica", "topic", "reason"],
            registry=r,
        )
        self._unreconciled = Gauge(
            "driftloop_events_unreconciled",
            "Events a killed incarnation left unacknowledged whose fate is not known yet (the"
            " search of the topic waits for the broker)",
            ["replica", "topic"],
            registry=r,
        )
        self._invalid = Counter(
            "driftloop_events_invalid_total",
            "Records skipped as invalid (model-events), by reason (driftloop_contracts.InvalidReason)",
            ["replica", "topic", "reason"],
            registry=r,
        )
        self._cache = Counter(
            "driftloop_cache_requests_total",
            "Prediction cache look-ups (hit|miss|error)",
            ["replica", "result"],
            registry=r,
        )
        self._feedback_rejected = Counter(
            "driftloop_feedback_rejected_total",
            "POST /feedback answers that refused the label, by reason (the error code)",
            ["replica", "reason"],
            registry=r,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.replica_id, *labels)
        return child

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        self._child(self._http_requests, route, str(status)).inc()
        self._child(self._http_duration, route).observe(seconds)

    def set_model(self, model_name: str, model_version: str, loaded_at: float) -> None:
        """Label the served version; its load time lets a stat panel show "live since" from
        the first scrape, which a subquery over the info series cannot (it needs a full step).
        """
        for gauge, value in ((self._model_info, 1.0), (self._model_loaded_at, loaded_at)):
            gauge.clear()
            gauge.labels(self.replica_id, model_name, model_version).set(value)

    def reload(self, outcome: str) -> None:
        self._child(self._reloads, outcome).inc()

    def load_failed(self, reason: str) -> None:
        self._child(self._load_failures, reason).inc()

    def alias_check_failed(self) -> None:
        self._child(self._alias_check_failures).inc()

    def event_ignored(self, reason: str) -> None:
        self._child(self._events_ignored, reason).inc()

    def published(self, topic: str, n: int = 1) -> None:
        self._child(self._published, topic).inc(n)

    def failed(self, topic: str, n: int = 1) -> None:
        self._child(self._failed, topic).inc(n)

    def dropped(self, topic: str, n: int = 1) -> None:
        self._child(self._dropped, topic).inc(n)

    def lost(self, topic: str, reason: str, n: int = 1) -> None:
        """Count ``n`` lost events (``n=0`` only creates the series)."""
        self._child(self._lost, topic, reason).inc(n)

    def set_unreconciled(self, topic: str, n: int) -> None:
        self._child(self._unreconciled, topic).set(n)

    def set_buffered(self, topic: str, n: int) -> None:
        self._child(self._buffered, topic).set(n)

    def invalid(self, topic: str, reason: str) -> None:
        self._child(self._invalid, topic, reason).inc()

    def cache(self, result: str) -> None:
        self._child(self._cache, result).inc()

    def feedback_rejected(self, reason: str, n: int = 1) -> None:
        """Count a refused label (``n=0`` creates the series at 0, for rates and alerts)."""
        self._child(self._feedback_rejected, reason).inc(n)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent); for tests and health details."""
        found = self.registry.get_sample_value(name, {"replica": self.replica_id, **labels})
        return found or 0.0


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label so scanners cannot blow up cardinality.
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_http(template, status, perf_counter() - started)
