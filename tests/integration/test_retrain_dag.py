"""Real runs of the retraining DAG in the local Airflow, triggered over the REST API v2.

- Concept drift (prices up 30% around Los Angeles) in the labelled log: the challenger beats
  the champion on recent data, becomes ``champion`` in the real MLflow registry with its
  profile, and a ``ModelPromoted`` event arrives on ``model-events``.
- A log drawn from the champion's own distribution: the champion stays, the challenger's
  version is tagged ``rejected`` with both scores.
- An empty window: the run succeeds as "skipped" and nothing is trained.

Each scenario writes its rows into a window of its own in the year 2001 (passed as the
``window_end`` param), so neither traffic from other tests nor the drift consumer's rows can
leak in, and removes them afterwards. The champion alias is reset to the bootstrap champion
before each scenario and restored afterwards (with a ModelPromoted, so the replicas follow).

Timings (trigger → success and per task) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import (
    DAG_ID,
    FEATURE_NAMES,
    MODEL_EVENTS_TOPIC,
    MODEL_NAME,
    TARGET_NAME,
    TARGET_SCALE_USD,
    ModelPromoted,
    decode_event,
    partition_dir,
)
from driftloop_contracts.approval import APPROVAL_MAP_INDEX, APPROVAL_TASK_ID, APPROVE, REJECT
from driftloop_training import registry
from driftloop_training.bootstrap import full_bootstrap_version
from driftloop_training.data import load_base_data, split_base, write_labelled_part
from driftloop_training.publisher import publish_model_promoted
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import predict_usd

pytestmark = pytest.mark.integration

N_ROWS = 3000
RUN_TIMEOUT_S = 600.0
DAG_TIMEOUT_S = 180.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def training(stack: Any) -> TrainingSettings:
    """Settings as the stack gives them to the DAG's tasks (same log directory)."""
    return stack.training_settings()


@dataclass
class Airflow:
    url: str
    token: str

    def api(self) -> Any:
        from airflow_client.client import ApiClient, Configuration

        return ApiClient(Configuration(host=self.url, access_token=self.token))


@pytest.fixture(scope="module")
def airflow(stack: Any) -> Airflow:
    response = httpx.post(
        f"{stack.airflow_url}/auth/token",
        json={"username": stack.airflow_username, "password": stack.airflow_password},
        timeout=30,
    )
    response.raise_for_status()
    af = Airflow(url=stack.airflow_url, token=response.json()["access_token"])
    _wait_for_dag(af)
    return af


def _set_champion(training: TrainingSettings, version: str, reason: str) -> None:
    """Move the alias and tell the replicas, as a promotion would."""
    uri = training.mlflow_tracking_uri
    current = registry.get_champion(uri)
    if current is not None and current.version == version:
        return
    registry.set_champion(uri, version)
    info = registry.get_version(uri, version)
    publish_model_promoted(
        training.kafka_bootstrap,
        ModelPromoted(model_name=MODEL_NAME, version=version, run_id=info.run_id, reason=reason),
    )


@pytest.fixture(scope="module")
def full_bootstrap(training: TrainingSettings, champion: str) -> str:
    """A version trained by a full bootstrap: the reference the scenarios' figures assume.

    Looked up by tags (the alias may have moved on, and other tests register small models
    with ``sample_rows``); on a fresh stack the ``champion`` fixture registered it.
    """
    return full_bootstrap_version(training)


@pytest.fixture
def baseline_champion(training: TrainingSettings, full_bootstrap: str) -> Iterator[str]:
    """The full bootstrap model serves during the scenario; afterwards whichever version served
    before the test serves again, so scenarios leave the shared stack as they found it."""
    before = registry.get_champion(training.mlflow_tracking_uri)
    _set_champion(training, full_bootstrap, "test setup: bootstrap champion")
    yield full_bootstrap
    restore = before.version if before is not None else full_bootstrap
    _set_champion(training, restore, "test teardown: restore the previous champion")


