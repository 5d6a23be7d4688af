"""``POST /feedback``: ground truth for an earlier prediction, published on ``feedback``."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ..deps import RuntimeDep
from ..inputs import parse_json, read_body
from ..schemas import ERROR_RESPONSES, FeedbackRequest, FeedbackResponse, json_body_doc

router = APIRouter(tags=["feedback"])


@router.post(
    "/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FeedbackResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_doc(FeedbackRequest),
    summary="Report the true value (USD) for a request id",
)
async def feedback(request: Request, runtime: RuntimeDep) -> FeedbackResponse:
    """Accepted (202) once buffered for the ``feedback`` topic, keyed by ``request_id``."""
    body = await read_body(request, runtime.settings.max_body_bytes)
    item = parse_json(FeedbackRequest, body)
    runtime.service.feedback(item.request_id, item.actual)
    return FeedbackResponse(request_id=item.request_id)
