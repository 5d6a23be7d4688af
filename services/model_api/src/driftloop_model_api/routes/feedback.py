"""``POST /feedback``: ground truth for a prediction we issued, from a label producer.

The checks and their order are in :mod:`driftloop_model_api.label_gate`; every refusal is
counted here, in ``driftloop_feedback_rejected_total{reason}`` (reason = the error code).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Security, status
from fastapi.security import APIKeyHeader

from driftloop_contracts import API_KEY_HEADER

from ..deps import RuntimeDep
from ..errors import InvalidInput, MissingFeedbackToken, ModelApiError
from ..inputs import parse_json, read_body
from ..schemas import (
    FEEDBACK_ERROR_RESPONSES,
    FeedbackRequest,
    FeedbackResponse,
    json_body_doc,
)

router = APIRouter(tags=["feedback"])

_NO_TOKEN = (("feedback_token", "missing"),)


def _parse_label(body: bytes) -> FeedbackRequest:
    """The label, or 422 naming every broken rule; a body whose only fault is a missing token is
    a well-formed label without proof, refused as such (403 ``invalid_feedback_token``)."""
    try:
        return parse_json(FeedbackRequest, body)
    except InvalidInput as exc:
        if tuple((p.field, p.rule) for p in exc.problems) == _NO_TOKEN:
            raise MissingFeedbackToken() from None
        raise


#: Declared as a security scheme so /docs offers "Authorize"; checked by the gate (auto_error
#: off), which answers in our error shape and counts the refusal.
ApiKey = Annotated[
    str | None,
    Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False, scheme_name="LabelProducerKey")),
]


@router.post(
    "/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FeedbackResponse,
    responses=FEEDBACK_ERROR_RESPONSES,
    openapi_extra=json_body_doc(FeedbackRequest),
    summary="Report the true value (USD) of a prediction, with its feedback_token",
)
async def feedback(request: Request, runtime: RuntimeDep, api_key: ApiKey) -> FeedbackResponse:
    """Accepted (202) once buffered for the ``feedback`` topic, keyed by ``request_id``.

    Needs a label producer's ``X-API-Key`` (401/403) and the ``feedback_token`` of the
    prediction's answer (403 if not ours for this id, 410 once expired); the first label of an
    id wins (409 for any later one). See docs/api.md, "Feedback".
    """
    gate = runtime.labels
    try:
        gate.authenticate(api_key)
        body = await read_body(request, runtime.settings.max_body_bytes)
        item = _parse_label(body)
        await gate.admit(item.request_id, item.feedback_token, item.actual)
    except ModelApiError as exc:
        runtime.metrics.feedback_rejected(exc.code)
        raise
    runtime.service.feedback(item.request_id, item.actual)
    return FeedbackResponse(request_id=item.request_id)
