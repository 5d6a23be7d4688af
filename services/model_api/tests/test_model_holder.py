"""Column mapping against the fitted names, smoke check at load, and the atomic swap."""

from __future__ import annotations

import pytest

from driftloop_contracts import EXAMPLE_FEATURES, FEATURE_NAMES, utcnow
from driftloop_model_api.errors import ModelLoadError, ModelNotReady
from driftloop_model_api.model_holder import LoadedModel, ModelHolder, column_order

from .conftest import loaded, tiny_estimator


def test_source_and_api_column_names_give_the_same_prediction() -> None:
    row = [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]
    a = LoadedModel.build(
        name="m",
        version="1",
        run_id="r",
        loaded_at=utcnow(),
        profile_id=None,
        estimator=tiny_estimator(source_columns=True),
    )
    b = LoadedModel.build(
        name="m",
        version="1",
        run_id="r",
        loaded_at=utcnow(),
        profile_id=None,
        estimator=tiny_estimator(source_columns=False),
    )
    assert a.predict_usd([row]) == pytest.approx(b.predict_usd([row]))


def test_unknown_fitted_column_is_refused_at_load() -> None:
    class Odd:
        feature_names_in_ = ["MedInc", "Shoe size"]

    with pytest.raises(ModelLoadError, match="Shoe size"):
        column_order(Odd())


def test_model_that_cannot_predict_is_refused_at_load() -> None:
    class Broken:
        def predict(self, X: object) -> object:
            raise RuntimeError("boom")

    with pytest.raises(ModelLoadError, match="smoke"):
        LoadedModel.build(
            name="m",
            version="9",
            run_id="r",
            loaded_at=utcnow(),
            profile_id=None,
            estimator=Broken(),
        )


def test_swap_keeps_the_old_model_for_whoever_holds_it() -> None:
    holder = ModelHolder()
    with pytest.raises(ModelNotReady):
        holder.require()
    old = loaded("1", 1.0)
    holder.swap(old)
    in_flight = holder.require()
    previous = holder.swap(loaded("2", 2.0))
    assert previous is old and in_flight is old
    row = [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]
    assert in_flight.predict_usd([row]) != holder.require().predict_usd([row])
    assert holder.require().version == "2"
