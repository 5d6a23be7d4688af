"""Retrain the house-price model on recent labelled data and promote it if it beats the champion.

Triggered by the alert bridge (or by hand) through the REST API; the trigger's ``conf`` carries
the alert (name, labels, values, fingerprint) and may override any of the params below.

``wait_for_regime`` → ``collect`` → ``train`` → ``evaluate`` → (``approval``) → ``decide`` → ``announce``

- **wait_for_regime** (a sensor in poke mode): with the alert's ``starts_at`` in the conf,
  waits until ``min_regime_rows`` labelled rows predicted since the incident began are in the
  log (re-checking every ``REGIME_POKE_SECONDS`` until ``regime_wait_seconds`` after the
  trigger); then the run ends *skipped* with the reason rather than profile a mix of regimes.
  Without ``starts_at`` (a manual run) it passes at once.
- **collect** reads the labelled-data log over the lookback window (ending where the sensor
  looked) and combines it with the base data (policy: docs/retraining.md); the profile and the
  holdout come from the incident's regime. Below ``min_labelled_rows`` the run ends here as
  *skipped* (the run succeeds, nothing is trained or promoted). ``label_bias`` (fault
  injection for the rollback e2e and demos, never production) multiplies every collected label.
- **train** fits the challenger and logs it to MLflow with its reference profile, data lineage
  and this trigger's conf as tags.
- **evaluate** scores challenger and champion on the same holdout of the newest labelled rows.
- **approval** only with ``approval=manual`` (skipped otherwise, and when the gate rejects the
  challenger anyway): waits for a person to approve the promotion (Airflow's human-in-the-loop:
  UI "Required actions", or the REST API); no answer within ``approval_timeout_minutes`` is a
  rejection.
- **decide** registers the challenger and moves alias ``champion`` only if its RMSE beats the
  champion's by ``min_improvement`` (and, with ``approval=manual``, a person approved it);
  otherwise the version is tagged ``rejected`` with the figures.
- **announce** publishes ``ModelPromoted`` on ``model-events`` so replicas and the drift
  consumer switch to the new champion.

Every task is one call into ``driftloop_training.retrain`` (testable without Airflow); tasks
hand each other small JSON results and file paths under the training work dir, never data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import (
    ExceptionRetryPolicy,
    Param,
    PokeReturnValue,
    RetryAction,
    RetryRule,
    TriggerRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

from driftloop_contracts import DAG_ID
from driftloop_contracts.approval import (
    APPROVAL_MODES,
    APPROVAL_OPTIONS,
    APPROVAL_TASK_ID,
    DEFAULT_APPROVAL_TIMEOUT_MINUTES,
    REJECT,
)

if TYPE_CHECKING:  # imported inside the tasks at run time: DAG parsing stays light
    from airflow.sdk import Context

    from driftloop_training.retrain import RetrainParams
    from driftloop_training.settings import TrainingSettings

# Bad input will be just as bad on the next try: fail at once; so will a model artifact the
# loader refuses (untrusted type, digest mismatch, pre-skops pickle: docs/security.md). Anything
# else (MLflow, the broker or the disk being briefly unavailable) is retried with backoff.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="driftloop_training.errors.DataError",
            action=RetryAction.FAIL,
            reason="the input data is invalid; retrying cannot help",
        ),
        RetryRule(
            exception="driftloop_contracts.model_artifact.ModelRejected",
            action=RetryAction.FAIL,
            reason="a model artifact was refused by the safety checks; retrying cannot help",
        ),
    ],
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "driftloop",
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=20),
    "retry_policy": RETRY_POLICY,
}

PARAMS: dict[str, Param] = {
    "lookback_hours": Param(
        24,
        type="integer",
        minimum=1,
        maximum=24 * 90,
        description="Read labelled rows from this many hours before the window end.",
    ),
    "min_labelled_rows": Param(
        500,
        type="integer",
        minimum=10,
        description="Fewer labelled rows than this: skip the run (nothing is promoted).",
    ),
    "max_labelled_rows": Param(
        10_000,
        type="integer",
        minimum=100,
        description="Use only the newest this-many labelled rows of the window (bounds run time).",
    ),
    "min_improvement": Param(
        0.02,
        type="number",
        minimum=0,
        maximum=0.99,
        description="Relative RMSE reduction the challenger needs over the champion.",
    ),
    "holdout_share": Param(
        0.3,
        type="number",
        exclusiveMinimum=0,
        exclusiveMaximum=1,
        description="Share of the newest labelled rows kept out of training to score both models.",
    ),
    "base_rows_per_recent": Param(
        2.0,
        type="number",
        minimum=0,
        maximum=100,
        description="Base-data rows sampled per recent training row.",
    ),
    "recent_weight_share": Param(
        0.75,
        type="number",
        exclusiveMinimum=0,
        exclusiveMaximum=1,
        description="Share of the total sample weight carried by the recent rows.",
    ),
    "window_end": Param(
        None,
        type=["null", "string"],
        format="date-time",
        # jsonschema checks "format" only with optional packages; the pattern always applies
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$",
        description="End of the lookback window (ISO 8601, with offset); empty: the run's time.",
    ),
    "approval": Param(
        "auto",
        type="string",
        enum=list(APPROVAL_MODES),
        description="manual: a challenger that passes the gate waits for a person to approve it.",
    ),
    "approval_timeout_minutes": Param(
        DEFAULT_APPROVAL_TIMEOUT_MINUTES,
        type="number",
        exclusiveMinimum=0,
        maximum=7 * 24 * 60,
        description="approval=manual: no answer within this many minutes rejects the challenger.",
    ),
}


#: The ``starts_at`` and ``window_end`` params: ISO 8601 with an offset. jsonschema checks
#: "format" only with optional packages; the pattern always applies.
_ISO_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"
#: Seconds between two looks of ``wait_for_regime``. It pokes in its own process (poke mode):
#: a look is one read of the labelled log's new part files, and the run cannot go on without
#: its answer (the DAG is a chain, ``max_active_runs=1``), so the worker slot it holds has
#: nothing else to do. Reschedule mode cost a scheduler round trip and a task start per look,
#: and raced the executor's report of the previous look (docs/performance.md).
REGIME_POKE_SECONDS = 1.0
#: The most ``regime_wait_seconds`` may ask for; the sensor's own timeout, as a backstop.
REGIME_WAIT_MAX_SECONDS = 3600

PARAMS.update(
    {
        "starts_at": Param(
            None,
            type=["null", "string"],
            format="date-time",
            pattern=_ISO_WITH_OFFSET,
            description="The alert's startsAt (the bridge sets it): the incident's regime is "
            "the rows predicted since; empty: no incident (profile from the newest rows).",
        ),
        "min_regime_rows": Param(
            300,
            type="integer",
            minimum=10,
            description="Labelled rows predicted since starts_at needed before collecting "
            "(the challenger's drift baseline and holdout are drawn from them).",
        ),
        "regime_wait_seconds": Param(
            600,
            type="integer",
            minimum=0,
            maximum=REGIME_WAIT_MAX_SECONDS,
            description="How long after the trigger to keep re-checking for min_regime_rows; "
            "then the run ends skipped.",
        ),
        "label_bias": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            description="FAULT INJECTION, never for production: collect multiplies every "
            "collected label (training and holdout) by this, so a biased challenger can pass "
            "the gate and the post-promotion watch must roll it back (rollback e2e, demos). "
            "1.0: no bias.",
        ),
    }
)


def _settings() -> TrainingSettings:
    from driftloop_training.settings import load_training_settings

    return load_training_settings()


def _retrain_params(context: Context) -> RetrainParams:
    from driftloop_training.retrain import RetrainParams

    return RetrainParams.model_validate(dict(context["params"]))


class PromotionApproval(HITLOperator):
    """Ask a person to approve the promotion (``approval=manual``); skip in ``auto`` mode.

    Airflow's human-in-the-loop operator with ``Approve``/``Reject`` and ``Reject`` as the
    answer on timeout. Subject, body and timeout come from the run (``evaluated`` is the
    evaluate task's result, resolved like a template field), so they are set in ``execute``.
    On Airflow 3.3 the task waits in state ``awaiting_input`` without a worker or triggerer;
    the scheduler applies the default when ``response_timeout`` passes. The result (the
    answer) goes to ``decide``, which records it on the version either way.
    """

    template_fields = (*HITLOperator.template_fields, "evaluated")

    def __init__(self, *, evaluated: Any, **kwargs: Any) -> None:
        super().__init__(
            subject="Promote the challenger?",  # replaced by the run's figures in execute
            options=list(APPROVAL_OPTIONS),
            defaults=[REJECT],
            multiple=False,
            response_timeout=timedelta(minutes=DEFAULT_APPROVAL_TIMEOUT_MINUTES),
            **kwargs,
        )
        self.evaluated = evaluated

    def execute(self, context: Context) -> Any:
        if context["params"]["approval"] != "manual":  # before any import: auto stays cheap
            raise AirflowSkipException("approval=auto: the gate decides alone")
        from driftloop_training import retrain

        params = _retrain_params(context)
        from driftloop_training.approval_request import approval_request

        dag_run = context["dag_run"]
        request = approval_request(
            retrain.EvaluateResult.model_validate(self.evaluated),
            params,
            dag_run_id=dag_run.run_id,
            trigger=dict(dag_run.conf or {}),
        )
        if request is None:
            raise AirflowSkipException("the gate rejects the challenger: nothing to approve")
        self.subject, self.body = request.subject, request.body
        self.response_timeout = timedelta(minutes=params.approval_timeout_minutes)
        print(f"waiting for approval ({params.approval_timeout_minutes:g} min): {request.subject}")
        return super().execute(context)


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["driftloop", "retraining"],
    doc_md=__doc__,
)
def retrain_house_price() -> None:
    @task.sensor(
        poke_interval=REGIME_POKE_SECONDS,
        timeout=REGIME_WAIT_MAX_SECONDS + 60,
        mode="poke",
        execution_timeout=timedelta(seconds=REGIME_WAIT_MAX_SECONDS + 120),
    )
    def wait_for_regime() -> PokeReturnValue:
        """Enough labelled rows of the incident's regime yet? (bounded by regime_wait_seconds)"""
        from datetime import UTC

        from driftloop_training.regime import check_regime

        context = get_current_context()
        params = _retrain_params(context)
        check = check_regime(
            _settings().labelled_log_dir,
            incident_start=params.starts_at,
            now=datetime.now(UTC),
            triggered_at=context["dag_run"].run_after,
            min_regime_rows=params.min_regime_rows,
            wait_seconds=params.regime_wait_seconds,
            pinned_end=params.window_end,
        )
        print(check.reason)
        if check.status == "give_up":
            raise AirflowSkipException(check.reason)
        return PokeReturnValue(check.done, check.model_dump(mode="json") if check.done else None)

    @task(execution_timeout=timedelta(minutes=10))
    def collect(regime: dict[str, Any]) -> dict[str, Any]:
        """Labelled rows over the window + base sample → train/holdout/profile files."""
        from driftloop_training import retrain

        context = get_current_context()
        dag_run = context["dag_run"]
        result = retrain.collect(
            _settings(),
            run_key=retrain.run_key_for(dag_run.run_id),
            # where the sensor looked: rows that arrived while it waited are read
            window_end=datetime.fromisoformat(regime["window_end"]),
            params=_retrain_params(context),
        )
        print(result.reason)
        return result.model_dump(mode="json")

    @task(execution_timeout=timedelta(minutes=30))
    def train(collected: dict[str, Any]) -> dict[str, Any]:
        """Fit and log the challenger (model, profile, lineage, trigger conf)."""
        if collected["status"] != "ready":  # before the heavy imports: a skip stays cheap
            raise AirflowSkipException(collected["reason"])
        from driftloop_training import retrain

        result = retrain.CollectResult.model_validate(collected)
        context = get_current_context()
        dag_run = context["dag_run"]
        trained = retrain.train(
            _settings(),
            result,
            params=_retrain_params(context),
            trigger_conf=dict(dag_run.conf or {}),
            dag_run_id=dag_run.run_id,
        )
        return trained.model_dump(mode="json")

    @task
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        """Challenger and champion on the same recent holdout (USD)."""
        from driftloop_training import retrain

        result = retrain.evaluate(_settings(), retrain.TrainResult.model_validate(trained))
        return result.model_dump(mode="json")

    # Runs after a skipped approval (auto mode), not after a skipped evaluate (nothing trained).
    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def decide(evaluated: dict[str, Any]) -> dict[str, Any]:
        """Register the challenger; promote it only past the margin (and approved, if manual)."""
        from driftloop_training import approval, retrain

        context = get_current_context()
        params = _retrain_params(context)
        answer = None
        if params.approval == "manual":  # nothing: not asked (the gate rejects)
            answered = context["ti"].xcom_pull(task_ids=APPROVAL_TASK_ID)
            if answered:
                answer = approval.answer_from_hitl(
                    answered, timeout_minutes=params.approval_timeout_minutes
                )
        decision = retrain.decide(
            _settings(),
            retrain.EvaluateResult.model_validate(evaluated),
            params=params,
            approval=answer,
        )
        print(f"{decision.decision} version {decision.version}: {decision.reason}")
        return decision.model_dump(mode="json")

    @task
    def announce(decided: dict[str, Any]) -> dict[str, Any]:
        """Publish ModelPromoted for a new champion."""
        if decided["decision"] != "promoted":
            raise AirflowSkipException(f"nothing to announce: {decided['reason']}")
        from driftloop_training import retrain

        decision = retrain.Decision.model_validate(decided)
        return retrain.announce(_settings(), decision).model_dump(mode="json")

    # Airflow's ``Task`` type says a task returns its function's value, but calling it in a
    # DAG returns an XComArg, which the next task's call accepts at run time ("there's no way
    # to express that right now", airflow.sdk.bases.decorator.Task).
    evaluated = evaluate(train(collect(wait_for_regime())))  # type: ignore[arg-type]
    decided = decide(evaluated)  # type: ignore[arg-type]
    PromotionApproval(task_id=APPROVAL_TASK_ID, evaluated=evaluated) >> decided
    announce(decided)  # type: ignore[arg-type]


retrain_house_price()
