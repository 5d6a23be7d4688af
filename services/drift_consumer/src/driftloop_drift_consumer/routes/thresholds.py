"""``GET /thresholds``: the effective thresholds, read-only (change them with
``driftloop thresholds``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from ..deps import LoopDep

router = APIRouter(tags=["thresholds"])


@router.get("/thresholds")
async def thresholds(loop: LoopDep) -> dict[str, Any]:
    rows = loop.thresholds.rows() if loop else []
    return {"thresholds": [asdict(r) for r in rows]}
