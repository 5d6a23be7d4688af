"""The retraining DAG loads cleanly, has the designed graph, and validates its params.

Runs in the Airflow venv (``.venv-airflow/bin/python -m pytest airflow/tests``); from the
workspace venv, where Airflow is not installed, the whole module is skipped.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow.sdk", reason="needs the Airflow environment (.venv-airflow)")

from airflow.dag_processing.dagbag import DagBag
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import RetryAction, TriggerRule

from driftloop_contracts import DAG_ID
from driftloop_contracts.approval import APPROVAL_TASK_ID, APPROVE, REJECT
from driftloop_contracts.model_artifact import DigestMismatch, UntrustedArtifact
from driftloop_training.errors import DataError, RegistryError
from driftloop_training.retrain import RetrainParams

pytestmark = pytest.mark.airflow

DAGS = Path(__file__).resolve().parents[1] / "dags"
TASKS = ["wait_for_regime", "collect", "train", "evaluate", "approval", "decide", "announce"]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def dag(dagbag: DagBag) -> Any:
    return dagbag.dags[DAG_ID]


def test_dag_folder_imports_without_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {DAG_ID}


def test_dag_file_runs_standalone() -> None:
    """Airflow's loader test: executing the file must succeed and do no work at import."""
    subprocess.run([sys.executable, str(DAGS / "retrain.py")], check=True, timeout=120)


def test_parsing_does_not_import_heavy_libraries() -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('sklearn', 'mlflow', 'pandas', 'aiokafka') if m in sys.modules]; "
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DAGS / "retrain.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"imported at parse time: {done.stdout.strip()}"


def test_task_graph_is_a_chain_with_approval_before_decide(dag: Any) -> None:
    assert [t.task_id for t in dag.topological_sort()] == TASKS
    for upstream, downstream in itertools.pairwise(TASKS):
        if downstream != "decide":
            assert dag.get_task(downstream).upstream_task_ids == {upstream}
    # decide reads evaluate's result and runs after approval, also when approval was skipped
    # (auto mode), but not when evaluate was (nothing trained)
    decide = dag.get_task("decide")
    assert decide.upstream_task_ids == {"evaluate", APPROVAL_TASK_ID}
    assert decide.trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


def test_dag_settings(dag: Any) -> None:
    assert dag.schedule is None or getattr(dag.timetable, "summary", None) == "None"
    assert dag.max_active_runs == 1
    assert not dag.catchup
    for task in dag.tasks:
        assert task.retries >= 1
        assert task.execution_timeout is not None
        assert task.retry_policy is not None


def test_retry_policy_fails_fast_on_bad_data_and_retries_the_rest(dag: Any) -> None:
    policy = dag.get_task("train").retry_policy
    assert policy.evaluate(DataError("bad log"), 1, 4).action is RetryAction.FAIL
    refused = UntrustedArtifact(["evil.Payload"], "version 9")
    assert policy.evaluate(refused, 1, 4).action is RetryAction.FAIL
    assert policy.evaluate(DigestMismatch("v", "a", "b"), 1, 4).action is RetryAction.FAIL
    assert policy.evaluate(RegistryError("MLflow down"), 1, 4).action is RetryAction.DEFAULT
    assert policy.evaluate(ConnectionError("refused"), 1, 4).action is RetryAction.DEFAULT


def test_param_defaults_match_the_training_package(dag: Any) -> None:
    """The DAG's params and RetrainParams are two spellings of one thing: keep them equal."""
    defaults = dag.params.validate()
    assert set(defaults) == set(RetrainParams.model_fields)
    assert RetrainParams.model_validate(defaults) == RetrainParams()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lookback_hours", 0),
        ("lookback_hours", "24"),
        ("min_labelled_rows", 5),
        ("min_improvement", -0.1),
        ("holdout_share", 1.0),
        ("holdout_share", 0),
        ("recent_weight_share", 1),
        ("window_end", "yesterday"),
        ("window_end", "2026-11-23T12:00:00"),
        ("starts_at", "2026-11-23T12:00:00"),
        ("min_regime_rows", 5),
        ("regime_wait_seconds", -1),
        ("regime_wait_seconds", 3601),
        ("approval", "maybe"),
        ("approval", None),
        ("approval_timeout_minutes", 0),
        ("approval_timeout_minutes", -5),
        ("approval_timeout_minutes", 7 * 24 * 60 + 1),
        ("label_bias", 0),
        ("label_bias", -0.6),
        ("label_bias", "0.6"),
        ("label_bias", None),
    ],
)
def test_invalid_params_are_refused(dag: Any, key: str, value: Any) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dict(dag.params.items()))
    with pytest.raises(ParamValidationError, match=key):
        params.update({key: value})
        params.validate()


def test_trigger_conf_with_alert_fields_is_accepted(dag: Any) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dict(dag.params.items()))
    params.update(
        {
            "alertname": "DriftShareHigh",
            "labels": {"model_version": "3"},
            "fingerprint": "abc123",
            "lookback_hours": 6,
            "window_end": "2026-11-23T12:00:00+00:00",
        }
    )
    resolved = params.validate()
    parsed = RetrainParams.model_validate(resolved)
    assert parsed.lookback_hours == 6
    assert parsed.window_end is not None and parsed.window_end.utcoffset() is not None


