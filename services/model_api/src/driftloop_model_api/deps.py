"""Request dependencies as ``Annotated`` aliases; routes declare what they need by type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .label_gate import LabelGate
from .metrics import Metrics
from .publisher import EventPublisher
from .reloader import Reloader
from .serving import PredictionService
from .settings import ModelApiSettings


@dataclass
class Runtime:
    """Everything the lifespan builds; stored on ``app.state.runtime``."""

    settings: ModelApiSettings
    metrics: Metrics
    service: PredictionService
    publisher: EventPublisher
    reloader: Reloader
    labels: LabelGate


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _runtime_dependency(request: Request) -> Runtime:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hand-off per request that cost ~0.4 ms of CPU per ``/predict`` (docs/performance.md,
    "Serving")."""
    return get_runtime(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]
