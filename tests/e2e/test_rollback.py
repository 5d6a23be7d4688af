"""The rollback path, end to end on the real local stack: a promoted challenger that live
feedback shows to be worse is rolled back on its own, with no failed request.

Steady, unbiased traffic with feedback goes through nginx (locust, as ``driftloop demo``
drives it) the whole time. The retraining DAG is triggered over the Airflow REST API with
``label_bias=0.6`` (fault injection, docs/retraining.md): its challenger learns prices 40 % too
low, beats the champion on the equally biased holdout and is promoted, which starts the
post-promotion watch. The live labels are not biased, so on the same labelled requests the new
champion's online error is far worse than its shadow's (the previous champion) and the drift
consumer rolls it back. Each stage is linked to the one before:

1. the run we triggered succeeded and promoted version N+1, tagged with that ``dag_run_id``,
   and its MLflow run records the bias;
2. the watch started: alias ``shadow`` on the previous champion, N+1 tagged
   ``driftloop.watch_until``, every replica serving N+1 with the previous champion as shadow;
3. the drift consumer decided ``rolled_back`` for exactly that pair, with its figures on both
   versions (``driftloop.rollback.*``), N+1's online RMSE over the margin above the shadow's;
4. alias ``champion`` is back on the previous version, ``shadow`` removed, and a rollback
   ``ModelPromoted`` for the previous version is on ``model-events`` after N+1's promotion;
5. every replica serves the previous version again, without a shadow;
6. 0 failed requests over the whole test, every event published was consumed, and exactly
   one DAG run (ours) since the test began, none triggered by the bridge.

The figures (time from promotion to the decision and to every replica back, rows the decision
used, both online RMSEs, requests) are printed; run with ``-s`` to see them. Afterwards the
champion that served before the test serves again, with no watch running.

The traffic is deliberately slow (about 2.5 predictions/s): the drift consumer decides once
the watch holds ``WATCH_MIN_ROWS`` (200) labelled rows, and ``PerformanceDegraded`` may judge
the new champion once 300 rows of its own are labelled (its online RMSE was 1.45 and 1.72 x its
biased holdout RMSE in two runs; the alert fires above 1.5); at this rate the rollback comes
tens of seconds before that, so the alert cannot trigger a second run. At the demo's 40 req/s the
100 rows between the two would take 3 s, less than the labelled log's 10 s flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop_cli import observe
from driftloop_cli.demo import endpoints, locust_totals, quiet_counts, wait_consumed
from driftloop_cli.settings import REPO_ROOT
from driftloop_contracts import (
    CHAMPION_ALIAS,
    DAG_ID,
    MODEL_EVENTS_TOPIC,
    MODEL_NAME,
    ROLLBACK_REASON_PREFIX,
    SHADOW_ALIAS,
    WATCH_DECISION_TAG_PREFIX,
    WATCH_UNTIL_TAG,
    ModelPromoted,
    decode_event,
)
from driftloop_contracts.approval import APPROVAL_TASK_ID
from driftloop_loadtest import command as loadtest_command
from driftloop_training import registry
from driftloop_training.bootstrap import bootstrap
from driftloop_training.publisher import publish_model_promoted
from driftloop_training.settings import TrainingSettings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

#: Labels x 0.6 for the challenger (fault injection; the DAG's ``label_bias``).
LABEL_BIAS = 0.6
#: Labelled rows of this test's traffic the run trains and holds out on (its min and max):
#: with labels x 0.6 the gate's margin is wide (about 40 %), so fewer than the default 500 do.
ROWS = 300
#: Slow steady traffic (see the module docstring): one user, 0.25-0.45 s think time.
USERS, WAIT_MIN_S, WAIT_MAX_S = 1, 0.25, 0.45
ROWS_DEADLINE_S = 420.0
RUN_DEADLINE_S = 600.0
ROLLBACK_DEADLINE_S = 420.0
SWITCH_DEADLINE_S = 90.0
TAG = WATCH_DECISION_TAG_PREFIX


def poll(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """``check()`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} ({last!r})")
        time.sleep(every_s)


def note(message: str) -> None:
    print(f"[rollback e2e] {message}", flush=True)


# --------------------------------------------------------------------------- the stack


def alias(uri: str, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(registry.client(uri).get_model_version_by_alias(MODEL_NAME, name).version)
    except MlflowException:
        return None


def make_champion(training: TrainingSettings, version: str, reason: str) -> None:
    """Move the alias to ``version`` and announce it, as a promotion does (no watch)."""
    uri = training.mlflow_tracking_uri
    registry.end_watch(uri)
    registry.set_champion(uri, version)
    info = registry.get_version(uri, version)
    publish_model_promoted(
        training.kafka_bootstrap,
        ModelPromoted(model_name=MODEL_NAME, version=version, run_id=info.run_id, reason=reason),
    )


def labelled_rows(stack: Any) -> float:
    """Rows the drift consumer appended to the labelled-data log (what the DAG reads)."""
    scraped = observe.scrape_metrics([stack.drift_consumer_url])
    return observe.metric_total(scraped, "driftloop_labelled_rows_total")


async def _model_events(bootstrap_servers: str) -> list[tuple[float, ModelPromoted]]:
    """Every ``ModelPromoted`` on ``model-events`` with its record time (seconds), read from
    the start up to the end offsets taken now (the topic is tiny)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    events: list[tuple[float, ModelPromoted]] = []
    try:
        await consumer.topics()
        parts = sorted(consumer.partitions_for_topic(MODEL_EVENTS_TOPIC) or ())
        tps = [TopicPartition(MODEL_EVENTS_TOPIC, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    event = decode_event(MODEL_EVENTS_TOPIC, r.value)
                    assert isinstance(event, ModelPromoted)
                    events.append((r.timestamp / 1000.0, event))
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        assert not todo, f"could not read {MODEL_EVENTS_TOPIC} to its end"
    finally:
        await consumer.stop()
    return sorted(events, key=lambda e: e[0])


# --------------------------------------------------------------------------- Airflow


@dataclass
class Airflow:
    url: str
    username: str
    password: str

    def api(self) -> Any:
        from airflow_client.client import ApiClient, Configuration

        r = httpx.post(
            f"{self.url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        r.raise_for_status()
        return ApiClient(Configuration(host=self.url, access_token=r.json()["access_token"]))

    def unpause(self) -> None:
        """Wait until the scheduler parsed the DAG; unpause it if needed."""
        from airflow_client.client import DAGApi, DAGPatchBody
        from airflow_client.client.exceptions import NotFoundException

        def parsed() -> bool:
            with self.api() as api:
                try:
                    dag = DAGApi(api).get_dag(DAG_ID)
                except NotFoundException:
                    return False
                if dag.is_paused:
                    DAGApi(api).patch_dag(DAG_ID, DAGPatchBody(is_paused=False))
                return True

        poll(f"DAG {DAG_ID} parsed", parsed, 180, every_s=1)

    def trigger(self, run_id: str, conf: dict[str, Any]) -> None:
        from airflow_client.client import DagRunApi, TriggerDAGRunPostBody

        body = TriggerDAGRunPostBody(
            dag_run_id=run_id, conf=conf, logical_date=None, note="tests/e2e/test_rollback.py"
        )
        with self.api() as api:
            DagRunApi(api).trigger_dag_run(DAG_ID, body)


@pytest.fixture
def airflow(stack: Any) -> Airflow:
    af = Airflow(stack.airflow_url, stack.airflow_username, stack.airflow_password)
    af.unpause()
    return af


def test_an_invalid_label_bias_is_refused_at_trigger(airflow: Airflow) -> None:
    """The API server validates the param: a bias of 0 never becomes a run."""
    from airflow_client.client.exceptions import BadRequestException

    with pytest.raises(BadRequestException, match="label_bias"):
        airflow.trigger(f"test_bias_{uuid.uuid4().hex[:12]}", {"label_bias": 0})


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    proc: subprocess.Popen[bytes]
    report_dir: Path
    baseline: dict[str, float]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"locust exited; see {self.report_dir / 'locust.log'}"

    def stop(self) -> tuple[int, int]:
        """Stop locust (SIGINT: it writes its reports) and return (requests, failures)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return locust_totals(self.report_dir)


@contextlib.contextmanager
def steady_traffic(stack: Any, report_dir: Path) -> Iterator[Traffic]:
    """Locust's ``steady`` scenario through nginx, every answer labelled 2 s later with its
    true price (no invalid bodies: every request counts). Stopped on leaving the block."""
    baseline = quiet_counts(stack.settings)  # counters are cumulative: this test's share
    argv = loadtest_command.locust_command(
        host=stack.nginx_url,
        users=USERS,
        spawn_rate=USERS,
        run_time_s=3600,  # stopped by the test
        schedule="steady",
        report_dir=report_dir,
        feedback_share=1.0,
        feedback_delay_s=2.0,
        bad_share=0.0,
        extra_args=["--wait-min", str(WAIT_MIN_S), "--wait-max", str(WAIT_MAX_S)],
    )
    with (report_dir / "locust.log").open("w") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        traffic = Traffic(proc, report_dir, baseline)
        try:
            yield traffic
        finally:
            traffic.stop()


# --------------------------------------------------------------------------- the test


@pytest.fixture
def restored(
    stack: Any, champion: str, retrain_runs: Any
) -> Iterator[tuple[TrainingSettings, str]]:
    """No DAG run active, and the full bootstrap model serving with no watch while the test
    runs (yielded with the settings); afterwards the champion that served before serves
    again, with no watch."""
    retrain_runs.end_active("the rollback e2e needs the DAG idle")
    training: TrainingSettings = stack.training_settings()
    uri = training.mlflow_tracking_uri
    before = registry.get_champion(uri)
    # A version of its own, trained as the full bootstrap is: a version that served an earlier
    # test's drifted traffic (the closed loop's base champion) carries that traffic's online
    # error and drift windows, so making it champion again fired PerformanceDegraded and
    # DriftFeatureHigh at once, and the run they started promoted another champion under this
    # test (seen in CI: the test's challenger was then judged against that one and rejected).
    start = bootstrap(training, force=True).version
    make_champion(training, start, "rollback e2e setup: a fresh bootstrap champion, no watch")
    try:
        yield training, start
    finally:
        # a run this test left (its own, or one an alert started) must not promote later,
        # in the middle of another module's test (seen in CI: test_model_trust)
        retrain_runs.end_active("the rollback e2e ended")
        restore = before.version if before is not None else start
        if alias(uri, CHAMPION_ALIAS) != restore or alias(uri, SHADOW_ALIAS) is not None:
            make_champion(training, restore, "rollback e2e teardown: restore the champion")
        poll(
            f"every replica back on {restore} without a shadow",
            lambda: set(observe.replica_watch_states(stack.model_api_urls)) == {(restore, None)},
            SWITCH_DEADLINE_S,
        )


def test_a_worse_promoted_champion_is_rolled_back_with_no_failed_request(
    stack: Any,
    restored: tuple[TrainingSettings, str],
    airflow: Airflow,
    tmp_path: Path,
) -> None:
    training, previous = restored
    uri = training.mlflow_tracking_uri
    ep = endpoints(stack.settings)
    urls = stack.model_api_urls
    poll(
        f"every replica on {previous} without a shadow",
        lambda: set(observe.replica_watch_states(urls)) == {(previous, None)},
        SWITCH_DEADLINE_S,
    )
    # an earlier test's incident still open would trigger a run of its own during this one
    poll("no retraining alert active", lambda: observe.active_retrain_alerts(ep) == [], 180, 1)
    began = time.time()
    run_id = f"rollback_e2e_{uuid.uuid4().hex[:12]}"

    with steady_traffic(stack, tmp_path) as traffic:
        # --- enough labelled rows of this traffic for the run (it uses exactly the newest ROWS)
        rows_before = labelled_rows(stack)

        def rows_in() -> bool:
            traffic.alive()
            return labelled_rows(stack) - rows_before >= ROWS

        poll(f"{ROWS} labelled rows of this test's traffic", rows_in, ROWS_DEADLINE_S, 1)
        conf = {
            "label_bias": LABEL_BIAS,
            "min_labelled_rows": ROWS,
            "max_labelled_rows": ROWS,
            "triggered_by": "tests/e2e/test_rollback.py",  # on the challenger's run
        }
        airflow.trigger(run_id, conf)
        note(f"triggered {run_id} with {conf}")

        # --- 1. our run succeeded and promoted N+1, made by that run -------------------------
        af = observe.Airflow(ep)
        run = poll(
            f"run {run_id} to end",
            lambda: (r := af.dag_run(run_id)) and r.get("state") in ("success", "failed") and r,
            RUN_DEADLINE_S,
            every_s=1,
        )
        tasks = {t["task_id"]: t for t in af.task_instances(run_id)}
        states = {name: t.get("state") for name, t in tasks.items()}
        assert run["state"] == "success", states
        assert states == {**dict.fromkeys(states, "success"), APPROVAL_TASK_ID: "skipped"}, states
        (new,) = registry.search_versions(uri, {registry.TAG_DAG_RUN_ID: run_id})
        new_version = new.version
        assert new.tags[registry.TAG_DECISION] == "promoted", new.tags
        assert new.tags["driftloop.champion_version"] == previous, new.tags
        assert int(new_version) > int(previous)
        mlflow_run = registry.client(uri).get_run(new.run_id)
        assert mlflow_run.data.params["retrain.label_bias"] == str(LABEL_BIAS)
        assert mlflow_run.data.tags["driftloop.trigger.triggered_by"] == conf["triggered_by"]
        promoted_at = datetime.fromisoformat(str(tasks["decide"]["end_date"])).timestamp()
        note(
            f"run {run_id} promoted version {new_version} (gate: challenger "
            f"{float(new.tags['driftloop.challenger_rmse_usd']):,.0f} USD vs champion "
            f"{float(new.tags['driftloop.champion_rmse_usd']):,.0f} USD on the biased holdout)"
        )

        # --- 2. the watch started: shadow = the previous champion, on every replica ----------
        assert alias(uri, SHADOW_ALIAS) == previous
        assert WATCH_UNTIL_TAG in registry.get_version(uri, new_version).tags
        poll(
            f"every replica on {new_version} with shadow {previous}",
            lambda: set(observe.replica_watch_states(urls)) == {(new_version, previous)},
            SWITCH_DEADLINE_S,
            every_s=0.25,
        )
        note(f"every replica serves {new_version} with shadow {previous}")

        # --- 3. the drift consumer decided rolled_back for this pair, figures on both --------
        def decided() -> dict[str, str] | None:
            traffic.alive()
            tags = registry.get_version(uri, new_version).tags
            return tags if f"{TAG}.outcome" in tags else None

        tags = poll(f"the watch decision on version {new_version}", decided, ROLLBACK_DEADLINE_S, 1)
        assert tags[f"{TAG}.outcome"] == "rolled_back", tags
        assert (tags[f"{TAG}.champion"], tags[f"{TAG}.shadow"]) == (new_version, previous)
        decision = {k: v for k, v in tags.items() if k.startswith(f"{TAG}.")}

        def on_previous() -> dict[str, str | None]:
            tags = registry.get_version(uri, previous).tags
            return {k: tags.get(k) for k in decision}

        # the consumer tags the new version, then the previous one (each with outcome last)
        poll(
            f"the same decision on version {previous}",
            lambda: on_previous() == decision or None,
            SWITCH_DEADLINE_S,
        )
        rows_used = int(decision[f"{TAG}.rows"])
        champion_rmse = float(decision[f"{TAG}.champion_rmse_usd"])
        shadow_rmse = float(decision[f"{TAG}.shadow_rmse_usd"])
        margin = float(decision[f"{TAG}.rmse_margin"])
        assert rows_used >= int(decision[f"{TAG}.min_rows"]) > 0
        assert champion_rmse > (1 + margin) * shadow_rmse
        decided_at = datetime.fromisoformat(decision[f"{TAG}.decided_at"]).timestamp()

        # --- 4. champion back, shadow gone, the rollback announced after the promotion -------
        poll(
            f"alias {CHAMPION_ALIAS} back on {previous}",
            lambda: alias(uri, CHAMPION_ALIAS) == previous,
            SWITCH_DEADLINE_S,
        )
        # the consumer moves the champion back, then removes the shadow alias, then announces
        poll(
            f"alias {SHADOW_ALIAS} removed",
            lambda: alias(uri, SHADOW_ALIAS) is None,
            SWITCH_DEADLINE_S,
        )

        def announced() -> tuple[list[Any], list[Any]] | None:
            events = asyncio.run(_model_events(stack.kafka_bootstrap))
            promotions = [
                (at, e) for at, e in events if e.version == new_version and e.run_id == new.run_id
            ]
            assert len(promotions) == 1, promotions
            rollbacks = [
                (at, e)
                for at, e in events
                if at >= promotions[0][0] and e.reason.startswith(ROLLBACK_REASON_PREFIX)
            ]
            return (promotions, rollbacks) if rollbacks else None

        promotions, rollbacks = poll(
            "the rollback announced on model-events", announced, SWITCH_DEADLINE_S, every_s=1
        )
        assert [(e.version, e.run_id) for _, e in rollbacks] == [
            (previous, registry.get_version(uri, previous).run_id)
        ], rollbacks
        assert f"v{new_version} RMSE {champion_rmse:,.0f} USD" in rollbacks[0][1].reason

        # --- 5. every replica back on the previous version, without a shadow -----------------
        poll(
            f"every replica back on {previous} without a shadow",
            lambda: set(observe.replica_watch_states(urls)) == {(previous, None)},
            SWITCH_DEADLINE_S,
            every_s=0.25,
        )
        back_at = time.time()
        traffic.alive()
    requests, failed = traffic.stop()

    # --- 6. nothing failed, nothing lost, one run --------------------------------------------
    counts = wait_consumed(stack.settings, traffic.baseline)
    runs = [str(r.get("dag_run_id")) for r in af.dag_runs_since(began)]
    decisions = [
        (d.get("alertname"), d.get("decision"))
        for d in observe.bridge_decisions(ep)
        if datetime.fromisoformat(str(d.get("at"))).timestamp() >= began
    ]
    triggered = [d for d in decisions if d[1] in ("triggered", "queued")]
    announced_at, rolled_back_at = promotions[0][0], rollbacks[0][0]
    note(
        f"v{new_version} promoted (alias moved, decide ended; announced "
        f"{announced_at - promoted_at:+.1f}s) -> rollback decided {decided_at - promoted_at:.1f}s, "
        f"announced {rolled_back_at - promoted_at:.1f}s, every replica back on v{previous} "
        f"{back_at - promoted_at:.1f}s after the promotion; decided on {rows_used} labelled "
        f"rows: v{new_version} online RMSE {champion_rmse:,.0f} USD vs v{previous} (shadow) "
        f"{shadow_rmse:,.0f} USD (margin {margin:.0%}); requests {requests}, failed {failed}; "
        f"events {counts}; DAG runs since the test began {runs}; bridge decisions {decisions}"
    )
    assert requests > ROWS and failed == 0, (requests, failed)
    assert counts["predictions_failed"] == counts["predictions_dropped"] == 0, counts
    assert counts["feedback_failed"] == counts["feedback_dropped"] == 0, counts
    # (> 0, not > ROWS: labels of an earlier test's traffic joined meanwhile count toward ROWS)
    assert counts["predictions_consumed"] == counts["predictions_published"] > 0, counts
    assert counts["feedback_consumed"] == counts["feedback_published"], counts
    assert runs == [run_id], runs
    assert triggered == [], triggered