def test_label_bias_reaches_collect_unchanged(dag: Any) -> None:
    """The fault-injection param: 1.0 by default, and an override arrives as given."""
    from airflow.sdk.definitions.param import ParamsDict

    assert dag.params.validate()["label_bias"] == 1.0
    params = ParamsDict(dict(dag.params.items()))
    params.update({"label_bias": 0.6})
    assert RetrainParams.model_validate(params.validate()).label_bias == 0.6


def test_wait_for_regime_is_a_bounded_poking_sensor(dag: Any) -> None:
    """It looks every second in one process (no scheduler round trip per look), and neither its
    own timeout nor its execution timeout ends it before the longest wait a param may ask for
    (the param's bound ends it first, as *skipped*, with the reason)."""
    sensor = dag.get_task("wait_for_regime")
    longest = dag.params.get_param("regime_wait_seconds").schema["maximum"]
    assert sensor.mode == "poke"
    assert sensor.poke_interval <= 1
    assert sensor.timeout > longest
    assert sensor.execution_timeout.total_seconds() > longest


def test_the_bridges_starts_at_is_accepted(dag: Any) -> None:
    """The bridge renders ``starts_at`` with ``datetime.isoformat()`` (microseconds, offset)."""
    from datetime import UTC, datetime

    from airflow.sdk.definitions.param import ParamsDict

    starts = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)
    params = ParamsDict(dict(dag.params.items()))
    params.update({"starts_at": starts.isoformat()})
    parsed = RetrainParams.model_validate(params.validate())
    assert parsed.starts_at == starts


# --------------------------------------------------------------------------- approval


def _evaluated(challenger_rmse: float, champion_rmse: float | None) -> dict[str, Any]:
    def scores(rmse: float) -> dict[str, float]:
        return {"rmse_usd": rmse, "mae_usd": rmse * 0.7, "r2": 0.8, "n": 900}

    return {
        "run_id": "challenger-run",
        "model_uri": "models:/m-1",
        "run_key": "k",
        "holdout_rows": 900,
        "challenger": scores(challenger_rmse),
        "champion": None if champion_rmse is None else scores(champion_rmse),
        "champion_version": None if champion_rmse is None else "3",
        "champion_run_id": None if champion_rmse is None else "champion-run",
    }


def _context(dag: Any, **conf: Any) -> dict[str, Any]:
    from types import SimpleNamespace

    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dict(dag.params.items()))
    params.update(conf)
    run = SimpleNamespace(run_id="manual__approval-test", conf=conf)
    return {"params": params.validate(), "dag_run": run}


def test_approval_task_is_airflows_human_in_the_loop(dag: Any) -> None:
    task = dag.get_task(APPROVAL_TASK_ID)
    assert isinstance(task, HITLOperator)
    assert task.options == [APPROVE, REJECT]
    assert task.defaults == [REJECT]  # what the scheduler answers at the timeout
    assert task.multiple is False


def _approval_task(dag: Any, evaluated: dict[str, Any]) -> Any:
    """A copy of the DAG's approval task with evaluate's result resolved (as at run time)."""
    import copy

    task = copy.copy(dag.get_task(APPROVAL_TASK_ID))
    task.evaluated = evaluated
    return task


def test_approval_is_skipped_in_auto_mode(dag: Any) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    task = _approval_task(dag, _evaluated(40_000, 50_000))
    with pytest.raises(AirflowSkipException, match="approval=auto"):
        task.execute(_context(dag))


def test_approval_is_skipped_when_the_gate_rejects(dag: Any) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    task = _approval_task(dag, _evaluated(49_500, 50_000))  # 1% better, 2% required
    with pytest.raises(AirflowSkipException, match="gate rejects"):
        task.execute(_context(dag, approval="manual"))


def test_manual_approval_asks_with_both_models_figures_and_waits(
    dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request Airflow stores shows both models; the task parks awaiting input with the
    run's timeout (no triggerer involved on Airflow 3.3)."""
    from datetime import timedelta

    from airflow.providers.standard.operators import hitl
    from airflow.sdk.exceptions import TaskAwaitingInput

    stored: dict[str, Any] = {}
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kw: stored.update(kw))
    task = _approval_task(dag, _evaluated(40_000, 50_000))
    context = _context(dag, approval="manual", approval_timeout_minutes=0.5)
    context["task_instance"] = type("TI", (), {"id": "ti-1"})()
    with pytest.raises(TaskAwaitingInput) as waiting:
        task.execute(context)
    assert waiting.value.timeout == timedelta(seconds=30)
    assert waiting.value.method_name == "execute_complete"
    assert stored["options"] == [APPROVE, REJECT] and stored["defaults"] == [REJECT]
    assert "40,000 vs 50,000 USD" in stored["subject"]
    body = stored["body"]
    for figure in ("40,000", "50,000", "28,000", "35,000", "20.0%", "challenger-run", "v3"):
        assert figure in body, (figure, body)
    assert "manual__approval-test" in body
