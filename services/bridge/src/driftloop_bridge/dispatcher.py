"""From parsed alerts to decisions: route, skip resolved, dedupe/cooldown, trigger or queue.

Per alert, in order:

1. no rule matches                    -> ``ignored`` (with the reason)
2. the alert is resolved              -> ``resolved`` (recorded; resolved alerts never trigger)
3. the incident was already accepted  -> ``duplicate``
4. the DAG's cooldown window is open  -> ``cooldown``
5. the circuit breaker is engaged, or this trigger would exceed its budget -> ``braked``
   (no DAG run; see :mod:`brake`)
6. otherwise the trigger is persisted (atomically with 3-5), then tried once inline with a short
   timeout: another run of the DAG is still queued or running -> ``run_active`` (no run; the
   claim is released, see :mod:`retry_queue`); Airflow created it or already had it ->
   ``triggered``; Airflow unavailable (for the trigger or for the active-run check) ->
   ``queued`` (the retry worker takes over, and checks again before triggering); Airflow
   rejected it -> ``dead_letter``.

A ``dead_letter`` (here, or from the retry worker when the trigger outlived the retry age) has
released the incident's claim (see :mod:`retry_queue`); the audit trail then gets a second line,
``released``, saying which keys were cleared, so ``GET /decisions`` shows why the same alert
can trigger again. The webhook's answer stays one decision per alert.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import structlog

from .decisions import Decision, DecisionLog
from .dedupe import Deduper, dag_run_id_for
from .errors import StoreUnavailable
from .metrics import BridgeMetrics
from .payloads import Alert, Source
from .retry_queue import Attempt, PendingTrigger, Release, RetryQueue
from .rules import RuleSet
from .store import Clock

log = structlog.get_logger(__name__)


class _AlertFacts(TypedDict):
    """The :class:`Decision` fields every decision about one alert shares."""

    at: datetime
    source: Source
    alertname: str
    fingerprint: str
    status: str


class _RoutedFacts(_AlertFacts):
    """Plus the matched rule's, for an alert some rule routes."""

    rule: str
    dag_id: str
    dag_run_id: str


