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

from .tokens import MAX_TOKEN_CHARS

#: Request ids in bodies (feedback): printable, header-safe, bounded. The ids we issue are
#: narrower (``request_ids.ISSUED_ID_PATTERN``, plus ``-<row>`` in a batch).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
#: Largest plausible house value in USD accepted as feedback (the data caps at 500,001).
MAX_ACTUAL_USD = 100 * TARGET_SCALE_USD * 100

EXAMPLE_REQUEST_ID = "5d1c0a6f2b8e4c3f9a7d6e5b4c3a2f1e"
EXAMPLE_TOKEN = "v1.1796000000.Nw.mWBQt5rbEH9T8mtnj0VxJJ8yl1fp4ElWGNHD0vK2QCI"

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN, examples=[EXAMPLE_REQUEST_ID])]
FeedbackToken = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TOKEN_CHARS,
        description="send it back with POST /feedback to label this prediction",
        examples=[EXAMPLE_TOKEN],
    ),
]


class PredictResponse(BaseModel):
    """One prediction: the value in USD and the model version that made it."""

    request_id: RequestId
    median_house_value: float = Field(
        description="predicted median house value, USD", examples=[452_600.0]
    )
    model_name: str
    model_version: str
    feedback_token: FeedbackToken


class BatchPrediction(BaseModel):
    request_id: RequestId = Field(description="<batch request id>-<row index>")
    median_house_value: float
    feedback_token: FeedbackToken


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
    """Ground truth for an earlier prediction, in USD, with the token its answer carried."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "request_id": EXAMPLE_REQUEST_ID,
                    "actual": 452_600.0,
                    "feedback_token": EXAMPLE_TOKEN,
                }
            ]
        },
    )

    request_id: RequestId
    feedback_token: FeedbackToken
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
    shadow_model_version: str | None = Field(
        default=None,
        description="the previous champion this replica also asks during a post-promotion"
        " watch (its answers go on the events only); null outside a watch",
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "body over the size limit"},
    415: {"model": ErrorBody, "description": "body is not JSON"},
    422: {"model": ErrorBody, "description": "a field breaks a rule; the message names it"},
    503: {"model": ErrorBody, "description": "no model loaded yet"},
}

FEEDBACK_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "`missing_api_key`: no X-API-Key header"},
    403: {
        "model": ErrorBody,
        "description": "`invalid_api_key`: not a producer's key; `invalid_feedback_token`: "
        "not a token we issued for this request_id (an id never issued has none)",
    },
    409: {"model": ErrorBody, "description": "`already_labelled`: the first label stands"},
    410: {"model": ErrorBody, "description": "`feedback_token_expired`: past its lifetime"},
    413: ERROR_RESPONSES[413],
    415: ERROR_RESPONSES[415],
    422: ERROR_RESPONSES[422],
    503: {
        "model": ErrorBody,
        "description": "`label_store_unavailable`: Redis did not answer; retry",
    },
}


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for routes that parse their body themselves (for speed)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
