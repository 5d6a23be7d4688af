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


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
