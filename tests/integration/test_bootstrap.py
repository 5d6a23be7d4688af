"""Bootstrap against the real MLflow server of the local stack.

The registered model has alias ``champion``; the bootstrap version carries a reference profile
whose bins match its training data, holdout metrics within sane bounds, and a loadable model;
a second bootstrap changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftloop_contracts import (
    CHAMPION_ALIAS,
    EXPERIMENT_NAME,
    FEATURE_NAMES,
    HOLDOUT_MAE_METRIC,
    HOLDOUT_R2_METRIC,
    HOLDOUT_RMSE_METRIC,
    MODEL_NAME,
    TARGET_SCALE_USD,
)
from driftloop_training import registry
from driftloop_training.bootstrap import TAG_TRAIN_ROWS, bootstrap
from driftloop_training.data import load_base_data, split_base
from driftloop_training.profile import bin_fractions
from driftloop_training.settings import TrainingSettings
from driftloop_training.train import features_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def training(stack: Any) -> TrainingSettings:
    return stack.training_settings()


@pytest.fixture(scope="module")
def bootstrap_version(training: TrainingSettings, champion: str) -> registry.VersionInfo:
    """A version registered by a full bootstrap (all base training rows).

    The alias may since have moved on (promoted challengers, or small models that other tests
    register with ``sample_rows``), so the version is looked up by its tags. On a fresh stack
    the ``champion`` fixture made it; if a reused stack has none, one is registered here and
    the alias is put back where it was.
    """
    uri = training.mlflow_tracking_uri
    full_rows = str(len(_base_split(training)[0]))
    found = registry.search_versions(
        uri, {registry.TAG_DECISION: "bootstrap", TAG_TRAIN_ROWS: full_rows}
    )
    if found:
        return found[0]
    before = registry.get_champion(uri)
    result = bootstrap(training, force=True)
    if before is not None:
        registry.set_champion(uri, before.version)
    return registry.get_version(uri, result.version)


def _base_split(training: TrainingSettings) -> tuple[Any, Any]:
    return split_base(
        load_base_data(download_if_missing=False),
        holdout_share=training.base_holdout_share,
        seed=training.seed,
    )


def test_registered_model_has_a_champion_alias(training: TrainingSettings, champion: str) -> None:
    client = registry.client(training.mlflow_tracking_uri)
    model = client.get_registered_model(MODEL_NAME)
    assert CHAMPION_ALIAS in model.aliases
    current = registry.get_champion(training.mlflow_tracking_uri)
    assert current is not None and current.run_id
    run = client.get_run(current.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT_NAME


def test_bootstrap_metrics_are_sane(
    training: TrainingSettings, bootstrap_version: registry.VersionInfo
) -> None:
    run = registry.client(training.mlflow_tracking_uri).get_run(bootstrap_version.run_id)
    metrics = run.data.metrics
    assert metrics[HOLDOUT_R2_METRIC] > 0.75
    assert 20_000 < metrics[HOLDOUT_RMSE_METRIC] < 70_000  # USD, not 100k units
    assert 10_000 < metrics[HOLDOUT_MAE_METRIC] < metrics[HOLDOUT_RMSE_METRIC]
    assert run.data.params["model.max_iter"]
    assert run.data.params["data.train_rows"] == str(
        round(20640 * (1 - training.base_holdout_share))
    )


def test_profile_bins_match_the_training_data(
    training: TrainingSettings, bootstrap_version: registry.VersionInfo
) -> None:
    uri = training.mlflow_tracking_uri
    profile = registry.load_profile(uri, bootstrap_version.version)
    train, _ = _base_split(training)
    assert profile.n_rows == len(train)
    assert profile.profile_id == bootstrap_version.tags["driftloop.profile_id"]
    assert bootstrap_version.tags[TAG_TRAIN_ROWS] == str(len(train))
    for name in FEATURE_NAMES:
        series = profile.features[name]
        values = train[name].to_numpy()
        assert series.count == len(train)
        assert series.mean == pytest.approx(values.mean())
        expected = bin_fractions(values, np.array(series.bin_edges))
        assert series.bin_fractions == pytest.approx(list(expected))
        assert series.bin_edges == pytest.approx(
            list(np.unique(np.quantile(values, np.arange(1, 10) / 10)))
        )
        assert len(series.sample) == 5000 and series.sample == sorted(series.sample)

    # The prediction series is the model's own output (USD) on the same rows.
    model = registry.load_model(uri, bootstrap_version.version)
    preds = model.predict(features_of(train)) * TARGET_SCALE_USD
    series = profile.prediction
    assert series.mean == pytest.approx(preds.mean(), rel=1e-6)
    assert series.bin_fractions == pytest.approx(
        list(bin_fractions(preds, np.array(series.bin_edges)))
    )


def test_model_loads_and_predicts_in_100k_units(
    training: TrainingSettings, bootstrap_version: registry.VersionInfo
) -> None:
    model = registry.load_model(training.mlflow_tracking_uri, bootstrap_version.version)
    _, holdout = _base_split(training)
    preds = model.predict(features_of(holdout.head(100)))
    assert 0.1 < float(np.median(preds)) < 6.0


def test_second_bootstrap_changes_nothing(training: TrainingSettings, champion: str) -> None:
    uri = training.mlflow_tracking_uri
    client = registry.client(uri)
    before = {v.version for v in client.search_model_versions(f"name = '{MODEL_NAME}'")}
    current = registry.get_champion(uri)
    result = bootstrap(training)
    assert not result.created
    assert current is not None and result.version == current.version
    assert "already registered" in result.message
    after = {v.version for v in client.search_model_versions(f"name = '{MODEL_NAME}'")}
    assert after == before
