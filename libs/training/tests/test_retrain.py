"""The retraining steps without Airflow: collect, train, evaluate, decide, announce.

Scenarios: no champion yet, not enough data, challenger worse (recent labels follow the old
relationship), challenger better (concept drift: prices up 30% around Los Angeles).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from driftloop_contracts import (
    FEATURE_NAMES,
    MODEL_EVENTS_TOPIC,
    MODEL_NAME,
    SHADOW_ALIAS,
    TARGET_NAME,
    TARGET_SCALE_USD,
    ModelPromoted,
    watch_until,
)
from driftloop_training import registry, retrain
from driftloop_training.bootstrap import bootstrap
from driftloop_training.errors import DataError
from driftloop_training.publisher import Published
from driftloop_training.retrain import RetrainParams
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import ModelParams

N_LABELLED = 1200
PARAMS = RetrainParams(lookback_hours=2, min_labelled_rows=300)


def la_prices_up(rows: pd.DataFrame) -> np.ndarray:
    region = (rows["block_latitude"] < 34.5) & (rows["block_longitude"] > -119.0)
    return np.where(region, 1.3, 1.0)


@pytest.fixture
def window_end(hour: Callable[[int], datetime]) -> datetime:
    return hour(12)


@pytest.fixture
def log_of(
    settings: TrainingSettings,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
    labelled_rows: Callable[..., pd.DataFrame],
    write_log: Callable[[Path, pd.DataFrame], list[Path]],
    window_end: datetime,
) -> Callable[..., pd.DataFrame]:
    """Writes N labelled rows from the base *holdout* (unseen by every model) into the log."""

    def make(
        n: int = N_LABELLED, price_factor: Callable[[pd.DataFrame], np.ndarray] | None = None
    ) -> pd.DataFrame:
        rows = base_split[1].sample(n=n, random_state=3).reset_index(drop=True)
        frame = labelled_rows(
            rows,
            start=window_end - timedelta(minutes=90),
            span=timedelta(minutes=80),
            price_factor=price_factor,
        )
        write_log(settings.labelled_log_dir, frame)
        return frame

    return make


#: The Airflow run id the DAG passes to ``train``; the registered version must carry it.
DAG_RUN_ID = "alert__DriftHigh__20261206T080000__0123456789abcdef"


def run_until_decision(
    settings: TrainingSettings,
    window_end: datetime,
    fast: ModelParams,
    base: pd.DataFrame,
    params: RetrainParams = PARAMS,
) -> tuple[retrain.EvaluateResult, retrain.Decision]:
    collected = retrain.collect(
        settings, run_key="run-1", window_end=window_end, params=params, base=base
    )
    assert collected.ready, collected.reason
    trained = retrain.train(
        settings,
        collected,
        params=params,
        trigger_conf={"alertname": "DriftHigh"},
        dag_run_id=DAG_RUN_ID,
        model_params=fast,
    )
    evaluated = retrain.evaluate(settings, trained)
    return evaluated, retrain.decide(settings, evaluated, params=params)


# --------------------------------------------------------------------------- collect


def test_not_enough_data_is_skipped(
    settings: TrainingSettings, log_of: Callable[..., pd.DataFrame], window_end: datetime
) -> None:
    log_of(n=100)
    result = retrain.collect(settings, run_key="r", window_end=window_end, params=PARAMS)
    assert result.status == "skipped"
    assert result.reason.startswith("skipped: not enough labelled data (100 rows")
    assert result.train_path is None
    with pytest.raises(DataError):
        retrain.train(settings, result, params=PARAMS)


def test_empty_log_is_skipped(settings: TrainingSettings, window_end: datetime) -> None:
    result = retrain.collect(settings, run_key="r", window_end=window_end, params=PARAMS)
    assert result.status == "skipped" and result.labelled_rows == 0


def test_window_end_param_overrides_run_time(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    log_of()
    later = window_end + timedelta(days=3)
    assert not retrain.collect(settings, run_key="r", window_end=later, params=PARAMS).ready
    pinned = PARAMS.model_copy(update={"window_end": window_end})
    result = retrain.collect(
        settings, run_key="r", window_end=later, params=pinned, base=base_split[0]
    )
    assert result.ready and result.labelled_rows == N_LABELLED


def test_collect_holds_out_the_newest_rows_and_weights_recent(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    log = log_of()
    result = retrain.collect(
        settings, run_key="r", window_end=window_end, params=PARAMS, base=base_split[0]
    )
    assert result.ready
    assert result.train_path is not None and result.holdout_path is not None
    assert result.holdout_rows == int(np.ceil(N_LABELLED * PARAMS.holdout_share))
    assert result.recent_train_rows + result.holdout_rows == N_LABELLED
    assert result.base_rows == 2 * result.recent_train_rows
    assert result.partitions == ["date=2026-01-05/hour=10", "date=2026-01-05/hour=11"]

    train = pd.read_parquet(result.train_path)
    holdout = pd.read_parquet(result.holdout_path)
    newest = log.sort_values("labelled_at").tail(result.holdout_rows)
    np.testing.assert_allclose(holdout["median_income_in_block"], newest["median_income_in_block"])
    recent = train[train[retrain.SOURCE_COLUMN] == "recent"]
    weights = train.groupby(retrain.SOURCE_COLUMN)[retrain.WEIGHT_COLUMN].sum()
    assert weights["recent"] / weights.sum() == pytest.approx(PARAMS.recent_weight_share)
    assert len(recent) == result.recent_train_rows
    manifest = Path(result.train_path).parent / "manifest.json"
    assert retrain.CollectResult.model_validate_json(manifest.read_text()) == result


def test_collect_uses_only_the_newest_max_labelled_rows(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    log = log_of()
    capped = PARAMS.model_copy(update={"max_labelled_rows": 700})
    result = retrain.collect(
        settings, run_key="r", window_end=window_end, params=capped, base=base_split[0]
    )
    assert result.ready
    assert result.train_path is not None and result.holdout_path is not None
    assert (result.labelled_rows, result.older_rows_left_out) == (700, N_LABELLED - 700)
    assert result.recent_train_rows + result.holdout_rows == 700
    train = pd.read_parquet(result.train_path)
    used = pd.concat(
        [train[train[retrain.SOURCE_COLUMN] == "recent"], pd.read_parquet(result.holdout_path)]
    )
    newest = log.sort_values("labelled_at").tail(700)
    assert sorted(used["median_income_in_block"]) == sorted(newest["median_income_in_block"])


def test_collect_is_rerunnable(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    log_of()

    def collect() -> retrain.CollectResult:
        return retrain.collect(
            settings, run_key="r", window_end=window_end, params=PARAMS, base=base_split[0]
        )

    first = collect()
    assert first.train_path is not None
    frame = pd.read_parquet(first.train_path)
    second = collect()
    assert second == first
    assert second.train_path is not None
    pd.testing.assert_frame_equal(pd.read_parquet(second.train_path), frame)


# --------------------------------------------------------------------------- label_bias


def test_label_bias_multiplies_every_collected_label_and_nothing_else(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Fault injection: the labelled rows' target, training and holdout alike, times the bias;
    features, the split and the base rows unchanged; 1.0 leaves the labels as logged."""
    log = log_of()

    def collect(key: str, params: RetrainParams) -> tuple[pd.DataFrame, pd.DataFrame]:
        result = retrain.collect(
            settings, run_key=key, window_end=window_end, params=params, base=base_split[0]
        )
        assert result.ready and result.train_path and result.holdout_path, result.reason
        assert result.label_bias == params.label_bias
        return pd.read_parquet(result.train_path), pd.read_parquet(result.holdout_path)

    plain_train, plain_holdout = collect("plain", PARAMS)
    train, holdout = collect("biased", PARAMS.model_copy(update={"label_bias": 0.6}))

    # 1.0 changes nothing: the holdout's target is the log's actual (USD -> 100k USD)
    newest = log.sort_values("labelled_at").tail(len(plain_holdout))
    np.testing.assert_allclose(
        plain_holdout[TARGET_NAME], newest["actual"].to_numpy() / TARGET_SCALE_USD
    )
    # 0.6: every labelled row's target times 0.6, the holdout's and the training rows'
    np.testing.assert_allclose(holdout[TARGET_NAME], 0.6 * plain_holdout[TARGET_NAME])
    pd.testing.assert_frame_equal(
        holdout.drop(columns=TARGET_NAME), plain_holdout.drop(columns=TARGET_NAME)
    )
    recent = train[retrain.SOURCE_COLUMN] == "recent"
    assert recent.sum() == (plain_train[retrain.SOURCE_COLUMN] == "recent").sum() > 0
    np.testing.assert_allclose(
        train.loc[recent, TARGET_NAME], 0.6 * plain_train.loc[recent, TARGET_NAME]
    )
    # the base data is not a collected label: unchanged, as are all features and weights
    pd.testing.assert_frame_equal(train[~recent], plain_train[~recent])
    pd.testing.assert_frame_equal(
        train.drop(columns=TARGET_NAME), plain_train.drop(columns=TARGET_NAME)
    )


