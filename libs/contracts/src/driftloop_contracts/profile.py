"""The reference profile: the drift baseline that belongs to one model version.

Training writes it (as an MLflow artifact next to the model); the drift consumer reads it.
Quantile bin edges are shared by PSI and by additive bin counts across consumer instances.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PROFILE_SCHEMA_VERSION = 1
#: Most rows a series' ``sample`` holds (evenly spaced order statistics of the profiled data).
REFERENCE_SAMPLE_ROWS = 5000


class SeriesProfile(BaseModel):
    """Reference distribution of one feature (or of the prediction)."""

    model_config = ConfigDict(frozen=True)

    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float] = Field(description="p01..p99 summary quantiles")
    bin_edges: list[float] = Field(
        description="inner quantile edges; bins are (-inf,e0],...,(en,inf)"
    )
    bin_fractions: list[float] = Field(description="reference share per bin, len(bin_edges)+1")
    sample: list[float] = Field(description="sorted reference sample for KS and Wasserstein")
    scale: float | None = Field(
        default=None,
        description="spread the Wasserstein distance is divided by: the standard deviation of "
        "the model's whole training frame when the sample describes fewer rows (a post-incident "
        "regime); None: the sample's own standard deviation",
    )


class ReferenceProfile(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = PROFILE_SCHEMA_VERSION
    profile_id: str
    created_at: str
    n_rows: int
    features: dict[str, SeriesProfile]
    prediction: SeriesProfile
