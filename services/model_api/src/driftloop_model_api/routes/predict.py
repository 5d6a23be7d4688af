"""``POST /predict`` and ``POST /predict/batch``: parse, predict, reply.

Bodies are parsed from raw bytes (see :mod:`driftloop_model_api.inputs`); the OpenAPI schema
is declared explicitly so the docs still show the feature fields, bounds and examples.
"""

from __future__ import annotations

from time import perf_counter

from fastapi import APIRouter, Request, Response

from driftloop_contracts import HouseFeatures

from ..deps import RuntimeDep
from ..inputs import parse_json, read_body, request_id_from
from ..schemas import (
    ERROR_RESPONSES,
    BatchPrediction,
    BatchPredictResponse,
    PredictResponse,
    batch_request_model,
    json_body_doc,
)

router = APIRouter(tags=["predict"])


def _json(body: bytes, request_id: str, model_version: str) -> Response:
    return Response(
        content=body,
        media_type="application/json",
        headers={"X-Request-ID": request_id, "X-Model-Version": model_version},
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_doc(HouseFeatures),
    summary="Predict the median house value (USD) of one block",
)
async def predict(request: Request, runtime: RuntimeDep) -> Response:
    """Eight features as JSON numbers in; the value in USD and the serving version out.

    ``X-Request-ID`` is honoured (nginx sets one) and echoed; the prediction is published on
    the ``predictions`` topic under that id. Extra fields, strings, NaN/Infinity and values
    outside the physical bounds are refused with a 422 naming the field.
    """
    started = perf_counter()
    request_id = request_id_from(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    features = parse_json(HouseFeatures, body)
    model, value = await runtime.service.predict_one(request_id, features.as_row(), started)
    reply = PredictResponse(
        request_id=request_id,
        median_house_value=value,
        model_name=model.name,
        model_version=model.version,
    )
    return _json(reply.model_dump_json().encode(), request_id, model.version)


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_doc(batch_request_model(1_000)),
    summary="Predict many blocks in one call (bounded row count)",
)
async def predict_batch(request: Request, runtime: RuntimeDep) -> Response:
    """``{"rows": [features, ...]}``; each row gets ``<request_id>-<index>`` and its own event."""
    started = perf_counter()
    request_id = request_id_from(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    batch = parse_json(batch_request_model(runtime.settings.batch_max_rows), body)
    rows = [row.as_row() for row in batch.rows]
    model, results = runtime.service.predict_many(request_id, rows, started)
    reply = BatchPredictResponse(
        request_id=request_id,
        model_name=model.name,
        model_version=model.version,
        predictions=[BatchPrediction(request_id=rid, median_house_value=v) for rid, v in results],
    )
    return _json(reply.model_dump_json().encode(), request_id, model.version)
