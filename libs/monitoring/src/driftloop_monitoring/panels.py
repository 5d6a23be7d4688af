"""The panel, query and dashboard shapes of the three dashboards, on grafana-foundation-sdk.

The SDK's typed builders (generated from Grafana's own schema) write the JSON; this module only
fixes driftloop's house style (legend at the bottom, zero-based axes, dashed threshold lines,
the promotion annotation) so the dashboards in :mod:`.dashboards` read as a list of panels.

Three things the SDK does not model are added here as small typed classes: InfluxQL targets
(no InfluxDB dataquery in the SDK), the alert list panel (no builder) and the display fields of
a Prometheus annotation (``titleFormat``, ``tagKeys``, ... which Grafana reads at the top level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap as heatmap_builders
from grafana_foundation_sdk.builders import prometheus, statetimeline
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import text as text_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import text as text_models

from . import names

GRID_WIDTH = 24
T = TypeVar("T")
Query = cogbuilder.Builder[cogvariants.Dataquery]


def ref(datasource: dict[str, Any]) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=datasource["type"], uid=datasource["uid"])


class Built(cogbuilder.Builder[T]):
    """A builder for an object made outside the SDK's builders (what the SDK cannot build)."""

    def __init__(self, built: T) -> None:
        self._built = built

    def build(self) -> T:
        return self._built


# --- queries --------------------------------------------------------------------------------


def prom(
    expr: str, legend: str = "", ref_id: str = "A", *, instant: bool = False, fmt: str = ""
) -> prometheus.Dataquery:
    """A Prometheus target (range query unless ``instant``), written in code mode."""
    query = (
        prometheus.Dataquery()
        .ref_id(ref_id)
        .datasource(ref(names.PROMETHEUS))
        .editor_mode(prometheus_models.QueryEditorMode.CODE)
        .expr(expr)
        .legend_format(legend or "__auto")
    )
    query = query.instant() if instant else query.range()
    if fmt:
        query = query.format(prometheus_models.PromQueryFormat(fmt))
    return query


@dataclass
class InfluxQuery(cogvariants.Dataquery):
    """An InfluxQL target in raw query mode (the SDK ships no InfluxDB dataquery)."""

    ref_id: str
    query: str
    result_format: str = "time_series"
    alias: str = ""
    datasource: dm.DataSourceRef = field(default_factory=lambda: ref(names.INFLUXDB))
    raw_query: bool = True

    _KEYS = frozenset({"refId", "datasource", "query", "rawQuery", "resultFormat", "alias"})

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "query": self.query,
            "rawQuery": self.raw_query,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Strict, like Grafana's schema for the typed targets: an unknown key is an error."""
        unknown = set(data) - cls._KEYS
        if unknown or data.get("rawQuery") is not True:
            raise ValueError(f"not a raw InfluxQL target: unknown {sorted(unknown)} in {data}")
        return cls(
            ref_id=data["refId"],
            query=data["query"],
            result_format=data.get("resultFormat", "time_series"),
            alias=data.get("alias", ""),
            datasource=dm.DataSourceRef.from_json(data["datasource"]),
        )


