"""``GET /model``: what this replica is serving right now."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import RuntimeDep
from ..schemas import ERROR_RESPONSES, ModelInfoResponse

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelInfoResponse, responses={503: ERROR_RESPONSES[503]})
async def model_info(runtime: RuntimeDep) -> ModelInfoResponse:
    """Name, version, run id, load time and reference-profile id of the served model, and
    the shadow's version during a post-promotion watch."""
    model = runtime.service.holder.require()
    shadow = runtime.service.shadow.model if runtime.service.shadow is not None else None
    return ModelInfoResponse(
        model_name=model.name,
        model_version=model.version,
        run_id=model.run_id,
        loaded_at=model.loaded_at,
        reference_profile_id=model.profile_id,
        replica_id=runtime.settings.replica_id,
        shadow_model_version=shadow.version if shadow is not None else None,
    )