@pytest.mark.parametrize("bias", [0.0, -0.6, float("inf"), float("nan")])
def test_label_bias_must_be_a_positive_number(bias: float) -> None:
    with pytest.raises(ValidationError, match="label_bias"):
        RetrainParams(label_bias=bias)


def test_a_biased_challenger_passes_the_gate_and_is_worse_on_true_labels(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """What the rollback e2e relies on: with labels x 0.6 the challenger beats the champion on
    the equally biased holdout (promoted), yet on the true labels of the same rows it is far
    worse than the champion, beyond the watch's 5 % margin. Its run records the bias."""
    from driftloop_training.evaluate import score_model

    bootstrap(settings, params=fast)
    log = log_of()
    params = PARAMS.model_copy(update={"label_bias": 0.6})
    evaluated, decision = run_until_decision(settings, window_end, fast, base_split[0], params)
    assert decision.promoted, decision.reason
    assert evaluated.champion_version is not None
    uri = settings.mlflow_tracking_uri
    run = registry.client(uri).get_run(decision.run_id)
    assert run.data.params["retrain.label_bias"] == "0.6"

    truth = log.sort_values("labelled_at").tail(evaluated.holdout_rows)
    frame = truth[list(FEATURE_NAMES)].assign(**{TARGET_NAME: truth["actual"] / TARGET_SCALE_USD})
    challenger = score_model(registry.load_model(uri, decision.version), frame)
    champion = score_model(registry.load_model(uri, evaluated.champion_version), frame)
    assert challenger.rmse_usd > 1.05 * champion.rmse_usd, (challenger, champion)


# --------------------------------------------------------------------------- gate


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        (100.0, None, True),
        (90.0, 100.0, True),
        (98.0, 100.0, True),
        (99.0, 100.0, False),
        (120.0, 100.0, False),
    ],
)
def test_judge(challenger: float, champion: float | None, promote: bool) -> None:
    ok, _, reason = retrain.judge(challenger, champion, min_improvement=0.02)
    assert ok is promote
    assert reason


