"""Human approval without Airflow: the request a person sees, reading the answer, and decide.

The DAG's approval task hands ``decide`` Airflow's HITL result; these tests feed the same
shape (``chosen_options``, ``responded_by_user``, ``responded_at``) through the real decide on
a real (SQLite) MLflow registry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop_contracts.approval import APPROVE, REJECT
from driftloop_training import registry, retrain
from driftloop_training.approval import ApprovalAnswer, answer_from_hitl
from driftloop_training.approval_request import approval_request
from driftloop_training.bootstrap import bootstrap
from driftloop_training.retrain import EvaluateResult, RetrainParams
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import ModelParams

MANUAL = RetrainParams(
    lookback_hours=2, min_labelled_rows=300, approval="manual", approval_timeout_minutes=30
)
AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def la_prices_up(rows: pd.DataFrame) -> np.ndarray:
    region = (rows["block_latitude"] < 34.5) & (rows["block_longitude"] > -119.0)
    return np.where(region, 1.3, 1.0)


def _scores(rmse: float) -> dict[str, float]:
    return {"rmse_usd": rmse, "mae_usd": rmse * 0.7, "r2": 0.81, "n": 900}


def _evaluated(challenger: float, champion: float | None) -> EvaluateResult:
    return EvaluateResult(
        run_id="run-challenger",
        model_uri="models:/m-1",
        run_key="k",
        holdout_rows=900,
        challenger=_scores(challenger),
        champion=None if champion is None else _scores(champion),
        champion_version=None if champion is None else "3",
        champion_run_id=None if champion is None else "run-champion",
    )


# --------------------------------------------------------------------------- the request


def test_request_shows_both_models_on_the_same_holdout() -> None:
    request = approval_request(
        _evaluated(41_000, 52_000),
        MANUAL,
        dag_run_id="alert__DriftShareHigh__x",
        trigger={"alertname": "DriftShareHigh", "fingerprint": "fp1"},
    )
    assert request is not None
    assert request.subject == (
        "Promote california-housing challenger? RMSE 41,000 vs 52,000 USD (+21.2% RMSE)"
    )
    body = request.body
    assert "| RMSE (USD) | 41,000 | 52,000 |" in body
    assert "| MAE (USD) | 28,700 | 36,400 |" in body
    assert "| R² | 0.810 | 0.810 |" in body
    assert "| MLflow run | `run-challenger` | `run-champion` |" in body
    assert "champion v3" in body and "900 newest labelled rows" in body
    assert "improvement: 21.2% (required 2.0%)" in body
    assert "`alert__DriftShareHigh__x`" in body and "`DriftShareHigh`" in body
    assert "no answer within 30 min" in body


def test_request_without_a_champion() -> None:
    request = approval_request(_evaluated(41_000, None), MANUAL, dag_run_id="r")
    assert request is not None
    assert "(no champion)" in request.subject and "| RMSE (USD) | 41,000 | — |" in request.body


def test_no_request_when_the_gate_rejects() -> None:
    assert approval_request(_evaluated(51_500, 52_000), MANUAL, dag_run_id="r") is None


# --------------------------------------------------------------------------- the answer


@pytest.mark.parametrize(
    ("payload", "outcome", "by"),
    [
        ({"chosen_options": [APPROVE], "responded_by_user": {"id": "admin", "name": "ann"}},
         "approved", "ann"),
        ({"chosen_options": [REJECT], "responded_by_user": {"id": "admin", "name": "ann"}},
         "rejected", "ann"),
        ({"chosen_options": [REJECT], "responded_by_user": None}, "timed_out", None),
        # the timeout default is Reject; even an Approve without a person is no approval
        ({"chosen_options": [APPROVE], "responded_by_user": None}, "timed_out", None),
        ({"chosen_options": [APPROVE, REJECT], "responded_by_user": {"id": "7", "name": ""}},
         "rejected", "7"),
    ],
)  # fmt: skip
def test_answer_from_hitl(payload: dict[str, Any], outcome: str, by: str | None) -> None:
    answer = answer_from_hitl({**payload, "responded_at": AT}, timeout_minutes=30)
    assert (answer.outcome, answer.by, answer.at) == (outcome, by, AT)
    assert answer.approved is (outcome == "approved")


def test_answer_descriptions() -> None:
    timed_out = answer_from_hitl({"chosen_options": [REJECT]}, timeout_minutes=0.25)
    assert timed_out.describe() == "approval timed out: nobody answered within 0.25 min"
    rejected = ApprovalAnswer(outcome="rejected", by="ann", at=AT)
    assert rejected.describe() == "rejected by ann at 2026-12-06 10:00:00 UTC"


# --------------------------------------------------------------------------- decide


@pytest.fixture
def evaluated_better(
    settings: TrainingSettings,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[..., Any],
    hour: Callable[[int], datetime],
) -> tuple[str, EvaluateResult]:
    """A champion, and a challenger evaluated on concept-drifted rows: the gate promotes it."""
    champ = bootstrap(settings, params=fast)
    rows = base_split[1].sample(n=1200, random_state=3).reset_index(drop=True)
    frame = labelled_rows(
        rows,
        start=hour(12) - timedelta(minutes=90),
        span=timedelta(minutes=80),
        price_factor=la_prices_up,
    )
    write_log(settings.labelled_log_dir, frame)
    collected = retrain.collect(
        settings, run_key="r", window_end=hour(12), params=MANUAL, base=base_split[0]
    )
    trained = retrain.train(settings, collected, params=MANUAL, model_params=fast)
    evaluated = retrain.evaluate(settings, trained)
    assert approval_request(evaluated, MANUAL, dag_run_id="r") is not None  # a person is asked
    return champ.version, evaluated


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (ApprovalAnswer(outcome="rejected", by="ann", at=AT), "rejected by ann"),
        (ApprovalAnswer(outcome="timed_out", timeout_minutes=30), "approval timed out"),
    ],
)
def test_a_challenger_not_approved_stays_a_rejected_version(
    settings: TrainingSettings,
    evaluated_better: tuple[str, EvaluateResult],
    answer: ApprovalAnswer,
    reason: str,
) -> None:
    champion, evaluated = evaluated_better
    decision = retrain.decide(settings, evaluated, params=MANUAL, approval=answer)
    assert decision.decision == "rejected"
    assert decision.reason.startswith(reason) and "the gate alone would promote" in decision.reason
    assert decision.approval == answer.outcome
    uri = settings.mlflow_tracking_uri
    current = registry.get_champion(uri)
    assert current is not None and current.version == champion
    tags = registry.get_version(uri, decision.version).tags
    assert tags[registry.TAG_DECISION] == "rejected"
    assert tags["driftloop.decision_reason"] == decision.reason
    assert tags["driftloop.approval"] == answer.outcome
    assert tags["driftloop.approval_by"] == (answer.by or "")
    assert float(tags["driftloop.challenger_rmse_usd"]) < float(tags["driftloop.champion_rmse_usd"])
    assert retrain.announce(settings, decision).published is False


def test_an_approved_challenger_is_promoted(
    settings: TrainingSettings, evaluated_better: tuple[str, EvaluateResult]
) -> None:
    champion, evaluated = evaluated_better
    answer = ApprovalAnswer(outcome="approved", by="ann", at=AT)
    decision = retrain.decide(settings, evaluated, params=MANUAL, approval=answer)
    assert decision.promoted and decision.approved_by == "ann"
    uri = settings.mlflow_tracking_uri
    current = registry.get_champion(uri)
    assert current is not None and current.version == decision.version != champion
    tags = registry.get_version(uri, decision.version).tags
    assert (tags["driftloop.approval"], tags["driftloop.approval_by"]) == ("approved", "ann")


def test_manual_mode_without_an_answer_promotes_nothing(
    settings: TrainingSettings, evaluated_better: tuple[str, EvaluateResult]
) -> None:
    """An approval task skipped or marked success by hand leaves no answer: no promotion."""
    champion, evaluated = evaluated_better
    decision = retrain.decide(settings, evaluated, params=MANUAL, approval=None)
    assert decision.decision == "rejected"
    assert decision.reason.startswith("approval=manual but no answer recorded")
    current = registry.get_champion(settings.mlflow_tracking_uri)
    assert current is not None and current.version == champion


def test_auto_mode_records_no_approval(
    settings: TrainingSettings, evaluated_better: tuple[str, EvaluateResult]
) -> None:
    _, evaluated = evaluated_better
    decision = retrain.decide(settings, evaluated, params=RetrainParams(), approval=None)
    assert decision.promoted and decision.approval is None
    tags = registry.get_version(settings.mlflow_tracking_uri, decision.version).tags
    assert "driftloop.approval" not in tags
