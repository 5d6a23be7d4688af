"""Bootstrap and registry operations against a real MLflow store (SQLite in tmp_path)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop_contracts import (
    CHAMPION_ALIAS,
    FEATURE_NAMES,
    HOLDOUT_R2_METRIC,
    HOLDOUT_RMSE_METRIC,
    MODEL_NAME,
    SHADOW_ALIAS,
    WATCH_UNTIL_TAG,
    utcnow,
    watch_until,
)
from driftloop_training import registry
from driftloop_training.bootstrap import bootstrap
from driftloop_training.profile import bin_fractions
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import ModelParams


def test_empty_registry_has_no_champion(settings: TrainingSettings) -> None:
    assert registry.get_champion(settings.mlflow_tracking_uri) is None


def test_bootstrap_registers_a_champion_with_profile_and_metrics(
    settings: TrainingSettings,
    fast: ModelParams,
    base_split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    result = bootstrap(settings, sample_rows=3000, params=fast)
    uri = settings.mlflow_tracking_uri
    assert result.created and result.scores is not None

    champion = registry.get_champion(uri)
    assert champion is not None and champion.version == result.version
    assert champion.run_id == result.run_id
    assert champion.tags[registry.TAG_DECISION] == "bootstrap"
    assert champion.holdout_rmse_usd == pytest.approx(result.scores.rmse_usd)

    run = registry.client(uri).get_run(result.run_id)
    assert run.data.metrics[HOLDOUT_R2_METRIC] > 0.6
    assert HOLDOUT_RMSE_METRIC in run.data.metrics

    profile = registry.load_profile(uri, result.version)
    assert profile.profile_id == result.profile_id
    train = base_split[0].sample(n=3000, random_state=settings.seed)
    for name in FEATURE_NAMES:
        series = profile.features[name]
        expected = bin_fractions(train[name].to_numpy(), np.array(series.bin_edges))
        assert series.bin_fractions == pytest.approx(list(expected))

    model = registry.load_model(uri, result.version)
    preds = model.predict(train.loc[:, list(FEATURE_NAMES)].head(3))
    assert np.all((preds > 0.1) & (preds < 10))  # 100k-USD units


def test_bootstrap_is_idempotent_unless_forced(
    settings: TrainingSettings, fast: ModelParams
) -> None:
    first = bootstrap(settings, sample_rows=1000, params=fast)
    second = bootstrap(settings, sample_rows=1000, params=fast)
    assert not second.created
    assert second.version == first.version
    assert "already registered" in second.message

    forced = bootstrap(settings, force=True, sample_rows=1000, params=fast)
    assert forced.created and forced.version != first.version
    champion = registry.get_champion(settings.mlflow_tracking_uri)
    assert champion is not None and champion.version == forced.version


def test_register_version_is_once_per_run(settings: TrainingSettings, fast: ModelParams) -> None:
    result = bootstrap(settings, sample_rows=1000, params=fast)
    uri = settings.mlflow_tracking_uri
    info = registry.get_version(uri, result.version)
    again = registry.register_version(uri, run_id=result.run_id, model_uri=info.source)
    assert again.version == result.version
    versions = registry.client(uri).search_model_versions(f"name = '{MODEL_NAME}'")
    assert len(versions) == 1


def test_alias_is_the_contract_name(settings: TrainingSettings, fast: ModelParams) -> None:
    result = bootstrap(settings, sample_rows=1000, params=fast)
    mv = registry.client(settings.mlflow_tracking_uri).get_model_version_by_alias(
        MODEL_NAME, CHAMPION_ALIAS
    )
    assert str(mv.version) == result.version


def _alias(uri: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(registry.client(uri).get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException:
        return None


def test_promote_starts_the_watch_then_moves_the_champion(
    settings: TrainingSettings, fast: ModelParams
) -> None:
    uri = settings.mlflow_tracking_uri
    old = bootstrap(settings, sample_rows=1000, params=fast).version
    new = bootstrap(settings, force=True, sample_rows=1000, params=fast).version
    registry.set_champion(uri, old)
    before = utcnow()
    until = registry.promote(uri, new, previous=old, watch_s=600)
    assert (_alias(uri, CHAMPION_ALIAS), _alias(uri, SHADOW_ALIAS)) == (new, old)
    tags = registry.get_version(uri, new).tags
    assert tags[WATCH_UNTIL_TAG] == until
    end = watch_until(tags)
    assert end is not None
    assert before + timedelta(seconds=599) <= end <= utcnow() + timedelta(seconds=601)

    assert registry.end_watch(uri) is True
    assert _alias(uri, SHADOW_ALIAS) is None
    assert registry.end_watch(uri) is False  # already gone: nothing to do, no error


def test_promote_without_a_watch_removes_a_stale_shadow(
    settings: TrainingSettings, fast: ModelParams
) -> None:
    uri = settings.mlflow_tracking_uri
    old = bootstrap(settings, sample_rows=1000, params=fast).version
    new = bootstrap(settings, force=True, sample_rows=1000, params=fast).version
    registry.set_champion(uri, old)
    registry.promote(uri, new, previous=old, watch_s=600)
    assert registry.promote(uri, old, previous=new, watch_s=0) is None
    assert (_alias(uri, CHAMPION_ALIAS), _alias(uri, SHADOW_ALIAS)) == (old, None)