@pytest.fixture(scope="module")
def unseen_rows(training: TrainingSettings) -> pd.DataFrame:
    """Rows of the base holdout: neither the champion nor any challenger trained on them."""
    base = load_base_data(download_if_missing=False)
    _, holdout = split_base(base, holdout_share=training.base_holdout_share, seed=training.seed)
    return holdout.sample(n=N_ROWS, random_state=11).reset_index(drop=True)


@pytest.fixture
def labelled_log(training: TrainingSettings) -> Iterator[Callable[..., datetime]]:
    """Writes a scenario's rows into an isolated past hour; removes them afterwards."""
    written: list[Path] = []

    def write(
        rows: pd.DataFrame,
        *,
        window_end: datetime,
        champion_version: str,
        price_factor: np.ndarray | None = None,
    ) -> datetime:
        model = registry.load_model(training.mlflow_tracking_uri, champion_version)
        actual = rows[TARGET_NAME].to_numpy() * TARGET_SCALE_USD
        if price_factor is not None:
            actual = actual * price_factor
        n = len(rows)
        start = window_end - timedelta(minutes=55)
        labelled_at = [start + timedelta(minutes=50) * (i / n) for i in range(n)]
        frame = pd.DataFrame(
            {
                "request_id": [f"test-retrain-{uuid.uuid4()}" for _ in range(n)],
                "predicted_at": [t - timedelta(seconds=20) for t in labelled_at],
                "labelled_at": labelled_at,
                "model_name": MODEL_NAME,
                "model_version": champion_version,
                **{name: rows[name].to_numpy() for name in FEATURE_NAMES},
                "prediction": predict_usd(model, rows),
                "actual": actual,
            }
        )
        path = write_labelled_part(training.labelled_log_dir, frame, partition=0, first_offset=0)
        written.append(path.parent)
        return window_end

    yield write
    for directory in written:
        shutil.rmtree(directory, ignore_errors=True)
        if not any(directory.parent.iterdir()):
            directory.parent.rmdir()


# --------------------------------------------------------------------------- helpers


def _wait_for_dag(af: Airflow) -> None:
    from airflow_client.client import DAGApi
    from airflow_client.client.exceptions import NotFoundException

    deadline = time.monotonic() + DAG_TIMEOUT_S
    with af.api() as api:
        while True:
            try:
                dag = DAGApi(api).get_dag(DAG_ID)
                if dag.is_paused:
                    from airflow_client.client import DAGPatchBody

                    DAGApi(api).patch_dag(DAG_ID, DAGPatchBody(is_paused=False))
                return
            except NotFoundException:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"DAG {DAG_ID} not parsed by Airflow within {DAG_TIMEOUT_S}s"
                    ) from None
                time.sleep(1)


@dataclass
class RunOutcome:
    run_id: str
    state: str
    trigger_to_end_s: float
    tasks: dict[str, tuple[str, float | None]]  # task_id -> (state, duration seconds)
    tries: dict[str, int]

    def report(self) -> str:
        tasks = ", ".join(
            f"{t}={s}" + (f" {d:.1f}s" if d is not None else "") for t, (s, d) in self.tasks.items()
        )
        return f"{self.run_id}: {self.state} in {self.trigger_to_end_s:.1f}s ({tasks})"


@pytest.fixture(autouse=True)
def _no_active_run(retrain_runs: Any) -> None:
    """Each test's runs run alone (max_active_runs=1): a run the stack's bridge triggered for a
    live alert, waiting for rows of its regime, would hold them back for minutes."""
    retrain_runs.end_active("a DAG test starts with no active run")