def register_influx_query() -> None:
    """Let the SDK's JSON reader decode InfluxDB targets with :class:`InfluxQuery`."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier="influxdb", from_json_hook=InfluxQuery.from_json)
    )


def influx(query: str, alias: str = "", ref_id: str = "A", *, table: bool = False) -> Query:
    return Built(
        InfluxQuery(ref_id, query, result_format="table" if table else "time_series", alias=alias)
    )


# --- field config pieces ----------------------------------------------------------------------


def thresholds(*steps: tuple[str, float | None]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for color, value in steps])
    )


def default_thresholds() -> db.ThresholdsConfig:
    return thresholds(("green", None))


def threshold_line() -> list[dm.DynamicConfigValue]:
    """Draw a series (the threshold gauge) as a dashed red line without fill."""
    return [
        dm.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
        dm.DynamicConfigValue("custom.lineWidth", 2),
        dm.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}),
        dm.DynamicConfigValue("custom.fillOpacity", 0),
    ]


def _legend() -> common_builders.VizLegendOptions:
    """Grafana's default legend, spelt out: the SDK's default options object hides it."""
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _tooltip(
    mode: common.TooltipDisplayMode, sort: common.SortOrder
) -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(mode).sort(sort)


def _datasource_of(targets: list[Query]) -> dm.DataSourceRef:
    """The panel's datasource: the targets' one, or Mixed when they use several."""
    sources: list[dm.DataSourceRef] = [getattr(t.build(), "datasource") for t in targets]  # noqa: B009
    if len({s.uid for s in sources}) == 1:
        return sources[0]
    return ref({"type": "datasource", "uid": "-- Mixed --"})


class _DataPanel(Protocol):
    """The builder methods every SDK data panel has (each panel type is its own class)."""

    def id(self, id_val: int) -> Self: ...
    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: dm.DataSourceRef) -> Self: ...
    def targets(self, targets: list[Query]) -> Self: ...
    def thresholds(self, thresholds: cogbuilder.Builder[dm.ThresholdsConfig]) -> Self: ...


P = TypeVar("P", bound=_DataPanel)


def _common(panel: P, panel_id: int, title: str, description: str, targets: list[Query]) -> P:
    """What every data panel sets: id, title, queries and their datasource, green thresholds.

    Thresholds are always explicit: Grafana's default adds a red step at 80, which would
    colour a stat or state of 80 or more red.
    """
    panel = panel.id(panel_id).title(title).datasource(_datasource_of(targets)).targets(targets)
    panel = panel.thresholds(default_thresholds())
    return panel.description(description) if description else panel


# --- panels -----------------------------------------------------------------------------------
# Only what differs from Grafana's panel defaults is set (lines, stat reductions, heatmap
# colours ... are Grafana's own), except where the SDK writes a default of its own that is not
# Grafana's (an options object it creates hides the legend): those are spelt out.


def timeseries(
    panel_id: int,
    title: str,
    targets: list[Query],
    *,
    unit: str = "short",
    description: str = "",
    minimum: float | None = 0,
    maximum: float | None = None,
    stack: bool = False,
    bars: bool = False,
    threshold_ref: str | None = None,
    threshold_steps: db.ThresholdsConfig | None = None,
) -> timeseries_builders.Panel:
    """A time series; ``threshold_ref`` draws that target as a dashed threshold line."""
    panel = _common(timeseries_builders.Panel(), panel_id, title, description, targets)
    panel = (
        panel.unit(unit)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(_legend())
        .tooltip(_tooltip(common.TooltipDisplayMode.MULTI, common.SortOrder.DESCENDING))
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if stack:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common.StackingMode.NORMAL).group("A")
        )
    if threshold_steps:
        panel = panel.thresholds(threshold_steps).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE_AND_AREA
            )
        )
    if threshold_ref:
        panel = panel.override_by_query(threshold_ref, threshold_line())
    return panel


def stat(
    panel_id: int,
    title: str,
    targets: list[Query],
    *,
    unit: str = "short",
    description: str = "",
    steps: db.ThresholdsConfig | None = None,
) -> stat_builders.Panel:
    """The last non-null value, coloured by ``steps`` (green unless given)."""
    panel = _common(stat_builders.Panel(), panel_id, title, description, targets).unit(unit)
    return panel.thresholds(steps) if steps else panel


def state_timeline(
    panel_id: int,
    title: str,
    targets: list[Query],
    *,
    description: str = "",
    mappings: dict[str, tuple[str, str]] | None = None,
) -> statetimeline.Panel:
    """``mappings``: raw value -> (text, colour), e.g. ``{"1": ("up", "green")}``."""
    panel = _common(statetimeline.Panel(), panel_id, title, description, targets)
    panel = (
        panel.unit("short")
        .show_value(common.VisibilityMode.NEVER)
        .row_height(0.8)
        .legend(_legend())
        .tooltip(_tooltip(common.TooltipDisplayMode.SINGLE, common.SortOrder.NONE))
    )
    if mappings:
        results = {
            raw: dm.ValueMappingResult(text=label, color=colour, index=i)
            for i, (raw, (label, colour)) in enumerate(mappings.items())
        }
        panel = panel.mappings([dm.ValueMap(options=results)])
    return panel


def heatmap(
    panel_id: int, title: str, target: Query, *, unit: str, description: str = ""
) -> heatmap_builders.Panel:
    """A heatmap of pre-bucketed (Prometheus histogram) data, with a y-histogram tooltip."""
    panel = _common(heatmap_builders.Panel(), panel_id, title, description, [target])
    return (
        panel.calculate(False)
        .color(  # all of it: the SDK's colour builder starts from zeros (0 steps, no scheme)
            heatmap_builders.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .steps(64)
            .exponent(0.5)
        )
        .y_axis(heatmap_builders.YAxisConfig().unit(unit))
        .show_y_histogram()
    )


def table(
    panel_id: int, title: str, targets: list[Query], *, description: str = ""
) -> table_builders.Panel:
    return _common(table_builders.Panel(), panel_id, title, description, targets).unit("short")


def alertlist(panel_id: int, title: str, *, description: str = "") -> db.Panel:
    """Grafana's alert list of the driftloop folder's Grafana-managed rules (no query)."""
    options = {
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
    panel = db.Panel().type("alertlist").id(panel_id).title(title).options(options)
    return panel.description(description) if description else panel


def text(panel_id: int, title: str, content: str) -> text_builders.Panel:
    return (
        text_builders.Panel()
        .id(panel_id)
        .title(title)
        .mode(text_models.TextMode.MARKDOWN)
        .content(content)
    )


# --- variables, annotations, links ----------------------------------------------------------


def query_variable(name: str, label: str, query: str) -> db.QueryVariable:
    """A multi-value Prometheus ``label_values(...)`` variable with "All"."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(ref(names.PROMETHEUS))
        .query(
            {
                "qryType": 1,
                "query": query,
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            }
        )
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .regex("")
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .options([])
        .hide(dm.VariableHide.DONT_HIDE)
    )


