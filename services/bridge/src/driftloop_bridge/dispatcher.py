"""From parsed alerts to decisions: route, skip resolved, dedupe/cooldown, trigger or queue.

Per alert, in order:

1. no rule matches                    -> ``ignored`` (with the reason)
2. the alert is resolved              -> ``resolved`` (recorded; resolved alerts never trigger)
3. the incident was already accepted  -> ``duplicate``
4. the DAG's cooldown window is open  -> ``cooldown``
5. otherwise the trigger is persisted (atomically with 3-4), then tried once inline with a short
   timeout: Airflow created it or already had it -> ``triggered``; Airflow unavailable ->
   ``queued`` (the retry worker takes over); Airflow rejected it -> ``dead_letter``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

import structlog

from .decisions import Decision, DecisionLog
from .dedupe import Deduper, dag_run_id_for
from .errors import StoreUnavailable
from .metrics import BridgeMetrics
from .payloads import Alert, Source
from .retry_queue import Attempt, PendingTrigger, RetryQueue
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
        """Decide every alert of one webhook, record and count the decisions."""
        decided = [await self._decide(source, alert) for alert in alerts]
        try:
            await self._decisions.record(*decided)
        except StoreUnavailable as exc:
            # The decisions themselves are durable (claims/queue); only the audit line is lost.
            log.warning("decisions_record_failed", error=str(exc))
        for d in decided:
            self._metrics.decided(source, d.decision)
            log.info(
                "alert_decided",
                source=source,
                alertname=d.alertname,
                fingerprint=d.fingerprint,
                decision=d.decision,
                rule=d.rule,
                dag_run_id=d.dag_run_id,
                reason=d.reason,
            )
        return decided

    async def _decide(self, source: Source, alert: Alert) -> Decision:
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
            )
        run_id = dag_run_id_for(rule.name, alert)
        routed = _RoutedFacts(**base, rule=rule.name, dag_id=rule.dag_id, dag_run_id=run_id)
        if alert.status != "firing":
            return Decision(
                **routed, decision="resolved", reason="resolved alerts are recorded, not triggered"
            )
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
            )
        if claim.kind == "cooldown":
            return Decision(
                **routed,
                decision="cooldown",
                reason=(
                    f"DAG {rule.dag_id} is cooling down for {max(0.0, (claim.until or now) - now):.0f}s"
                    f" more after incident {claim.holder}"
                ),
            )
        try:
            attempt = await self._queue.attempt(item, call_timeout=self._inline_timeout)
        except StoreUnavailable as exc:
            # Claimed and persisted as pending; the worker will finish it.
            attempt = Attempt("retry", str(exc))
        return self._after_attempt(routed, attempt)

    @staticmethod
    def _after_attempt(routed: _RoutedFacts, attempt: Attempt) -> Decision:
        if attempt.outcome in ("created", "exists"):
            return Decision(
                **routed,
                decision="triggered",
                outcome=attempt.outcome,
                reason="DAG run created" if attempt.outcome == "created" else "DAG run existed",
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
        decision = Decision(
            at=self._decisions.now(),
            source=item.source,
            alertname=item.alertname,
            fingerprint=item.fingerprint,
            status="firing",
            rule=item.rule,
            decision="triggered" if attempt.outcome in ("created", "exists") else "dead_letter",
            reason=f"after {item.attempts} attempts"
            + (
                f": {attempt.detail}" if attempt.detail and attempt.outcome == "dead_letter" else ""
            ),
            dag_id=item.dag_id,
            dag_run_id=item.dag_run_id,
            outcome=attempt.outcome,
            via="retry",
        )
        try:
            await self._decisions.record(decision)
        except StoreUnavailable as exc:
            log.warning("decisions_record_failed", error=str(exc))
        self._metrics.decided(item.source, decision.decision)
