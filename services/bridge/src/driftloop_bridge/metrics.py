"""The bridge's Prometheus metrics, one :class:`BridgeMetrics` per app on its own registry.

Names are shared with the monitoring config. ``decision`` values: triggered, queued,
duplicate, cooldown, braked, run_active (another run of the DAG was still queued or running: no
second run for the incident), resolved, ignored, dead_letter, released (a dead-lettered trigger's claim
given back), plus unauthorized / invalid / unavailable for requests refused before any alert
was decided (``unavailable``: Redis down, answered 503). ``outcome`` values of triggers: created, exists (Airflow's 409), retry,
dead_letter, run_active (stood down: another run was active). ``reason`` values of releases: max_age, rejected.

Redis: Brake (:mod:`brake`): ``driftloop_bridge_brake_engaged`` is 1 while the circuit breaker holds
retraining back (refreshed every ``BRAKE_REFRESH_SECONDS`` and on every ``braked`` decision;
the ``RetrainingChurn`` alert watches it), ``driftloop_bridge_brake_resets_total`` counts
resets by a person.

``driftloop_bridge_redis_up`` is 1 when the bridge's last Redis call (a webhook's or the
retry worker's, which polls every ``RETRY_POLL_SECONDS``) succeeded, 0 when it failed; every
failed call is counted in ``driftloop_bridge_redis_errors_total{operation}`` (``webhook``,
``worker``). The ``RedisUnavailable`` alert watches the gauge.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftloop_service import new_registry

AIRFLOW_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BridgeMetrics:
    """All series of one bridge instance (tests build many apps side by side)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        r = self.registry
        self.decisions = Counter(
            "driftloop_bridge_decisions_total",
            "Webhook decisions, per alert (or per request when refused before parsing)",
            ["source", "decision"],
            registry=r,
        )
        self.triggers = Counter(
            "driftloop_bridge_triggers_total",
            "Attempts to create a DAG run in Airflow, by outcome",
            ["outcome"],
            registry=r,
        )
        self.pending = Gauge(
            "driftloop_bridge_pending_triggers",
            "Triggers persisted in Redis that Airflow has not accepted yet",
            registry=r,
        )
        self.dead_letters = Gauge(
            "driftloop_bridge_dead_letters",
            "Triggers given up on (max age passed or rejected by Airflow), kept for inspection",
            registry=r,
        )
        self.releases = Counter(
            "driftloop_bridge_released_total",
            "Dead-lettered triggers whose incident and cooldown keys were cleared so the same "
            "alert can trigger again, by why the trigger was given up on",
            ["reason"],
            registry=r,
        )
        for reason in ("max_age", "rejected"):  # both series exist from the start, at 0
            self.releases.labels(reason=reason)
        self.redis_up = Gauge(
            "driftloop_bridge_redis_up",
            "1 when the bridge's last Redis call succeeded, 0 when it failed",
            registry=r,
        )
        self.redis_errors = Counter(
            "driftloop_bridge_redis_errors_total",
            "Redis calls that failed (Redis down or unreachable), by who made them",
            ["operation"],
            registry=r,
        )
        for operation in ("webhook", "worker"):
            self.redis_errors.labels(operation=operation)
        self.brake_engaged = Gauge(
            "driftloop_bridge_brake_engaged",
            "1 while the circuit breaker holds retraining back (too many triggers per window)",
            registry=r,
        )
        self.brake_resets = Counter(
            "driftloop_bridge_brake_resets_total",
            "Times a person reset the circuit breaker (POST /brake/reset)",
            registry=r,
        )
        self.airflow_call_seconds = Histogram(
            "driftloop_bridge_airflow_call_seconds",
            "Latency of Airflow REST API calls (token and trigger), successful or not",
            buckets=AIRFLOW_CALL_BUCKETS,
            registry=r,
        )

    def decided(self, source: str, decision: str) -> None:
        self.decisions.labels(source=source, decision=decision).inc()

    def triggered(self, outcome: str) -> None:
        self.triggers.labels(outcome=outcome).inc()

    def released(self, reason: str) -> None:
        self.releases.labels(reason=reason).inc()

    def redis_ok(self) -> None:
        self.redis_up.set(1)

    def redis_failed(self, operation: str) -> None:
        self.redis_up.set(0)
        self.redis_errors.labels(operation=operation).inc()
