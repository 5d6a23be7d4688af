"""HTTP routes, one module per concern; :data:`api_router` includes them all."""

from fastapi import APIRouter

from . import feedback, health, model, predict

api_router = APIRouter()
api_router.include_router(predict.router)
api_router.include_router(feedback.router)
api_router.include_router(model.router)
api_router.include_router(health.router)

__all__ = ["api_router"]
