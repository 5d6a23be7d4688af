"""Dashboard JSON checked against grafana-foundation-sdk's model of Grafana's dashboard schema.

The SDK's models decode a dashboard the way Grafana's schema describes it (panels by type,
targets by datasource, options and field config by panel plugin) and encode it back. Whatever
in the file does not survive that round trip is a key the schema does not know -- a misspelt
``gridpos``, which Grafana would silently ignore -- or a value of the wrong shape. Keys the
round trip *adds* are the schema's defaults and are fine.

A few rules of the schema the decoder does not enforce are checked on top: enumerated values
(panel and variable types, a query's editor mode and format, ...) are members of the SDK's
enums, panels fit the 24-column grid, every data panel has a query, and every query names a
provisioned kind of datasource and is not empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models.dashboard import Dashboard

from .panels import GRID_WIDTH, UNMODELLED_ANNOTATION_KEYS, register_influx_query
from .queries import iter_panels

#: Panel types that show query results (and so need a query).
DATA_PANELS = frozenset({"timeseries", "stat", "state-timeline", "heatmap", "table"})
#: Panel types the dashboards may use (the SDK's panel plugins, plus two it has no model for).
PANEL_TYPES = DATA_PANELS | {"row", "text", "alertlist"}
#: Datasource type -> the field holding a target's query text.
QUERY_FIELD = {"prometheus": "expr", "influxdb": "query"}


def round_trip(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` decoded by the SDK's models and encoded again."""
    register_default_plugins()
    register_influx_query()
    decoded: dict[str, Any] = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    return decoded


def _lost(before: Any, after: Any, path: str) -> Iterator[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            if key not in after:
                yield f"{path}.{key}: not in the schema"
            else:
                yield from _lost(value, after[key], f"{path}.{key}")
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _lost(b, a, f"{path}[{i}]")
    elif before != after:
        yield f"{path}: {before!r} reads back as {after!r}"


def _without_unmodelled(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the Prometheus annotation fields the SDK does not model (panels.py)."""
    data = json.loads(json.dumps(data))
    for annotation in data.get("annotations", {}).get("list", []):
        if annotation.get("datasource", {}).get("type") == "prometheus":
            for key in UNMODELLED_ANNOTATION_KEYS:
                annotation.pop(key, None)
    return data


def _not_in(enum: type[Enum], value: Any) -> bool:
    return value not in {member.value for member in enum}


_PROMETHEUS_ENUMS: dict[str, type[Enum]] = {
    "editorMode": prometheus_models.QueryEditorMode,
    "format": prometheus_models.PromQueryFormat,
}
_VARIABLE_ENUMS: dict[str, type[Enum]] = {
    "type": dm.VariableType,
    "refresh": dm.VariableRefresh,
    "hide": dm.VariableHide,
    "sort": dm.VariableSort,
}


def _enum_problems(item: dict[str, Any], enums: dict[str, type[Enum]], where: str) -> Iterator[str]:
    for key, enum in enums.items():
        if key in item and _not_in(enum, item[key]):
            yield f"{where}: {key}={item[key]!r} is not one of {enum.__name__}"


def _panel_problems(panel: dict[str, Any]) -> Iterator[str]:
    where = f"panel {panel.get('id')} ({panel.get('title')})"
    if panel.get("type") not in PANEL_TYPES:
        yield f"{where}: unknown panel type {panel.get('type')!r}"
    grid = panel.get("gridPos", {})
    if not (grid.get("w", 0) >= 1 and grid.get("h", 0) >= 1 and grid.get("x", -1) >= 0):
        yield f"{where}: gridPos {grid} is not a placed panel"
    elif grid["x"] + grid["w"] > GRID_WIDTH:
        yield f"{where}: overflows the {GRID_WIDTH}-column grid ({grid})"
    if panel.get("type") in DATA_PANELS and not panel.get("targets"):
        yield f"{where}: has no query"
    for target in panel.get("targets", []):
        kind = (target.get("datasource") or {}).get("type")
        if kind not in QUERY_FIELD:
            yield f"{where}: target {target.get('refId')} of unknown datasource type {kind!r}"
        elif not str(target.get(QUERY_FIELD[kind], "")).strip():
            yield f"{where}: target {target.get('refId')} has an empty query"
        if kind == "prometheus":
            yield from _enum_problems(target, _PROMETHEUS_ENUMS, f"{where} {target.get('refId')}")


def problems(data: dict[str, Any]) -> list[str]:
    """Everything in a dashboard's JSON that Grafana's schema (via the SDK) does not accept."""
    try:
        out = list(_lost(_without_unmodelled(data), round_trip(data), "dashboard"))
    except (ValueError, KeyError, TypeError) as exc:  # a value the models cannot decode
        out = [f"dashboard does not decode: {exc!r}"]
    ids = [p.get("id") for p in iter_panels(data.get("panels", []))]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) and i >= 1 for i in ids):
        out.append(f"panel ids are not unique positive integers: {ids}")
    for panel in iter_panels(data.get("panels", [])):
        out.extend(_panel_problems(panel))
    for var in data.get("templating", {}).get("list", []):
        out.extend(_enum_problems(var, _VARIABLE_ENUMS, f"variable {var.get('name')}"))
    return out