def trigger_and_wait(
    af: Airflow,
    run_id: str,
    conf: dict[str, Any],
    *,
    champion: tuple[TrainingSettings, str] | None = None,
    while_running: Callable[[Any], None] | None = None,
) -> RunOutcome:
    """Trigger a run and wait for its end. With ``champion``, first make that version champion,
    so the run is judged against a known model (the DAG is idle: ``_no_active_run``).
    ``while_running(api)`` is called right after the trigger (a person answering, say)."""
    from airflow_client.client import DagRunApi, TaskInstanceApi, TriggerDAGRunPostBody

    with af.api() as api:
        runs = DagRunApi(api)
        if champion is not None:
            _set_champion(*champion, "test setup: bootstrap champion")
        started = time.monotonic()
        runs.trigger_dag_run(
            DAG_ID,
            TriggerDAGRunPostBody(
                dag_run_id=run_id, conf=conf, logical_date=None, note=f"test: {run_id}"
            ),
        )
        if while_running is not None:
            while_running(api)
        deadline = started + RUN_TIMEOUT_S
        while True:
            run = runs.get_dag_run(DAG_ID, run_id)
            state = str(getattr(run.state, "value", run.state))
            if state in ("success", "failed"):
                elapsed = time.monotonic() - started
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {state} after {RUN_TIMEOUT_S}s")
            time.sleep(1)
        instances = TaskInstanceApi(api).get_task_instances(DAG_ID, run_id).task_instances
    tasks = {
        ti.task_id: (str(getattr(ti.state, "value", ti.state)), ti.duration)
        for ti in sorted(
            instances, key=lambda ti: ti.start_date or datetime.max.replace(tzinfo=UTC)
        )
    }
    tries = {ti.task_id: ti.try_number for ti in instances}
    outcome = RunOutcome(
        run_id=run_id, state=state, trigger_to_end_s=elapsed, tasks=tasks, tries=tries
    )
    print(f"\n[retrain timing] {outcome.report()}")
    return outcome


def _run_version(training: TrainingSettings, dag_run_id: str) -> registry.VersionInfo:
    """The model version registered by the challenger run of one DAG run."""
    client = registry.client(training.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("driftloop")
    assert experiment is not None, "no MLflow experiment 'driftloop'"
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`driftloop.dag_run_id` = '{dag_run_id}'"
    )
    assert len(runs) == 1, f"expected one challenger run for {dag_run_id}, got {len(runs)}"
    versions = client.search_model_versions(
        f"name = '{MODEL_NAME}' and run_id = '{runs[0].info.run_id}'"
    )
    assert len(versions) == 1
    return registry.get_version(training.mlflow_tracking_uri, str(versions[0].version))