# --------------------------------------------------------------------------- scenarios


def test_no_champion_yet_promotes_the_challenger(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    log_of()
    evaluated, decision = run_until_decision(settings, window_end, fast, base_split[0])
    assert evaluated.champion is None
    assert decision.promoted and decision.reason == "no champion registered"
    champion = registry.get_champion(settings.mlflow_tracking_uri)
    assert champion is not None and champion.version == decision.version
    assert champion.tags[registry.TAG_DECISION] == "promoted"


def test_challenger_worse_is_rejected_and_tagged(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    champ = bootstrap(settings, params=fast)
    log_of()  # recent labels follow the relationship the champion learnt
    evaluated, decision = run_until_decision(settings, window_end, fast, base_split[0])
    assert evaluated.champion_version == champ.version
    assert decision.decision == "rejected", decision.reason
    uri = settings.mlflow_tracking_uri
    current = registry.get_champion(uri)
    assert current is not None and current.version == champ.version
    tags = registry.get_version(uri, decision.version).tags
    assert tags[registry.TAG_DECISION] == "rejected"
    assert tags[registry.TAG_DAG_RUN_ID] == DAG_RUN_ID  # the version names the run that made it
    assert evaluated.champion is not None
    assert float(tags["driftloop.champion_rmse_usd"]) == pytest.approx(
        evaluated.champion["rmse_usd"], abs=0.01
    )
    assert float(tags["driftloop.challenger_rmse_usd"]) > float(tags["driftloop.champion_rmse_usd"])
    assert retrain.announce(settings, decision).published is False  # no broker needed


def test_challenger_better_is_promoted_and_announced(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    champ = bootstrap(settings, params=fast)
    log_of(price_factor=la_prices_up)
    evaluated, decision = run_until_decision(settings, window_end, fast, base_split[0])
    assert decision.promoted, decision.reason
    assert decision.improvement is not None and decision.improvement > 0.05
    assert evaluated.champion is not None
    assert evaluated.challenger["rmse_usd"] < evaluated.champion["rmse_usd"]
    uri = settings.mlflow_tracking_uri
    current = registry.get_champion(uri)
    assert current is not None and current.version == decision.version != champ.version
    # the watch started: the previous champion is the shadow until the tagged end
    shadow = registry.client(uri).get_model_version_by_alias(MODEL_NAME, SHADOW_ALIAS)
    assert str(shadow.version) == champ.version
    assert watch_until(current.tags) is not None

    run = registry.client(uri).get_run(decision.run_id)
    assert run.data.tags["driftloop.trigger.alertname"] == "DriftHigh"
    assert run.data.tags["driftloop.data.labelled_rows"] == str(N_LABELLED)
    assert run.data.metrics["holdout_rmse_usd"] == pytest.approx(evaluated.challenger["rmse_usd"])
    # the profile describes the recent traffic it was retrained for: the recent training rows
    # (the labelled rows less the holdout), not the down-sampled base data
    from driftloop_training.retrain import MIN_PROFILE_ROWS

    assert MIN_PROFILE_ROWS <= registry.load_profile(uri, decision.version).n_rows <= N_LABELLED

    sent: list[tuple[str, ModelPromoted]] = []

    def fake_publish(bootstrap_servers: str, event: ModelPromoted, **_: object) -> Published:
        sent.append((bootstrap_servers, event))
        return Published(topic=MODEL_EVENTS_TOPIC, partition=0, offset=7)

    monkeypatch.setattr(retrain, "publish_model_promoted", fake_publish)
    result = retrain.announce(settings, decision)
    assert result.published and result.offset == 7
    ((servers, event),) = sent
    assert servers == settings.kafka_bootstrap
    assert (event.model_name, event.version, event.run_id) == (
        MODEL_NAME,
        decision.version,
        decision.run_id,
    )


def test_retried_steps_do_not_duplicate(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    log_of(price_factor=la_prices_up)
    evaluated, decision = run_until_decision(settings, window_end, fast, base_split[0])
    collected = retrain.CollectResult.model_validate_json(
        (settings.work_dir / "run-1" / "collect" / "manifest.json").read_text()
    )
    retried = retrain.train(settings, collected, params=PARAMS, model_params=fast)
    assert retried.reused and retried.run_id == evaluated.run_id
    assert len(retried.profile_id) == 64
    again = retrain.decide(settings, evaluated, params=PARAMS)
    assert again.version == decision.version and again.promoted
    versions = registry.client(settings.mlflow_tracking_uri).search_model_versions(
        f"name = '{MODEL_NAME}'"
    )
    assert len(versions) == 1


def test_champion_moved_during_run_makes_the_comparison_stale(
    settings: TrainingSettings,
    log_of: Callable[..., pd.DataFrame],
    window_end: datetime,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    bootstrap(settings, sample_rows=2000, params=fast)
    log_of(price_factor=la_prices_up)
    collected = retrain.collect(
        settings, run_key="r", window_end=window_end, params=PARAMS, base=base_split[0]
    )
    trained = retrain.train(settings, collected, params=PARAMS, model_params=fast)
    evaluated = retrain.evaluate(settings, trained)
    moved = bootstrap(settings, force=True, sample_rows=2000, params=fast)
    decision = retrain.decide(settings, evaluated, params=PARAMS)
    assert decision.decision == "rejected" and "changed" in decision.reason
    current = registry.get_champion(settings.mlflow_tracking_uri)
    assert current is not None and current.version == moved.version


def test_run_key_is_filesystem_safe() -> None:
    assert retrain.run_key_for("manual__2026-11-23T12:00:00.123+00:00") == (
        "manual__2026-11-23T12_00_00.123_00_00"
    )


def test_profile_describes_the_newest_labelled_traffic() -> None:
    import pandas as pd

    from driftloop_training.retrain import (
        MIN_PROFILE_ROWS,
        PROFILE_ROWS,
        SOURCE_COLUMN,
        profile_rows,
    )

    base = pd.DataFrame({"x": range(3000), SOURCE_COLUMN: "base"})
    recent = pd.DataFrame({"x": range(10_000, 10_000 + PROFILE_ROWS), SOURCE_COLUMN: "recent"})
    holdout = pd.DataFrame({"x": range(20_000, 20_300)})
    chosen = profile_rows(pd.concat([recent, base]), holdout)
    assert len(chosen) == PROFILE_ROWS
    assert set(chosen["x"][-300:]) == set(holdout["x"])  # the newest rows are all in
    assert chosen["x"].min() >= 10_000  # no base rows

    few = pd.concat([recent.head(MIN_PROFILE_ROWS - 301), base])
    assert len(profile_rows(few, holdout)) == len(few)  # too few labelled rows: whole frame
