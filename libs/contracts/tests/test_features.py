"""Every bound of the feature schema rejects an out-of-range value, naming the field."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from driftloop_contracts import EXAMPLE_FEATURES, FEATURE_NAMES, FEATURE_SPECS, HouseFeatures


def error_fields(exc: ValidationError) -> set[str]:
    return {str(e["loc"][0]) for e in exc.errors()}


def test_example_is_valid_and_ordered() -> None:
    features = HouseFeatures(**EXAMPLE_FEATURES)
    assert features.as_row() == [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]


@pytest.mark.parametrize("spec", FEATURE_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("side", ["below", "above"])
def test_each_bound_rejects_and_names_the_field(spec, side) -> None:
    span = max(abs(spec.le - spec.ge), 1.0)
    value = spec.ge - 0.01 * span if side == "below" else spec.le + 0.01 * span
    with pytest.raises(ValidationError) as info:
        HouseFeatures(**{**EXAMPLE_FEATURES, spec.name: value})
    assert error_fields(info.value) == {spec.name}
    assert ("greater than" if side == "below" else "less than") in str(info.value)


@pytest.mark.parametrize("spec", FEATURE_SPECS, ids=lambda s: s.name)
def test_bounds_themselves_are_accepted(spec) -> None:
    HouseFeatures(**{**EXAMPLE_FEATURES, spec.name: spec.ge})
    HouseFeatures(**{**EXAMPLE_FEATURES, spec.name: spec.le})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1.0", None, True, [1.0]])
def test_non_finite_and_non_numbers_are_rejected(bad) -> None:
    with pytest.raises(ValidationError) as info:
        HouseFeatures(**{**EXAMPLE_FEATURES, "average_rooms": bad})
    assert error_fields(info.value) == {"average_rooms"}


def test_json_nan_literal_is_rejected() -> None:
    body = json.dumps(EXAMPLE_FEATURES).replace("6.984127", "NaN")
    with pytest.raises(ValidationError) as info:
        HouseFeatures.model_validate_json(body)
    assert "average_rooms" in str(info.value)


def test_missing_and_extra_fields_are_named() -> None:
    body = {k: v for k, v in EXAMPLE_FEATURES.items() if k != "block_latitude"}
    body["bedrooms"] = 3
    with pytest.raises(ValidationError) as info:
        HouseFeatures(**body)
    assert error_fields(info.value) == {"block_latitude", "bedrooms"}


def test_integers_are_accepted_as_numbers() -> None:
    assert (
        HouseFeatures(**{**EXAMPLE_FEATURES, "median_house_age_in_block": 41}).as_row()[1] == 41.0
    )
