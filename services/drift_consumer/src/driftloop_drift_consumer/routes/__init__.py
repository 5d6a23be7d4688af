"""HTTP routes, one module per concern; :data:`api_router` includes them all."""

from fastapi import APIRouter

from . import health, reports, thresholds

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(thresholds.router)
api_router.include_router(reports.router)

__all__ = ["api_router"]
