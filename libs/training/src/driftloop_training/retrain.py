"""Retraining steps, one function per DAG task: collect, train, evaluate, decide, announce.

Each step takes the settings and the previous step's small result (a pydantic model that
round-trips through XCom as JSON) and hands bulk data to the next one as files under
``<work_dir>/<run key>/``, never through XCom. Steps are re-runnable: files are overwritten,
a retried ``train`` reuses the finished run of its first attempt, ``decide`` registers at
most one version per run, and publishing twice is harmless to consumers.

Data policy (how recent labelled data is combined with the base data)
---------------------------------------------------------------------
Labelled rows come from the log over ``[window_end - lookback_hours, window_end)``, one per
``request_id``; only the newest ``max_labelled_rows`` of them are used, so a busy day does not
make retraining (and so the loop) slower. Fewer than ``min_labelled_rows`` stops the run as
*skipped* (nothing trained, nothing promoted). Otherwise the rows are ordered by ``labelled_at`` and the newest
``holdout_share`` of them becomes the holdout on which challenger and champion are both scored;
the model never trains on it.

The challenger trains on the older recent rows plus a sample of the base data (the train split
of the California housing data that the bootstrap champion learned from):

* the base data is **down-sampled** to ``base_rows_per_recent`` base rows per recent training
  row (at most all of it), so recent behaviour is not drowned by sixteen thousand stale rows
  while the feature space that recent traffic has not visited stays covered;
* the recent rows are **weighted** so that together they carry ``recent_weight_share`` of the
  total sample weight. Where recent labels contradict the base data (concept drift: the same
  features now fetch a different price), the model follows the recent labels.

Measured with 3,000 labelled rows whose prices rose 30% in the Los Angeles region (half of
the rows): the defaults (2 base rows per recent row, 75% of the weight on recent rows) learn
the region at +24% and beat the champion's holdout RMSE by 21%; a plain union of all base
rows and the recent rows learns +8% and wins by 7%. When the recent labels follow the base
relationship, the challenger (which saw less data) is ~6% worse and the gate rejects it.

Settling (one retrain per incident): when the trigger carries the alert's ``starts_at``, the
rows *predicted since the incident began* are the incident's regime. The challenger's reference
profile is computed from them alone (the drift baseline of the traffic it will serve, not a mix
of regimes), and the holdout is their newest ``holdout_share``, so the gate judges both models
on that traffic; the model itself still trains on every other recent row plus the base sample.
Fewer than ``min_regime_rows`` of them and the DAG waits (``wait_for_regime``) rather than
profile a mix; ``collect`` itself skips the run if it is ever called with too few.

The gate: promote when there is no champion, or when the challenger's holdout RMSE is at least
``min_improvement`` (relative) below the champion's on the same holdout.

Fault injection (``label_bias``, default 1.0): ``collect`` multiplies the label of every
collected row, training and holdout alike, by it. With 0.6 the challenger learns prices 40 %
too low and, on the equally biased holdout, beats the champion, so the gate promotes a model
that live (unbiased) feedback shows to be worse: the post-promotion watch must roll it back
(tests/e2e/test_rollback.py, demos). Never for production; the value is a param of the
challenger's MLflow run (``retrain.label_bias``) and in its lineage, so a reader of a bad
version sees why it was bad.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from driftloop_contracts import MODEL_NAME, ModelPromoted
from driftloop_contracts.approval import DEFAULT_APPROVAL_TIMEOUT_MINUTES, ApprovalMode

from . import registry
from .approval import ApprovalAnswer, ApprovalOutcome
from .data import labelled_to_frame, load_base_data, read_labelled_log, split_base
from .errors import DataError
from .evaluate import Scores, score_model
from .profile import compute_profile
from .publisher import publish_model_promoted
from .regime import regime_mask
from .settings import TrainingSettings
from .train import ModelParams, features_of, fit_model, predict_usd

log = logging.getLogger(__name__)

#: A week: a run waiting longer holds the DAG (max_active_runs=1) and every trigger behind it.
MAX_APPROVAL_TIMEOUT_MINUTES = 7 * 24 * 60.0
WEIGHT_COLUMN = "sample_weight"
SOURCE_COLUMN = "source"
_MIN_SPLIT_ROWS = 5


class RetrainParams(BaseModel):
    """Knobs of one retraining run (the DAG's params; defaults documented in docs/retraining.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    lookback_hours: int = Field(24, ge=1, le=24 * 90)
    min_labelled_rows: int = Field(500, ge=10)
    max_labelled_rows: int = Field(10_000, ge=100)
    min_improvement: float = Field(0.02, ge=0.0, lt=1.0)
    holdout_share: float = Field(0.3, gt=0.0, lt=1.0)
    base_rows_per_recent: float = Field(2.0, ge=0.0, le=100.0)
    recent_weight_share: float = Field(0.75, gt=0.0, lt=1.0)
    #: End of the lookback window; ``None`` means the DAG run's ``run_after``.
    window_end: AwareDatetime | None = None
    #: The alert's ``startsAt`` (the bridge puts it in the conf): when the incident began.
    #: With it, the profile and the holdout come from rows predicted since then
    #: (:mod:`driftloop_training.regime`); without it (a manual run), from the newest rows.
    starts_at: AwareDatetime | None = None
    #: At least this many labelled rows of the incident's regime before collecting.
    min_regime_rows: int = Field(300, ge=10)
    #: How long after the trigger the DAG keeps re-checking for them; then it ends skipped.
    regime_wait_seconds: int = Field(600, ge=0, le=3600)
    #: ``manual``: a challenger that passes the gate waits for a person (:mod:`.approval`).
    approval: ApprovalMode = "auto"
    approval_timeout_minutes: float = Field(
        DEFAULT_APPROVAL_TIMEOUT_MINUTES, gt=0.0, le=MAX_APPROVAL_TIMEOUT_MINUTES
    )
    #: Fault injection, never for production: every collected label is multiplied by this
    #: (module docstring, "Fault injection"). 1.0 changes nothing.
    label_bias: float = Field(1.0, gt=0.0, allow_inf_nan=False)


class CollectResult(BaseModel):
    status: Literal["ready", "skipped"]
    reason: str
    run_key: str
    window_start: AwareDatetime
    window_end: AwareDatetime
    labelled_rows: int
    #: Rows of the window older than the newest ``max_labelled_rows`` (not used).
    older_rows_left_out: int = 0
    partitions: list[str] = Field(default_factory=list)
    rows_read: int = 0
    duplicates_dropped: int = 0
    invalid_dropped: int = 0
    first_labelled_at: AwareDatetime | None = None
    last_labelled_at: AwareDatetime | None = None
    recent_train_rows: int = 0
    holdout_rows: int = 0
    base_rows: int = 0
    recent_weight: float = 0.0
    train_path: str | None = None
    holdout_path: str | None = None
    #: The incident's start (``starts_at``) and the rows predicted since: the profile's rows.
    incident_start: AwareDatetime | None = None
    regime_rows: int = 0
    profile_path: str | None = None
    #: The ``label_bias`` applied to every collected label (1.0: none; fault injection).
    label_bias: float = 1.0

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def lineage(self) -> dict[str, Any]:
        """What the challenger was trained on, for the MLflow run."""
        return self.model_dump(mode="json", exclude={"status", "reason"})


class TrainResult(BaseModel):
    run_id: str
    model_uri: str
    run_key: str
    holdout_path: str
    train_rows: int
    profile_id: str
    reused: bool = False


class EvaluateResult(BaseModel):
    run_id: str
    model_uri: str
    run_key: str
    holdout_rows: int
    challenger: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    champion_run_id: str | None = None


class Decision(BaseModel):
    decision: Literal["promoted", "rejected"]
    reason: str
    version: str
    run_id: str
    challenger_rmse_usd: float
    champion_rmse_usd: float | None = None
    champion_version: str | None = None
    improvement: float | None = None
    #: With ``approval=manual``: the person's answer (``None``: not asked, e.g. auto mode).
    approval: ApprovalOutcome | None = None
    approved_by: str | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"


class AnnounceResult(BaseModel):
    published: bool
    version: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def run_key_for(run_id: str) -> str:
    """A file-system-safe key for a DAG run id (``manual__2026-11-23T12:00:00+00:00``)."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not key:
        raise ValueError(f"run id {run_id!r} gives an empty key")
    return key[:200]


def _run_dir(settings: TrainingSettings, run_key: str) -> Path:
    return settings.work_dir / run_key


# --------------------------------------------------------------------------- collect


#: Below this many labelled rows, the challenger's profile falls back to its whole training frame.
MIN_PROFILE_ROWS = 500
#: The profile describes at most this many of the newest labelled rows.
PROFILE_ROWS = 1000


def profile_rows(frame: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """The rows a challenger's reference profile is computed from: the newest labelled traffic.

    The profile is the drift baseline for the traffic the model will serve, which is the traffic
    it was retrained for: the newest labelled rows (recent training rows, then the holdout, both
    in labelling order), not the down-sampled base data mixed into its training set nor labelled
    rows from before the drift. A baseline of older traffic would leave a promoted challenger
    measured against a distribution the live traffic no longer has, and the alert would not
    resolve. With fewer than ``MIN_PROFILE_ROWS`` labelled rows, the whole training frame is used.
    """
    recent = frame[frame[SOURCE_COLUMN] == "recent"]
    labelled = pd.concat([recent, holdout], ignore_index=True)
    if len(labelled) < MIN_PROFILE_ROWS:
        return frame
    return labelled.tail(PROFILE_ROWS)


def combine(
    recent: pd.DataFrame,
    base: pd.DataFrame,
    *,
    base_rows_per_recent: float,
    recent_weight_share: float,
    seed: int,
) -> tuple[pd.DataFrame, float]:
    """The training frame of the policy above, with a weight and a source column.

    Returns the frame and the weight given to each recent row (base rows weigh 1).
    """
    n_recent = len(recent)
    n_base = min(len(base), round(base_rows_per_recent * n_recent))
    base_sample = base.sample(n=n_base, random_state=seed) if n_base else base.iloc[:0]
    recent_weight = (
        recent_weight_share / (1.0 - recent_weight_share) * n_base / n_recent if n_base else 1.0
    )
    recent_columns: dict[str, float | str] = {WEIGHT_COLUMN: recent_weight, SOURCE_COLUMN: "recent"}
    base_columns: dict[str, float | str] = {WEIGHT_COLUMN: 1.0, SOURCE_COLUMN: "base"}
    frame = pd.concat(
        [recent.assign(**recent_columns), base_sample.assign(**base_columns)],
        ignore_index=True,
    )
    return frame, recent_weight


def biased(labelled: pd.DataFrame, label_bias: float) -> pd.DataFrame:
    """``labelled`` (log rows) with ``actual`` multiplied by ``label_bias`` (fault injection,
    see the module docstring); the frame itself when the bias is 1.0."""
    if label_bias == 1.0:
        return labelled
    log.warning(
        "label_bias=%g: every collected label is multiplied by it (fault injection, never for "
        "production); the challenger learns biased prices",
        label_bias,
    )
    return labelled.assign(actual=labelled["actual"] * label_bias)


def collect(
    settings: TrainingSettings,
    *,
    run_key: str,
    window_end: datetime,
    params: RetrainParams,
    base: pd.DataFrame | None = None,
) -> CollectResult:
    """Read the labelled log, split off the holdout, combine with base data, write both.

    ``window_end`` is the DAG run's ``run_after`` unless ``params.window_end`` overrides it,
    so re-running the task reads the same window. ``base`` replaces the California data (tests).
    """
    end = (params.window_end or window_end).astimezone(UTC)
    start = end - timedelta(hours=params.lookback_hours)
    labelled = read_labelled_log(settings.labelled_log_dir, start=start, end=end)
    in_window = labelled.frame  # ordered by labelled_at
    recent = in_window.iloc[-params.max_labelled_rows :]
    n = len(recent)
    common: dict[str, Any] = {
        "run_key": run_key,
        "window_start": start,
        "window_end": end,
        "labelled_rows": n,
        "older_rows_left_out": len(in_window) - n,
        "partitions": labelled.partitions,
        "rows_read": labelled.rows_read,
        "duplicates_dropped": labelled.duplicates_dropped,
        "invalid_dropped": labelled.invalid_dropped,
        "first_labelled_at": labelled.first_labelled_at,
        "last_labelled_at": labelled.last_labelled_at,
        "label_bias": params.label_bias,
    }
    n_holdout = math.ceil(n * params.holdout_share)
    if n < params.min_labelled_rows or min(n_holdout, n - n_holdout) < _MIN_SPLIT_ROWS:
        reason = (
            f"skipped: not enough labelled data ({n} rows in {start:%Y-%m-%d %H:%M} to "
            f"{end:%Y-%m-%d %H:%M} UTC, minimum {params.min_labelled_rows})"
        )
        log.info(reason)
        return CollectResult(status="skipped", reason=reason, **common)

    regime: pd.Series | None = None
    if params.starts_at is not None:
        regime = regime_mask(recent, params.starts_at).reset_index(drop=True)
        n_regime = int(regime.sum())
        common.update(incident_start=params.starts_at, regime_rows=n_regime)
        n_holdout = math.ceil(n_regime * params.holdout_share)
        if n_regime < params.min_regime_rows or n_holdout < _MIN_SPLIT_ROWS:
            reason = (
                f"skipped: only {n_regime} labelled rows predicted since the incident began "
                f"({params.starts_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC), minimum "
                f"{params.min_regime_rows}; a profile of fewer rows would mix regimes"
            )
            log.info(reason)
            return CollectResult(status="skipped", reason=reason, **common)

    rows = labelled_to_frame(biased(recent, params.label_bias))
    profile_frame: pd.DataFrame | None = None
    if regime is None:
        recent_train, holdout = rows.iloc[: n - n_holdout], rows.iloc[n - n_holdout :]
    else:
        # The holdout is the newest share of the regime's rows: the gate asks whether the
        # challenger is better on the traffic it will serve (docs/retraining.md, "settle").
        in_regime = regime.to_numpy()
        held = np.zeros(n, dtype=bool)
        held[np.flatnonzero(in_regime)[-n_holdout:]] = True
        recent_train, holdout = rows[~held], rows[held]
        profile_frame = rows[in_regime]
    if base is None:
        full = load_base_data(download_if_missing=settings.download_if_missing)
        base, _ = split_base(full, holdout_share=settings.base_holdout_share, seed=settings.seed)
    train, recent_weight = combine(
        recent_train,
        base,
        base_rows_per_recent=params.base_rows_per_recent,
        recent_weight_share=params.recent_weight_share,
        seed=settings.seed,
    )
    out = _run_dir(settings, run_key) / "collect"
    out.mkdir(parents=True, exist_ok=True)
    train_path, holdout_path = out / "train.parquet", out / "holdout.parquet"
    train.to_parquet(train_path, index=False)
    holdout.reset_index(drop=True).to_parquet(holdout_path, index=False)
    profile_path: Path | None = None
    if profile_frame is not None:
        profile_path = out / "profile.parquet"
        profile_frame.reset_index(drop=True).to_parquet(profile_path, index=False)
    regime_note = (
        f", profile from {len(profile_frame)} post-incident rows"
        if profile_frame is not None
        else ""
    )
    if params.label_bias != 1.0:
        regime_note += f", labels x {params.label_bias:g} (fault injection: label_bias)"
    result = CollectResult(
        status="ready",
        reason=f"ready: {n} labelled rows ({n - n_holdout} train, {n_holdout} holdout{regime_note})",
        profile_path=str(profile_path) if profile_path else None,
        recent_train_rows=n - n_holdout,
        holdout_rows=n_holdout,
        base_rows=len(train) - (n - n_holdout),
        recent_weight=recent_weight,
        train_path=str(train_path),
        holdout_path=str(holdout_path),
        **common,
    )
    (out / "manifest.json").write_text(result.model_dump_json(indent=1))
    return result


# --------------------------------------------------------------------------- train


def _trigger_tags(conf: dict[str, Any]) -> dict[str, str]:
    """The trigger's conf as run tags: the whole conf, plus each top-level key on its own."""
    tags = {"driftloop.trigger.conf": json.dumps(conf, sort_keys=True, default=str)}
    for key, value in conf.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key))[:100]
        tags[f"driftloop.trigger.{safe}"] = (
            value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        )
    return tags