async def _promotions(bootstrap: str, version: str, timeout_s: float = 30.0) -> list[ModelPromoted]:
    """ModelPromoted events for ``version`` on model-events (read from the start: the topic is
    tiny, and Tansu's end offsets are not exact enough to start from "now")."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        MODEL_EVENTS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ModelPromoted] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not found:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = decode_event(MODEL_EVENTS_TOPIC, record.value)
                    if event.version == version:
                        found.append(event)
    finally:
        await consumer.stop()
    return found


def la_prices_up(rows: pd.DataFrame) -> np.ndarray:
    region = (rows["block_latitude"] < 34.5) & (rows["block_longitude"] > -119.0)
    return np.where(region, 1.3, 1.0)


def _conf(window_end: datetime, fingerprint: str) -> dict[str, Any]:
    """What the bridge sends: the alert, plus param overrides for an isolated window."""
    return {
        "alertname": "DriftShareHigh",
        "labels": {"severity": "warning", "model_name": MODEL_NAME},
        "values": {"drift_share": 0.62},
        "fingerprint": fingerprint,
        "lookback_hours": 1,
        "min_labelled_rows": 500,
        "window_end": window_end.isoformat(),
    }


# --------------------------------------------------------------------------- scenarios


def test_concept_drift_promotes_the_challenger(
    stack: Any,
    training: TrainingSettings,
    airflow: Airflow,
    baseline_champion: str,
    unseen_rows: pd.DataFrame,
    labelled_log: Callable[..., datetime],
) -> None:
    window_end = labelled_log(
        unseen_rows,
        window_end=datetime(2001, 1, 1, 12, tzinfo=UTC),
        champion_version=baseline_champion,
        price_factor=la_prices_up(unseen_rows),
    )
    run_id = f"test_drift_{uuid.uuid4().hex[:12]}"
    outcome = trigger_and_wait(
        airflow,
        run_id,
        _conf(window_end, f"fp-{run_id}"),
        champion=(training, baseline_champion),
    )
    assert outcome.state == "success", outcome.report()
    states = {task: state for task, (state, _) in outcome.tasks.items()}
    # approval=auto (the default): the approval task is skipped, the gate decides alone
    assert states == {**dict.fromkeys(states, "success"), APPROVAL_TASK_ID: "skipped"}, states

    uri = training.mlflow_tracking_uri
    version = _run_version(training, run_id)
    assert version.tags[registry.TAG_DECISION] == "promoted", version.tags
    assert version.tags["driftloop.champion_version"] == baseline_champion, version.tags
    champion = registry.get_champion(uri)
    assert champion is not None and champion.version == version.version != baseline_champion
    challenger_rmse = float(version.tags["driftloop.challenger_rmse_usd"])
    assert challenger_rmse < 0.95 * float(version.tags["driftloop.champion_rmse_usd"])

    run = registry.client(uri).get_run(version.run_id)
    assert run.data.tags["driftloop.trigger.alertname"] == "DriftShareHigh"
    assert run.data.tags["driftloop.trigger.fingerprint"] == f"fp-{run_id}"
    assert run.data.tags["driftloop.data.partitions"] == str(
        partition_dir(window_end - timedelta(minutes=30))
    )
    assert run.data.metrics["holdout_rmse_usd"] == pytest.approx(challenger_rmse, abs=0.01)
    profile = registry.load_profile(uri, version.version)
    # the profile describes the newest labelled traffic (not the down-sampled base data)
    from driftloop_training.retrain import PROFILE_ROWS

    assert profile.n_rows == min(PROFILE_ROWS, N_ROWS)
    assert set(profile.features) == set(FEATURE_NAMES)

    events = asyncio.run(_promotions(stack.kafka_bootstrap, version.version))
    assert events, f"no ModelPromoted for version {version.version} on {MODEL_EVENTS_TOPIC}"
    assert events[0].run_id == version.run_id and events[0].model_name == MODEL_NAME


def test_champion_distribution_rejects_the_challenger(
    training: TrainingSettings,
    airflow: Airflow,
    baseline_champion: str,
    unseen_rows: pd.DataFrame,
    labelled_log: Callable[..., datetime],
) -> None:
    window_end = labelled_log(
        unseen_rows,
        window_end=datetime(2001, 1, 2, 12, tzinfo=UTC),
        champion_version=baseline_champion,
    )
    run_id = f"test_same_{uuid.uuid4().hex[:12]}"
    outcome = trigger_and_wait(
        airflow,
        run_id,
        _conf(window_end, f"fp-{run_id}"),
        champion=(training, baseline_champion),
    )
    assert outcome.state == "success", outcome.report()
    assert outcome.tasks["decide"][0] == "success"
    assert outcome.tasks["announce"][0] == "skipped"

    version = _run_version(training, run_id)
    assert version.tags[registry.TAG_DECISION] == "rejected", version.tags
    assert float(version.tags["driftloop.challenger_rmse_usd"]) > 0
    assert float(version.tags["driftloop.champion_rmse_usd"]) > 0
    assert version.tags["driftloop.champion_version"] == baseline_champion
    champion = registry.get_champion(training.mlflow_tracking_uri)
    assert champion is not None and champion.version == baseline_champion


def test_empty_window_is_skipped_and_the_run_succeeds(
    airflow: Airflow, baseline_champion: str, training: TrainingSettings
) -> None:
    window_end = datetime(2001, 1, 3, 12, tzinfo=UTC)
    run_id = f"test_empty_{uuid.uuid4().hex[:12]}"
    outcome = trigger_and_wait(airflow, run_id, _conf(window_end, f"fp-{run_id}"))
    assert outcome.state == "success", outcome.report()
    assert outcome.tasks["collect"][0] == "success"
    assert {outcome.tasks[t][0] for t in ("train", "evaluate", "decide", "announce")} == {"skipped"}
    champion = registry.get_champion(training.mlflow_tracking_uri)
    assert champion is not None and champion.version == baseline_champion


def test_corrupt_log_fails_at_once_without_retries(
    airflow: Airflow, training: TrainingSettings
) -> None:
    """Bad input is not retried (the DAG's retry policy); the failure names the file."""
    window_end = datetime(2001, 1, 5, 12, tzinfo=UTC)
    directory = training.labelled_log_dir / str(partition_dir(window_end - timedelta(minutes=30)))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "part-p0-o0-9.parquet").write_bytes(b"not parquet")
    try:
        run_id = f"test_corrupt_{uuid.uuid4().hex[:12]}"
        outcome = trigger_and_wait(airflow, run_id, _conf(window_end, f"fp-{run_id}"))
    finally:
        shutil.rmtree(directory.parent, ignore_errors=True)
    assert outcome.state == "failed", outcome.report()
    assert outcome.tasks["collect"][0] == "failed"
    assert outcome.tries["collect"] == 1
    assert outcome.tasks["train"][0] == "upstream_failed"