def textbox_variable(name: str, label: str, default: str) -> db.TextBoxVariable:
    return (
        db.TextBoxVariable(name)
        .label(label)
        .default_value(default)
        .current(dm.VariableOption(text=default, value=default))
        .options([dm.VariableOption(selected=True, text=default, value=default)])
        .hide(dm.VariableHide.DONT_HIDE)
    )


def builtin_annotation() -> db.AnnotationQuery:
    return (
        db.AnnotationQuery()
        .built_in(1)
        .datasource(ref(names.GRAFANA_BUILTIN))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .name("Annotations & Alerts")
        .type("dashboard")
    )


class PrometheusAnnotation(dm.AnnotationQuery):
    """An annotation from a Prometheus query, with the display fields Grafana reads for it.

    Grafana's Prometheus datasource reads ``step``, ``titleFormat``, ``textFormat``, ``tagKeys``
    and ``useValueForTime`` at the top level of the annotation; the SDK's schema does not
    model them, so they are added here (and listed in :data:`UNMODELLED_ANNOTATION_KEYS`).
    """

    def __init__(
        self, *, step: str, title_format: str, text_format: str, tag_keys: str, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.step = step
        self.title_format = title_format
        self.text_format = text_format
        self.tag_keys = tag_keys

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        out.update(
            step=self.step,
            titleFormat=self.title_format,
            textFormat=self.text_format,
            tagKeys=self.tag_keys,
            useValueForTime=False,
        )
        return out


#: Keys of :class:`PrometheusAnnotation` the SDK's dashboard schema does not know.
UNMODELLED_ANNOTATION_KEYS = frozenset(
    {"step", "titleFormat", "textFormat", "tagKeys", "useValueForTime"}
)

#: Version newly served by the fleet (region of 2 minutes after it first appears): promotions,
#: and the first load after the whole fleet restarts.
PROMOTION_EXPR = (
    "count by (model_version) (driftloop_model_info)"
    " unless count by (model_version) (driftloop_model_info offset 2m)"
)


def promotion_annotation() -> Built[dm.AnnotationQuery]:
    return Built(
        PrometheusAnnotation(
            name="Champion promotions",
            datasource=ref(names.PROMETHEUS),
            enable=True,
            hide=False,
            icon_color="purple",
            expr=PROMOTION_EXPR,
            built_in=None,
            step="30s",
            title_format="now serving v{{model_version}}",
            text_format="model version {{model_version}} is newly served by the replicas",
            tag_keys="model_version",
        )
    )


def link(
    title: str,
    *,
    url: str = "",
    dashboards_tagged: str = "",
    icon: str,
    tooltip: str = "",
    new_tab: bool = False,
    keep_time: bool = False,
) -> db.DashboardLink:
    """A link to ``url``, or a drop-down of the dashboards tagged ``dashboards_tagged``."""
    kind = dm.DashboardLinkType.DASHBOARDS if dashboards_tagged else dm.DashboardLinkType.LINK
    return (
        db.DashboardLink(title)
        .type(kind)
        .url(url)
        .tags([dashboards_tagged] if dashboards_tagged else [])
        .as_dropdown(bool(dashboards_tagged))
        .include_vars(False)
        .keep_time(keep_time)
        .target_blank(new_tab)
        .icon(icon)
        .tooltip(tooltip)
    )


# --- layout and dashboard -----------------------------------------------------------------------


@dataclass
class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping as needed.

    Explicit positions rather than the SDK's auto-layout: a row of panels that does not fill
    the width (a repeated panel) must still end the line.
    """

    dashboard: db.Dashboard
    x: int = 0
    y: int = 0
    row_height: int = 0

    def add(self, panel: Any, w: int, h: int = 8) -> None:
        if self.x + w > GRID_WIDTH:
            self.newline()
        self.dashboard.with_panel(panel.grid_pos(dm.GridPos(h=h, w=w, x=self.x, y=self.y)))
        self.x += w
        self.row_height = max(self.row_height, h)

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, panel_id: int, title: str) -> None:
        self.newline()
        grid = dm.GridPos(h=1, w=GRID_WIDTH, x=0, y=self.y)
        self.dashboard.with_row(db.Row(title).id(panel_id).collapsed(False).grid_pos(grid))
        self.y += 1


def dashboard(
    uid: str,
    title: str,
    description: str,
    *,
    variables: list[Any],
    links: list[db.DashboardLink] | None = None,
    time_from: str = "now-1h",
) -> Layout:
    """A driftloop dashboard (tag, refresh, shared crosshair, annotations); add panels to it."""
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["driftloop"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .timezone("browser")
        .refresh("10s")
        .version(1)
        .time(time_from, "now")
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .annotations([builtin_annotation(), promotion_annotation()])
        .variables(variables)
        .links(
            [
                link(
                    "driftloop dashboards",
                    dashboards_tagged="driftloop",
                    icon="external link",
                    keep_time=True,
                ),
                *(links or []),
            ]
        )
    )
    return Layout(board)
