"""The California-housing feature schema: API names, source columns, units and physical bounds.

Everything that names a feature (the API body, events, training frames, drift gauges,
load-test generators) imports it from here, so a rename happens in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: its API name, the scikit-learn column it comes from and its bounds."""

    name: str
    source_column: str
    description: str
    ge: float
    le: float
    example: float


FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "median_income_in_block",
        "MedInc",
        "Median income in the block group, in tens of thousands of USD",
        0.0,
        100.0,
        8.3252,
    ),
    FeatureSpec(
        "median_house_age_in_block",
        "HouseAge",
        "Median house age in the block group, in years",
        0.0,
        200.0,
        41.0,
    ),
    FeatureSpec(
        "average_rooms", "AveRooms", "Average number of rooms per household", 0.1, 1000.0, 6.984127
    ),
    FeatureSpec(
        "average_bedrooms",
        "AveBedrms",
        "Average number of bedrooms per household",
        0.0,
        500.0,
        1.02381,
    ),
    FeatureSpec(
        "population_per_block", "Population", "Block group population", 0.0, 1_000_000.0, 322.0
    ),
    FeatureSpec(
        "average_house_occupancy",
        "AveOccup",
        "Average number of household members",
        0.1,
        10_000.0,
        2.555556,
    ),
    FeatureSpec(
        "block_latitude",
        "Latitude",
        "Block group latitude (California spans about 32.5 to 42.0)",
        32.0,
        42.5,
        37.88,
    ),
    FeatureSpec(
        "block_longitude",
        "Longitude",
        "Block group longitude (California spans about -124.5 to -114.1)",
        -124.6,
        -114.0,
        -122.23,
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FEATURE_SPECS)
SOURCE_TO_FEATURE: dict[str, str] = {spec.source_column: spec.name for spec in FEATURE_SPECS}
FEATURE_BY_NAME: dict[str, FeatureSpec] = {spec.name: spec for spec in FEATURE_SPECS}

TARGET_NAME = "median_house_value"
TARGET_SOURCE_COLUMN = "MedHouseVal"
#: The model predicts in the data's unit (100,000 USD); the API and events speak USD.
TARGET_SCALE_USD = 100_000.0
#: Name used for the prediction's own drift series, next to the feature names.
PREDICTION_SERIES = "prediction"
#: The series a drift window is measured on, in column order of every value matrix.
SERIES_NAMES: tuple[str, ...] = (*FEATURE_NAMES, PREDICTION_SERIES)


def _field(spec: FeatureSpec) -> Any:
    return Field(
        ...,
        ge=spec.ge,
        le=spec.le,
        description=f"{spec.description}. Allowed range [{spec.ge}, {spec.le}].",
        examples=[spec.example],
        allow_inf_nan=False,
        strict=True,
    )


class _FeaturesBase(BaseModel):
    # Extra fields are refused so a misspelt feature is an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True)

    def as_row(self) -> list[float]:
        """The values in model column order."""
        return [float(getattr(self, name)) for name in FEATURE_NAMES]


#: ``name -> (type, FieldInfo)`` per feature. Typed ``Any`` because a type checker matches a
#: ``**mapping`` against every keyword parameter of ``create_model`` (``__config__``...) too.
_FIELD_DEFINITIONS: dict[str, Any] = {spec.name: (float, _field(spec)) for spec in FEATURE_SPECS}
HouseFeatures: type[_FeaturesBase] = create_model(
    "HouseFeatures",
    __base__=_FeaturesBase,
    __doc__="The eight inputs of the house-price model, validated against physical bounds.",
    **_FIELD_DEFINITIONS,
)
HouseFeatures.model_config["json_schema_extra"] = {
    "examples": [{spec.name: spec.example for spec in FEATURE_SPECS}]
}
HouseFeatures.model_rebuild(force=True)

EXAMPLE_FEATURES: dict[str, float] = {spec.name: spec.example for spec in FEATURE_SPECS}