def test_repeated_run_id_is_a_conflict(airflow: Airflow) -> None:
    """The bridge relies on this for idempotent triggers: a second trigger answers 409."""
    from airflow_client.client import DagRunApi, TriggerDAGRunPostBody
    from airflow_client.client.exceptions import ConflictException

    run_id = f"test_conflict_{uuid.uuid4().hex[:12]}"
    conf = _conf(datetime(2001, 1, 4, 12, tzinfo=UTC), "fp-conflict")
    first = trigger_and_wait(airflow, run_id, conf)  # an empty window: a quick skipped run
    assert first.state == "success"
    body = TriggerDAGRunPostBody(dag_run_id=run_id, conf=conf, logical_date=None)
    with airflow.api() as api, pytest.raises(ConflictException):
        DagRunApi(api).trigger_dag_run(DAG_ID, body)


def test_invalid_param_is_refused_at_trigger(airflow: Airflow) -> None:
    """Params are validated by the API server: a bad override never becomes a run."""
    from airflow_client.client import DagRunApi, TriggerDAGRunPostBody
    from airflow_client.client.exceptions import BadRequestException

    body = TriggerDAGRunPostBody(
        dag_run_id=f"test_invalid_{uuid.uuid4().hex[:12]}",
        conf={"lookback_hours": 0, "alertname": "DriftShareHigh"},
        logical_date=None,
    )
    with airflow.api() as api, pytest.raises(BadRequestException, match="lookback_hours"):
        DagRunApi(api).trigger_dag_run(DAG_ID, body)


def _task_states(af: Airflow, run_id: str) -> dict[str, str]:
    from airflow_client.client import TaskInstanceApi

    with af.api() as api:
        instances = TaskInstanceApi(api).get_task_instances(DAG_ID, run_id).task_instances
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in instances}


def _xcom(af: Airflow, run_id: str, task_id: str) -> Any:
    from airflow_client.client import XComApi

    with af.api() as api:
        entry = XComApi(api).get_xcom_entry(DAG_ID, task_id, run_id, "return_value")
    instance = entry.actual_instance  # XComResponseNative (deserialised) or ...String
    assert instance is not None, f"no XCom from {task_id} of {run_id}"
    value = instance.value
    return json.loads(value) if isinstance(value, str) else value