def train(
    settings: TrainingSettings,
    collected: CollectResult,
    *,
    params: RetrainParams,
    trigger_conf: dict[str, Any] | None = None,
    dag_run_id: str | None = None,
    model_params: ModelParams | None = None,
) -> TrainResult:
    """Fit the challenger on the collected training file and log it with profile and lineage."""
    if not collected.ready or not collected.train_path or not collected.holdout_path:
        raise DataError(f"nothing to train: {collected.reason}")
    uri = settings.mlflow_tracking_uri
    run_tags = {registry.TAG_ROLE: "challenger", registry.TAG_RUN_KEY: collected.run_key}
    previous = registry.find_run(uri, run_tags)
    if previous is not None:
        log.info("reusing finished challenger run %s of this DAG run", previous.run_id)
        frame = pd.read_parquet(collected.train_path)
        return TrainResult(
            run_id=previous.run_id,
            model_uri=previous.model_uri,
            run_key=collected.run_key,
            holdout_path=collected.holdout_path,
            train_rows=len(frame),
            profile_id=previous.tags.get("driftloop.profile_id", ""),
            reused=True,
        )

    frame = pd.read_parquet(collected.train_path)
    mp = model_params or ModelParams(random_state=settings.seed)
    model = fit_model(frame, sample_weight=frame[WEIGHT_COLUMN].to_numpy(), params=mp)
    features = features_of(frame)
    profile_frame = (
        pd.read_parquet(collected.profile_path)
        if collected.profile_path
        else profile_rows(frame, pd.read_parquet(collected.holdout_path))
    )
    profile = compute_profile(
        features_of(profile_frame),
        predict_usd(model, profile_frame),
        # A regime's (or the newest) few rows: the Wasserstein scale from the training frame.
        scale_from=(features, predict_usd(model, frame)),
    )
    lineage = collected.lineage()
    logged = registry.log_model_run(
        uri,
        model=model,
        features=features,
        profile=profile,
        run_name=f"challenger-{collected.run_key}"[:250],
        params={
            **{f"model.{k}": v for k, v in mp.as_dict().items()},
            **{f"retrain.{k}": v for k, v in params.model_dump(mode="json").items()},
            "data.recent_train_rows": collected.recent_train_rows,
            "data.base_rows": collected.base_rows,
            "data.holdout_rows": collected.holdout_rows,
            "data.recent_weight": round(collected.recent_weight, 6),
        },
        metrics={"train_rows": float(len(frame))},
        tags={
            **run_tags,
            **_trigger_tags(trigger_conf or {}),
            registry.TAG_DAG_RUN_ID: dag_run_id or "",
            "driftloop.profile_id": profile.profile_id,
            "driftloop.data.window_start": collected.window_start.isoformat(),
            "driftloop.data.window_end": collected.window_end.isoformat(),
            "driftloop.data.labelled_rows": str(collected.labelled_rows),
            "driftloop.data.partitions": ",".join(collected.partitions),
        },
        json_artifacts={"lineage.json": lineage, "trigger_conf.json": trigger_conf or {}},
    )
    return TrainResult(
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        run_key=collected.run_key,
        holdout_path=collected.holdout_path,
        train_rows=len(frame),
        profile_id=profile.profile_id,
    )


