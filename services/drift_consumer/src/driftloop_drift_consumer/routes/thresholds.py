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
    """Each configured ``value`` with the ``applied`` one (widened for a small reference)."""
    if loop is None:
        return {"thresholds": []}
    applied = loop.applied
    return {
        "thresholds": [
            {**asdict(r), "applied": applied(r.statistic, r.feature)}
            for r in loop.thresholds.rows()
        ]
    }