def test_dag_waits_for_rows_of_the_incidents_regime_then_collects(
    airflow: Airflow, training: TrainingSettings, unseen_rows: pd.DataFrame
) -> None:
    """With the alert's ``starts_at``, the run waits (the sensor looks every second) until
    ``min_regime_rows`` rows predicted since then are in the log, and ``collect`` reads the
    window up to where the sensor found them (not the trigger time, before they existed)."""
    from airflow_client.client import DagRunApi, TriggerDAGRunPostBody

    n = 200
    starts_at = datetime.now(UTC) - timedelta(seconds=5)
    run_id = f"test_regime_{uuid.uuid4().hex[:12]}"
    conf = {
        "alertname": "DriftFeatureHigh",
        "fingerprint": f"fp-{run_id}",
        "starts_at": starts_at.isoformat(),
        "lookback_hours": 1,
        "min_regime_rows": n,
        "regime_wait_seconds": 300,
        "min_labelled_rows": 1_000_000_000,  # stop after collect: nothing is trained
    }
    with airflow.api() as api:
        runs = DagRunApi(api)
        runs.trigger_dag_run(
            DAG_ID, TriggerDAGRunPostBody(dag_run_id=run_id, conf=conf, logical_date=None)
        )
    deadline = time.monotonic() + 180
    while _task_states(airflow, run_id).get("wait_for_regime") != "running":
        assert time.monotonic() < deadline, _task_states(airflow, run_id)
        time.sleep(0.5)

    at = datetime.now(UTC)
    rows = unseen_rows.head(n)
    frame = pd.DataFrame(
        {
            "request_id": [f"test-regime-{uuid.uuid4()}" for _ in range(n)],
            "predicted_at": [at - timedelta(seconds=2)] * n,
            "labelled_at": [at - timedelta(seconds=1)] * n,
            "model_name": MODEL_NAME,
            "model_version": "1",
            **{name: rows[name].to_numpy() for name in FEATURE_NAMES},
            "prediction": rows[TARGET_NAME].to_numpy() * TARGET_SCALE_USD,
            "actual": rows[TARGET_NAME].to_numpy() * TARGET_SCALE_USD,
        }
    )
    path = write_labelled_part(
        training.labelled_log_dir, frame, partition=0, first_offset=900_000_000
    )
    try:
        with airflow.api() as api:
            runs = DagRunApi(api)
            while True:
                run = runs.get_dag_run(DAG_ID, run_id)
                state = str(getattr(run.state, "value", run.state))
                if state in ("success", "failed"):
                    break
                assert time.monotonic() < deadline + 300, f"run still {state}"
                time.sleep(1)
        states = _task_states(airflow, run_id)
        assert state == "success", states
        assert states["wait_for_regime"] == "success" and states["collect"] == "success", states
        regime = _xcom(airflow, run_id, "wait_for_regime")
        assert regime["status"] == "done" and regime["regime_rows"] >= n, regime
        collected = _xcom(airflow, run_id, "collect")
        assert collected["labelled_rows"] >= n, collected
        assert datetime.fromisoformat(collected["window_end"]) > at
        assert collected["status"] == "skipped"  # min_labelled_rows, as asked
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- approval=manual


def _await_approval_request(api: Any, run_id: str) -> Any:
    """Poll until the approval task waits for a person; the request Airflow shows them."""
    from airflow_client.client import TaskInstanceApi

    tis = TaskInstanceApi(api)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = None
    while True:
        ti = tis.get_task_instance(DAG_ID, run_id, APPROVAL_TASK_ID)
        state = str(getattr(ti.state, "value", ti.state))
        if state == "awaiting_input":
            return tis.get_hitl_detail(DAG_ID, run_id, APPROVAL_TASK_ID, APPROVAL_MAP_INDEX)
        if state in ("success", "failed", "skipped", "upstream_failed"):
            raise AssertionError(f"approval ended {state} without waiting for a person")
        if time.monotonic() > deadline:
            raise AssertionError(f"approval still {state} after {RUN_TIMEOUT_S}s")
        time.sleep(1)


