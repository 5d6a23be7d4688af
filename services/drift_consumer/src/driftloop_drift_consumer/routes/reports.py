"""``/reports`` (JSON list of Evidently reports), ``/reports/latest`` and ``/reports/{name}``
(the HTML); an unknown name is a 404 in the shared error body."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from ..deps import ReportStoreDep

router = APIRouter(tags=["reports"])


@router.get("/reports")
async def list_reports(store: ReportStoreDep) -> dict[str, Any]:
    items = [{**asdict(r), "url": f"/reports/{r.name}"} for r in store.list()]
    return {"latest": "/reports/latest" if items else None, "reports": items}


@router.get("/reports/{name}", include_in_schema=False)
async def get_report(name: str, store: ReportStoreDep) -> FileResponse:
    path = store.path(name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no report named {name!r}")
    return FileResponse(path, media_type="text/html")
