"""Small builders for Grafana dashboard JSON (schemaVersion 39, Grafana 11/12).

Plain dicts rather than a dashboard SDK: the output is committed JSON that a reviewer reads,
and only the handful of panel types driftloop needs are built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import names

SCHEMA_VERSION = 39
GRID_WIDTH = 24


def prom(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, fmt: str | None = None
) -> dict[str, Any]:
    """A Prometheus target (range query unless ``instant``)."""
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": dict(names.PROMETHEUS),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if fmt:
        target["format"] = fmt
    return target


def influx(query: str, alias: str = "", ref: str = "A", *, table: bool = False) -> dict[str, Any]:
    """An InfluxQL target in raw query mode."""
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": dict(names.INFLUXDB),
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        target["alias"] = alias
    return target


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


DEFAULT_THRESHOLDS = thresholds(("green", None))


#: Draw a target (the threshold gauge) as a dashed red line.
def threshold_line_override(ref: str = "B") -> dict[str, Any]:
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def _field_config(
    unit: str,
    *,
    minimum: float | None = 0,
    maximum: float | None = None,
    custom: dict[str, Any] | None = None,
    steps: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps or DEFAULT_THRESHOLDS}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": overrides or []}


def _base(
    panel_id: int, kind: str, title: str, description: str, datasource: dict[str, Any] | None
) -> dict[str, Any]:
    panel: dict[str, Any] = {"id": panel_id, "type": kind, "title": title}
    if description:
        panel["description"] = description
    if datasource is not None:
        panel["datasource"] = dict(datasource)
    return panel


def timeseries(
    panel_id: int,
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    minimum: float | None = 0,
    maximum: float | None = None,
    stack: bool = False,
    bars: bool = False,
    threshold_ref: str | None = None,
    threshold_steps: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if threshold_steps:
        custom["thresholdsStyle"] = {"mode": "line+area"}
    extra = list(overrides or [])
    if threshold_ref:
        extra.append(threshold_line_override(threshold_ref))
    panel = _base(panel_id, "timeseries", title, description, _datasource_of(targets))
    panel["targets"] = targets
    panel["fieldConfig"] = _field_config(
        unit,
        minimum=minimum,
        maximum=maximum,
        custom=custom,
        steps=threshold_steps,
        overrides=extra,
    )
    panel["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(
    panel_id: int,
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    steps: dict[str, Any] | None = None,
    calc: str = "lastNotNull",
) -> dict[str, Any]:
    panel = _base(panel_id, "stat", title, description, _datasource_of(targets))
    panel["targets"] = targets
    panel["fieldConfig"] = _field_config(unit, minimum=None, steps=steps)
    panel["options"] = {
        "reduceOptions": {"calcs": [calc], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "textMode": "auto",
        "orientation": "auto",
        "justifyMode": "auto",
    }
    return panel


def state_timeline(
    panel_id: int,
    title: str,
    targets: list[dict[str, Any]],
    *,
    description: str = "",
    mappings: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """``mappings``: raw value -> (text, colour), e.g. ``{"1": ("up", "green")}``."""
    panel = _base(panel_id, "state-timeline", title, description, _datasource_of(targets))
    panel["targets"] = targets
    panel["fieldConfig"] = _field_config("short", minimum=None, custom={"fillOpacity": 70})
    if mappings:
        panel["fieldConfig"]["defaults"]["mappings"] = [
            {
                "type": "value",
                "options": {
                    raw: {"text": label, "color": colour, "index": i}
                    for i, (raw, (label, colour)) in enumerate(mappings.items())
                },
            }
        ]
    panel["options"] = {
        "showValue": "never",
        "mergeValues": True,
        "rowHeight": 0.8,
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel


def heatmap(
    panel_id: int, title: str, target: dict[str, Any], *, unit: str, description: str = ""
) -> dict[str, Any]:
    panel = _base(panel_id, "heatmap", title, description, _datasource_of([target]))
    panel["targets"] = [target]
    panel["fieldConfig"] = {"defaults": {}, "overrides": []}
    panel["options"] = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5},
        "yAxis": {"axisPlacement": "left", "unit": unit},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True},
        "legend": {"show": True},
    }
    return panel


def table(
    panel_id: int, title: str, targets: list[dict[str, Any]], *, description: str = ""
) -> dict[str, Any]:
    panel = _base(panel_id, "table", title, description, _datasource_of(targets))
    panel["targets"] = targets
    panel["fieldConfig"] = _field_config("short", minimum=None)
    panel["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel


def alertlist(
    panel_id: int, title: str, *, description: str = "", datasource_uid: str | None = None
) -> dict[str, Any]:
    """Grafana's alert list (no query): Grafana-managed rules, or an Alertmanager's alerts."""
    panel = _base(panel_id, "alertlist", title, description, None)
    panel["options"] = {
        "viewMode": "list",
        "groupMode": "default",
        "groupBy": [],
        "maxItems": 20,
        "sortOrder": 1,
        "dashboardAlerts": False,
        "alertName": "",
        "alertInstanceLabelFilter": "",
        "folder": {"title": names.FOLDER_TITLE, "uid": names.FOLDER_UID},
        "stateFilter": {
            "firing": True,
            "pending": True,
            "noData": True,
            "normal": False,
            "error": True,
        },
    }
    if datasource_uid:
        panel["options"]["datasource"] = datasource_uid
    return panel


def text(panel_id: int, title: str, content: str) -> dict[str, Any]:
    panel = _base(panel_id, "text", title, "", None)
    panel["options"] = {"mode": "markdown", "content": content}
    return panel


def _datasource_of(targets: list[dict[str, Any]]) -> dict[str, Any]:
    sources = {t["datasource"]["uid"] for t in targets}
    if len(sources) == 1:
        return dict(targets[0]["datasource"])
    return {"type": "datasource", "uid": "-- Mixed --"}


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    include_all: bool = True,
    datasource: dict[str, Any] | None = None,
    regex: str = "",
) -> dict[str, Any]:
    """A Prometheus ``label_values(...)`` (or InfluxQL ``SHOW TAG VALUES``) variable."""
    ds = dict(datasource or names.PROMETHEUS)
    model: Any = query
    if ds["type"] == "prometheus":
        model = {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        }
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": ds,
        "definition": query,
        "query": model,
        "refresh": 2,
        "regex": regex,
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "current": {},
        "options": [],
        "hide": 0,
    }


def textbox_variable(name: str, label: str, default: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": default,
        "current": {"text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
        "hide": 0,
    }


def builtin_annotation() -> dict[str, Any]:
    return {
        "builtIn": 1,
        "datasource": dict(names.GRAFANA_BUILTIN),
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


#: Version newly served by the fleet (region of 2 minutes after it first appears): promotions,
#: and the first load after the whole fleet restarts.
PROMOTION_EXPR = (
    "count by (model_version) (driftloop_model_info)"
    " unless count by (model_version) (driftloop_model_info offset 2m)"
)


def promotion_annotation() -> dict[str, Any]:
    return {
        "name": "Champion promotions",
        "datasource": dict(names.PROMETHEUS),
        "enable": True,
        "hide": False,
        "iconColor": "purple",
        "expr": PROMOTION_EXPR,
        "step": "30s",
        "titleFormat": "now serving v{{model_version}}",
        "textFormat": "model version {{model_version}} is newly served by the replicas",
        "tagKeys": "model_version",
        "useValueForTime": False,
    }


@dataclass
class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping as needed."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    x: int = 0
    y: int = 0
    row_height: int = 0

    def add(self, panel: dict[str, Any], w: int, h: int = 8) -> dict[str, Any]:
        if self.x + w > GRID_WIDTH:
            self.newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)
        return panel

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, panel_id: int, title: str, *, repeat: str | None = None) -> None:
        self.newline()
        row: dict[str, Any] = {
            "id": panel_id,
            "type": "row",
            "title": title,
            "collapsed": False,
            "panels": [],
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self.y},
        }
        if repeat:
            row["repeat"] = repeat
        self.panels.append(row)
        self.y += 1


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    *,
    variables: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
    time_from: str = "now-1h",
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["driftloop"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": [builtin_annotation(), promotion_annotation()]},
        "templating": {"list": variables or []},
        "links": [
            {
                "title": "driftloop dashboards",
                "type": "dashboards",
                "tags": ["driftloop"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            },
            *(links or []),
        ],
        "panels": panels,
    }
