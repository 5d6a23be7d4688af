"""``POST /predict`` and ``POST /predict/batch``: parse, predict, reply.

Bodies are parsed from raw bytes (see :mod:`driftloop_model_api.inputs`); the OpenAPI schema
is declared explicitly so the docs still show the feature fields, bounds and examples.
"""

from __future__ import annotations

from time import perf_counter, time

from fastapi import APIRouter, Request, Response

from driftloop_contracts import CORRELATION_ID_HEADER, REQUEST_ID_HEADER, HouseFeatures

from ..deps import RuntimeDep
from ..inputs import parse_json, read_body
from ..request_ids import correlation_id, issued_request_id
from ..schemas import (
    ERROR_RESPONSES,
    BatchPrediction,
    BatchPredictResponse,
    PredictResponse,
    batch_request_model,
    json_body_doc,
)

router = APIRouter(tags=["predict"])


def _json(body: bytes, request: Request, request_id: str, model_version: str) -> Response:
    headers = {REQUEST_ID_HEADER: request_id, "X-Model-Version": model_version}
    if (echo := correlation_id(request, request_id)) is not None:
        headers[CORRELATION_ID_HEADER] = echo
    return Response(content=body, media_type="application/json", headers=headers)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_doc(HouseFeatures),
    summary="Predict the median house value (USD) of one block",
)
async def predict(request: Request, runtime: RuntimeDep) -> Response:
    """Eight features as JSON numbers in; the value in USD, the serving version and the
    ``feedback_token`` (for ``POST /feedback``) out.

    The request id is ours: nginx's ``X-Request-ID``, or one the replica mints; a client's own
    id comes back in ``X-Correlation-ID`` only. The prediction is published on the
    ``predictions`` topic under the request id. Extra fields, strings, NaN/Infinity and values
    outside the physical bounds are refused with a 422 naming the field.
    """
    started = perf_counter()
    request_id = issued_request_id(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    features = parse_json(HouseFeatures, body)
    model, value = await runtime.service.predict_one(request_id, features.as_row(), started)
    reply = PredictResponse(
        request_id=request_id,
        median_house_value=value,
        model_name=model.name,
        model_version=model.version,
        feedback_token=runtime.labels.tokens.issue(request_id, model.version),
    )
    return _json(reply.model_dump_json().encode(), request, request_id, model.version)


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_doc(batch_request_model(1_000)),
    summary="Predict many blocks in one call (bounded row count)",
)
async def predict_batch(request: Request, runtime: RuntimeDep) -> Response:
    """``{"rows": [features, ...]}``; each row gets ``<request_id>-<index>``, its own event and
    its own ``feedback_token``."""
    started = perf_counter()
    request_id = issued_request_id(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    batch = parse_json(batch_request_model(runtime.settings.batch_max_rows), body)
    rows = [row.as_row() for row in batch.rows]
    model, results = runtime.service.predict_many(request_id, rows, started)
    issue, issued_at = runtime.labels.tokens.issue, int(time())
    reply = BatchPredictResponse(
        request_id=request_id,
        model_name=model.name,
        model_version=model.version,
        predictions=[
            BatchPrediction(
                request_id=rid,
                median_house_value=v,
                feedback_token=issue(rid, model.version, issued_at),
            )
            for rid, v in results
        ],
    )
    return _json(reply.model_dump_json().encode(), request, request_id, model.version)
