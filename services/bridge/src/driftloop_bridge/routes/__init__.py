"""HTTP routes; :data:`api_router` includes them all."""

from fastapi import APIRouter

from . import brake, decisions, health, webhook

api_router = APIRouter()
api_router.include_router(webhook.router)
api_router.include_router(decisions.router)
api_router.include_router(brake.router)
api_router.include_router(health.router)

__all__ = ["api_router"]
