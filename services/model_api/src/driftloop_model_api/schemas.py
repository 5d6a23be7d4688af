"""HTTP bodies of the model API (``<Thing>Request`` / ``<Thing>Response``).

Features come from :class:`driftloop_contracts.HouseFeatures`, so names, bounds and the
no-extra-fields rule are defined once. Extra fields are refused (a misspelt feature is an
error, not a silent default); numbers must be JSON numbers (``"8.3"`` is refused, so a client
bug that sends strings is caught instead of coerced); NaN and Infinity are refused.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from driftloop_contracts import EXAMPLE_FEATURES, TARGET_SCALE_USD, HouseFeatures
from driftloop_service import ErrorBody

#: Request ids we accept from clients (and nginx): printable, header-safe, bounded.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
#: Largest plausible house value in USD accepted as feedback (the data caps at 500,001).
MAX_ACTUAL_USD = 100 * TARGET_SCALE_USD * 100

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN, examples=["3f2c9a4e-demo"])]


class PredictResponse(BaseModel):
    """One prediction: the value in USD and the model version that made it."""

    request_id: RequestId
    median_house_value: float = Field(
        description="predicted median house value, USD", examples=[452_600.0]
    )
    model_name: str
    model_version: str


class BatchPrediction(BaseModel):
    request_id: RequestId = Field(description="<batch request id>-<row index>")
    median_house_value: float


class BatchPredictResponse(BaseModel):
    request_id: RequestId
    model_name: str
    model_version: str
    predictions: list[BatchPrediction]


class BatchPredictRequest(BaseModel):
    """``{"rows": [<features>, ...]}``; the row limit is a setting (:func:`batch_request_model`)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"rows": [{**EXAMPLE_FEATURES}]}]},
    )

    rows: list[HouseFeatures] = Field(..., min_length=1)


@cache
def batch_request_model(max_rows: int) -> type[BatchPredictRequest]:
    """:class:`BatchPredictRequest` with at most ``max_rows`` rows (a setting)."""
    return create_model(
        "BatchPredictRequest",
        __base__=BatchPredictRequest,
        rows=(list[HouseFeatures], Field(..., min_length=1, max_length=max_rows)),
    )


class FeedbackRequest(BaseModel):
    """Ground truth for an earlier prediction, in USD."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"request_id": "3f2c9a4e-demo", "actual": 452_600.0}]},
    )

    request_id: RequestId
    actual: float = Field(
        ...,
        ge=0.0,
        le=MAX_ACTUAL_USD,
        allow_inf_nan=False,
        strict=True,
        description="true median house value, USD",
    )


class FeedbackResponse(BaseModel):
    request_id: str
    status: str = "accepted"


class ModelInfoResponse(BaseModel):
    """What this replica is serving right now."""

    model_name: str
    model_version: str
    run_id: str
    loaded_at: datetime
    reference_profile_id: str | None
    replica_id: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "body over the size limit"},
    415: {"model": ErrorBody, "description": "body is not JSON"},
    422: {"model": ErrorBody, "description": "a field breaks a rule; the message names it"},
    503: {"model": ErrorBody, "description": "no model loaded yet"},
}


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for routes that parse their body themselves (for speed)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