def _manual_scenario(
    training: TrainingSettings,
    airflow: Airflow,
    baseline_champion: str,
    unseen_rows: pd.DataFrame,
    labelled_log: Callable[..., datetime],
    *,
    day: int,
    answer: Callable[[Any, str], None],
    timeout_minutes: float = 30,
) -> tuple[RunOutcome, Any, registry.VersionInfo]:
    """A concept-drift run (the gate promotes) with approval=manual, answered by ``answer``."""
    window_end = labelled_log(
        unseen_rows,
        window_end=datetime(2001, 1, day, 12, tzinfo=UTC),
        champion_version=baseline_champion,
        price_factor=la_prices_up(unseen_rows),
    )
    run_id = f"test_approval_{uuid.uuid4().hex[:12]}"
    conf = {
        **_conf(window_end, f"fp-{run_id}"),
        "approval": "manual",
        "approval_timeout_minutes": timeout_minutes,
    }
    seen: list[Any] = []

    def person(api: Any) -> None:
        seen.append(_await_approval_request(api, run_id))
        answer(api, run_id)

    outcome = trigger_and_wait(
        airflow, run_id, conf, champion=(training, baseline_champion), while_running=person
    )
    assert outcome.state == "success", outcome.report()
    assert outcome.tasks[APPROVAL_TASK_ID][0] == "success", outcome.report()
    assert outcome.tasks["decide"][0] == "success", outcome.report()
    version = _run_version(training, run_id)
    (request,) = seen
    # the person saw both models' figures on the same holdout, as evaluate logged them
    metrics = registry.client(training.mlflow_tracking_uri).get_run(version.run_id).data.metrics
    for metric in ("rmse_usd", "mae_usd"):
        for name in (f"holdout_{metric}", f"champion_holdout_{metric}"):
            assert f" {metrics[name]:,.0f} |" in request.body, (name, request.body)
    assert f"champion v{baseline_champion}" in request.body
    assert version.run_id in request.body and run_id in request.body
    assert request.options == [APPROVE, REJECT] and request.defaults == [REJECT]
    return outcome, request, version


def test_manual_approval_approved_promotes(
    stack: Any,
    training: TrainingSettings,
    airflow: Airflow,
    baseline_champion: str,
    unseen_rows: pd.DataFrame,
    labelled_log: Callable[..., datetime],
    driftloop: Callable[..., Any],
) -> None:
    """A person approves with the CLI (`driftloop loop approve`): the challenger is promoted."""

    def approve(_api: Any, run_id: str) -> None:
        done = driftloop("loop", "approve", run_id)
        assert done.returncode == 0, done.stderr
        assert "approved" in done.stdout

    outcome, _, version = _manual_scenario(
        training, airflow, baseline_champion, unseen_rows, labelled_log, day=6, answer=approve
    )
    assert outcome.tasks["announce"][0] == "success", outcome.report()
    assert version.tags[registry.TAG_DECISION] == "promoted", version.tags
    assert version.tags["driftloop.approval"] == "approved"
    assert version.tags["driftloop.approval_by"] == stack.airflow_username
    champion = registry.get_champion(training.mlflow_tracking_uri)
    assert champion is not None and champion.version == version.version != baseline_champion
    events = asyncio.run(_promotions(stack.kafka_bootstrap, version.version))
    assert events and events[0].run_id == version.run_id
    # a second answer is refused: the request was answered once
    again = driftloop("loop", "reject", outcome.run_id)
    assert again.returncode == 2 and "already answered" in again.stderr


