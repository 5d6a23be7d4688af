"""Request dependencies: what the routes read, set on ``app.state`` by :mod:`.app`.

The consumer loop appears on ``app.state.loop`` once the lifespan has built it; before that
(and in the instant after shutdown) routes see ``None`` and answer accordingly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .loop import DriftLoop
from .reports import ReportStore


def get_loop(request: Request) -> DriftLoop | None:
    loop: DriftLoop | None = getattr(request.app.state, "loop", None)
    return loop


def get_report_store(request: Request) -> ReportStore:
    store: ReportStore = request.app.state.report_store
    return store


LoopDep = Annotated[DriftLoop | None, Depends(get_loop)]
ReportStoreDep = Annotated[ReportStore, Depends(get_report_store)]