# --------------------------------------------------------------------------- evaluate


def evaluate(settings: TrainingSettings, trained: TrainResult) -> EvaluateResult:
    """Score the challenger and the current champion on the same recent holdout (USD)."""
    uri = settings.mlflow_tracking_uri
    holdout = pd.read_parquet(trained.holdout_path)
    challenger = registry.load_run_model(uri, trained.run_id, trained.model_uri)
    challenger_scores = score_model(challenger, holdout)
    champion = registry.get_champion(uri)
    champion_scores: Scores | None = None
    if champion is not None:
        champion_scores = score_model(registry.load_model(uri, champion.version), holdout)
    metrics = dict(challenger_scores.holdout_metrics())
    metrics["holdout_rows"] = float(challenger_scores.n)
    if champion_scores is not None:
        metrics.update({f"champion_{k}": v for k, v in champion_scores.holdout_metrics().items()})
    registry.log_metrics(uri, trained.run_id, metrics)
    return EvaluateResult(
        run_id=trained.run_id,
        model_uri=trained.model_uri,
        run_key=trained.run_key,
        holdout_rows=challenger_scores.n,
        challenger=challenger_scores.as_dict(),
        champion=champion_scores.as_dict() if champion_scores else None,
        champion_version=champion.version if champion else None,
        champion_run_id=champion.run_id if champion else None,
    )