def test_manual_approval_rejected_keeps_the_champion(
    training: TrainingSettings,
    airflow: Airflow,
    baseline_champion: str,
    unseen_rows: pd.DataFrame,
    labelled_log: Callable[..., datetime],
) -> None:
    """A person rejects over the REST API (PATCH …/hitlDetails): nothing is promoted."""
    from airflow_client.client import TaskInstanceApi, UpdateHITLDetailPayload

    def reject(api: Any, run_id: str) -> None:
        """Answer, and answer again whenever the request is back unanswered, until the task
        has ended: Airflow 3.3.2 may retry a task that has only just started waiting, and the
        new try asks anew, possibly after the first answer was seen (docs/retraining.md,
        "Approval"); a person would see it in the UI and answer again."""
        tis = TaskInstanceApi(api)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        answers = 0
        while True:
            ti = tis.get_task_instance(DAG_ID, run_id, APPROVAL_TASK_ID)
            state = str(getattr(ti.state, "value", ti.state))
            if state in ("success", "failed", "skipped", "upstream_failed"):
                assert answers >= 1, f"approval ended {state} before anyone answered"
                return
            if state == "awaiting_input":
                detail = tis.get_hitl_detail(DAG_ID, run_id, APPROVAL_TASK_ID, APPROVAL_MAP_INDEX)
                if not detail.response_received:
                    tis.update_hitl_detail(
                        DAG_ID,
                        run_id,
                        APPROVAL_TASK_ID,
                        APPROVAL_MAP_INDEX,
                        UpdateHITLDetailPayload(chosen_options=[REJECT]),
                    )
                    answers += 1
            assert time.monotonic() < deadline, f"approval still {state} ({answers} answers)"
            time.sleep(0.5)

    outcome, _, version = _manual_scenario(
        training, airflow, baseline_champion, unseen_rows, labelled_log, day=7, answer=reject
    )
    assert outcome.tasks["announce"][0] == "skipped", outcome.report()
    assert version.tags[registry.TAG_DECISION] == "rejected", version.tags
    assert version.tags["driftloop.approval"] == "rejected"
    reason = version.tags["driftloop.decision_reason"]
    assert reason.startswith("rejected by ") and "the gate alone would promote" in reason
    champion = registry.get_champion(training.mlflow_tracking_uri)
    assert champion is not None and champion.version == baseline_champion


def test_manual_approval_unanswered_times_out_as_rejected(
    training: TrainingSettings,
    airflow: Airflow,
    baseline_champion: str,
    unseen_rows: pd.DataFrame,
    labelled_log: Callable[..., datetime],
) -> None:
    """Nobody answers within approval_timeout_minutes: Airflow answers Reject, no promotion."""
    from airflow_client.client import TaskInstanceApi

    timeout_minutes = 0.25

    def nobody(_api: Any, _run_id: str) -> None:
        """The request was seen waiting (by _manual_scenario); nobody answers it."""

    outcome, _, version = _manual_scenario(
        training,
        airflow,
        baseline_champion,
        unseen_rows,
        labelled_log,
        day=8,
        answer=nobody,
        timeout_minutes=timeout_minutes,
    )
    with airflow.api() as api:
        detail = TaskInstanceApi(api).get_hitl_detail(
            DAG_ID, outcome.run_id, APPROVAL_TASK_ID, APPROVAL_MAP_INDEX
        )
    assert detail.chosen_options == [REJECT] and detail.responded_by_user is None
    assert detail.responded_at is not None
    print(
        f"\n[approval timeout] {timeout_minutes * 60:.0f}s timeout answered after "
        f"{(detail.responded_at - detail.created_at).total_seconds():.1f}s"
    )
    assert (detail.responded_at - detail.created_at).total_seconds() >= timeout_minutes * 60
    assert outcome.tasks["announce"][0] == "skipped", outcome.report()
    assert version.tags[registry.TAG_DECISION] == "rejected", version.tags
    assert version.tags["driftloop.approval"] == "timed_out"
    assert version.tags["driftloop.approval_by"] == ""
    assert version.tags["driftloop.decision_reason"].startswith(
        "approval timed out: nobody answered within 0.25 min"
    )
    champion = registry.get_champion(training.mlflow_tracking_uri)
    assert champion is not None and champion.version == baseline_champion