class Dispatcher:
    def __init__(
        self,
        *,
        rules: RuleSet,
        deduper: Deduper,
        queue: RetryQueue,
        decisions: DecisionLog,
        clock: Clock,
        inline_timeout_seconds: float,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self._metrics = metrics or BridgeMetrics()
        self._rules = rules
        self._deduper = deduper
        self._queue = queue
        self._decisions = decisions
        self._clock = clock
        self._inline_timeout = inline_timeout_seconds

    async def handle(self, source: Source, alerts: list[Alert]) -> list[Decision]:
        """Decide every alert of one webhook, record and count the decisions.

        Returns one decision per alert (the webhook's answer); the audit trail also gets a
        ``released`` line after each ``dead_letter`` that gave its claim back.
        """
        answers: list[Decision] = []
        trail: list[Decision] = []
        for alert in alerts:
            decision, released = await self._decide(source, alert)
            answers.append(decision)
            trail.append(decision)
            if released is not None:
                trail.append(released)
        await self._record(trail)
        return answers

    async def _record(self, decisions: list[Decision]) -> None:
        """Append to the audit trail, count and log; a Redis outage loses only the audit line."""
        try:
            await self._decisions.record(*decisions)
        except StoreUnavailable as exc:
            # The decisions themselves are durable (claims/queue); only the audit line is lost.
            log.warning("decisions_record_failed", error=str(exc))
        for d in decisions:
            self._metrics.decided(d.source, d.decision)
            log.info(
                "alert_decided",
                source=d.source,
                alertname=d.alertname,
                fingerprint=d.fingerprint,
                decision=d.decision,
                rule=d.rule,
                dag_run_id=d.dag_run_id,
                reason=d.reason,
                via=d.via,
            )

    async def _decide(self, source: Source, alert: Alert) -> tuple[Decision, Decision | None]:
        """The alert's decision, plus the ``released`` line when its trigger was given up."""
        base = _AlertFacts(
            at=self._decisions.now(),
            source=source,
            alertname=alert.name,
            fingerprint=alert.fingerprint,
            status=alert.status,
        )
        rule = self._rules.match(alert)
        if rule is None:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
            return Decision(
                **base, decision="ignored", reason=f"no routing rule matches {{{labels}}}"
            ), None
        run_id = dag_run_id_for(rule.name, alert)
        routed = _RoutedFacts(**base, rule=rule.name, dag_id=rule.dag_id, dag_run_id=run_id)
        if alert.status != "firing":
            return Decision(
                **routed, decision="resolved", reason="resolved alerts are recorded, not triggered"
            ), None
        now = self._clock()
        item = PendingTrigger(
            dag_id=rule.dag_id,
            dag_run_id=run_id,
            conf=rule.render_conf(alert, run_id),
            source=source,
            alertname=alert.name,
            fingerprint=alert.fingerprint,
            rule=rule.name,
            first_seen=now,
        )
        # Due only after the inline attempt's timeout: the worker does not race the webhook.
        claim = await self._deduper.claim(item, first_attempt_at=now + self._inline_timeout + 2)
        if claim.kind == "duplicate":
            return Decision(
                **routed, decision="duplicate", reason="this incident was already accepted"
            ), None
        if claim.kind == "cooldown":
            return Decision(
                **routed,
                decision="cooldown",
                reason=(
                    f"DAG {rule.dag_id} is cooling down for {max(0.0, (claim.until or now) - now):.0f}s"
                    f" more after incident {claim.holder}"
                ),
            ), None
        if claim.kind == "braked":
            self._metrics.brake_engaged.set(1)
            until = datetime.fromtimestamp(claim.until or now, tz=UTC)
            return Decision(
                **routed,
                decision="braked",
                reason=(
                    "circuit breaker engaged: too many retraining triggers per window; no DAG run"
                    f" until a person resets it (driftloop loop reset-brake) or {until:%Y-%m-%dT%H:%M:%SZ}"
                ),
            ), None
        try:
            attempt = await self._queue.attempt(item, call_timeout=self._inline_timeout)
        except StoreUnavailable as exc:
            # Claimed and persisted as pending; the worker will finish it.
            attempt = Attempt("retry", str(exc))
        released = None
        if attempt.release is not None:
            released = self._released(item, attempt.release, via="webhook")
        return self._after_attempt(routed, attempt), released

    @staticmethod
    def _after_attempt(routed: _RoutedFacts, attempt: Attempt) -> Decision:
        if attempt.outcome in ("created", "exists"):
            return Decision(
                **routed,
                decision="triggered",
                outcome=attempt.outcome,
                reason="DAG run created" if attempt.outcome == "created" else "DAG run existed",
            )
        if attempt.outcome == "run_active":
            return Decision(
                **routed,
                decision="run_active",
                outcome="stood_down",
                reason=_run_active_reason(routed["dag_id"], attempt.active_run_id),
                active_dag_run_id=attempt.active_run_id,
            )
        if attempt.outcome == "dead_letter":
            return Decision(
                **routed,
                decision="dead_letter",
                outcome="rejected",
                reason=attempt.detail,
            )
        return Decision(
            **routed,
            decision="queued",
            outcome="pending",
            reason=f"Airflow unavailable, retrying in the background: {attempt.detail}",
        )

    async def record_final(self, item: PendingTrigger, attempt: Attempt) -> None:
        """The retry worker's final outcome for a queued trigger, added to the audit trail."""
        if attempt.outcome == "run_active":
            await self._record(
                [
                    Decision(
                        **self._about(item, via="retry"),
                        decision="run_active",
                        reason=f"after {item.attempts} attempts: "
                        + _run_active_reason(item.dag_id, attempt.active_run_id),
                        outcome="stood_down",
                        active_dag_run_id=attempt.active_run_id,
                    )
                ]
            )
            return
        decision = Decision(
            **self._about(item, via="retry"),
            decision="triggered" if attempt.outcome in ("created", "exists") else "dead_letter",
            reason=f"after {item.attempts} attempts"
            + (
                f": {attempt.detail}" if attempt.detail and attempt.outcome == "dead_letter" else ""
            ),
            outcome=attempt.outcome,
        )
        trail = [decision]
        if attempt.release is not None:
            trail.append(self._released(item, attempt.release, via="retry"))
        await self._record(trail)

    def _released(
        self, item: PendingTrigger, release: Release, *, via: Literal["webhook", "retry"]
    ) -> Decision:
        """The audit line saying a given-up trigger's claim was released, and what that means."""
        why = "max age passed" if release.reason == "max_age" else "rejected by Airflow"
        cleared = (
            "cleared the " + " and ".join(f"{k} key" for k in release.keys)
            if release.keys
            else "no incident or cooldown key of this trigger was left to clear"
        )
        return Decision(
            **self._about(item, via=via),
            decision="released",
            reason=f"gave up on this trigger ({why}): {cleared}; "
            "the same alert triggers again if it is still firing",
            outcome=release.reason,
        )

    def _about(self, item: PendingTrigger, *, via: Literal["webhook", "retry"]) -> dict[str, Any]:
        """The fields every audit line about a queued trigger shares (which alert, which run)."""
        return {
            "at": self._decisions.now(),
            "source": item.source,
            "alertname": item.alertname,
            "fingerprint": item.fingerprint,
            "status": "firing",
            "rule": item.rule,
            "dag_id": item.dag_id,
            "dag_run_id": item.dag_run_id,
            "via": via,
        }


def _run_active_reason(dag_id: str, active_run_id: str | None) -> str:
    return (
        f"DAG {dag_id} run {active_run_id} is still queued or running: no second run while one "
        "is active (one retrain per incident); if the alert still fires after that run ends, "
        "its next notification is decided again"
    )