# --------------------------------------------------------------------------- decide


def judge(
    challenger_rmse: float, champion_rmse: float | None, *, min_improvement: float
) -> tuple[bool, float | None, str]:
    """The gate, as a pure function: (promote?, relative improvement, reason)."""
    if champion_rmse is None:
        return True, None, "no champion registered"
    improvement = (champion_rmse - challenger_rmse) / champion_rmse if champion_rmse > 0 else 0.0
    if improvement >= min_improvement:
        return (
            True,
            improvement,
            f"challenger RMSE {challenger_rmse:,.0f} USD beats champion {champion_rmse:,.0f} USD "
            f"by {improvement:.1%} (required {min_improvement:.1%})",
        )
    return (
        False,
        improvement,
        f"challenger RMSE {challenger_rmse:,.0f} USD vs champion {champion_rmse:,.0f} USD: "
        f"improvement {improvement:.1%} below required {min_improvement:.1%}",
    )


def decide(
    settings: TrainingSettings,
    evaluated: EvaluateResult,
    *,
    params: RetrainParams,
    approval: ApprovalAnswer | None = None,
) -> Decision:
    """Register the challenger; move the champion alias only if it passes the gate.

    If the alias moved since ``evaluate`` (someone else promoted meanwhile) the comparison is
    stale, so the challenger is rejected rather than replacing a model it was never scored
    against. With ``params.approval == "manual"`` a challenger that passes the gate is promoted
    only if ``approval`` (a person's answer) approves it; rejected, timed out or missing, it is
    tagged rejected with the answer as the reason.
    """
    uri = settings.mlflow_tracking_uri
    challenger_rmse = float(evaluated.challenger["rmse_usd"])
    champion_rmse = float(evaluated.champion["rmse_usd"]) if evaluated.champion else None
    promote, improvement, reason = judge(
        challenger_rmse, champion_rmse, min_improvement=params.min_improvement
    )
    if promote and approval is not None and not approval.approved:
        promote, reason = False, f"{approval.describe()}; the gate alone would promote: {reason}"
    elif promote and approval is None and params.approval == "manual":
        # the approval task skipped or marked by hand: without a "yes", nothing is promoted
        promote, reason = False, f"approval=manual but no answer recorded; the gate: {reason}"
    version = registry.register_version(uri, run_id=evaluated.run_id, model_uri=evaluated.model_uri)
    current = registry.get_champion(uri)
    current_version = current.version if current else None
    if current_version == version.version:
        promote, reason = True, "already champion (task retried after promotion)"
    elif promote and current_version != evaluated.champion_version:
        promote = False
        reason = (
            f"champion changed from {evaluated.champion_version} to {current_version} "
            "during this run; comparison is stale"
        )
    decision = Decision(
        decision="promoted" if promote else "rejected",
        reason=reason,
        version=version.version,
        run_id=evaluated.run_id,
        challenger_rmse_usd=challenger_rmse,
        champion_rmse_usd=champion_rmse,
        champion_version=evaluated.champion_version,
        improvement=improvement,
        approval=approval.outcome if approval else None,
        approved_by=approval.by if approval else None,
    )
    tags = {
        registry.TAG_DECISION: decision.decision,
        "driftloop.decision_reason": reason,
        "driftloop.challenger_rmse_usd": f"{challenger_rmse:.2f}",
        "driftloop.champion_rmse_usd": "" if champion_rmse is None else f"{champion_rmse:.2f}",
        "driftloop.champion_version": evaluated.champion_version or "",
        "driftloop.improvement": "" if improvement is None else f"{improvement:.4f}",
        "driftloop.min_improvement": f"{params.min_improvement:.4f}",
        "driftloop.holdout_rows": str(evaluated.holdout_rows),
    }
    if approval is not None:
        tags |= {"driftloop.approval": approval.outcome, "driftloop.approval_by": approval.by or ""}
    registry.tag_version(uri, version.version, tags)
    registry.set_run_tags(uri, evaluated.run_id, tags)
    if promote and current_version != version.version:
        registry.promote(
            uri, version.version, previous=current_version, watch_s=settings.watch_seconds
        )
    log.info("%s %s version %s: %s", decision.decision, MODEL_NAME, version.version, reason)
    return decision


# --------------------------------------------------------------------------- announce


def announce(settings: TrainingSettings, decision: Decision) -> AnnounceResult:
    """Publish ModelPromoted for a promoted challenger; nothing for a rejected one."""
    if not decision.promoted:
        return AnnounceResult(published=False, version=decision.version)
    event = ModelPromoted(
        model_name=MODEL_NAME,
        version=decision.version,
        run_id=decision.run_id,
        reason=decision.reason,
    )
    sent = publish_model_promoted(
        settings.kafka_bootstrap, event, timeout_s=settings.kafka_timeout_s
    )
    return AnnounceResult(
        published=True,
        version=decision.version,
        topic=sent.topic,
        partition=sent.partition,
        offset=sent.offset,
    )


__all__ = [
    "AnnounceResult",
    "CollectResult",
    "Decision",
    "EvaluateResult",
    "RetrainParams",
    "TrainResult",
    "announce",
    "collect",
    "combine",
    "decide",
    "evaluate",
    "judge",
    "run_key_for",
    "train",
]
