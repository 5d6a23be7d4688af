"""Strict models of the Grafana provisioning files, after Grafana's own readers.

Field names and types follow Grafana's provisioning structs (apiVersion 1):
``pkg/services/provisioning/datasources/types.go`` (upsertDataSourceFromConfigV1),
``.../dashboards/types.go`` (provider ``configs``), ``.../alerting/types.go``,
``rules_types.go`` (AlertRuleGroupV1, AlertRuleV1, QueryV1), ``contact_point_types.go``
(ContactPointV1, ReceiverV1), ``notification_policy_types.go`` (a Route at the top level) and
grafana/alerting ``receivers/webhook/v1/config.go`` (webhook settings). No library models these
files (grafana-foundation-sdk covers dashboards and the alerting HTTP API, not file
provisioning); dashboards are checked against the SDK's schema in :mod:`.dashboard_schema`.

``extra="forbid"`` everywhere: a misspelt key (``dashboardUID``, ``groupWait``) is silently
ignored by Grafana, so here it is an error. Values Grafana would reject at load time
(unparsable durations, unknown no-data states, conditions naming a missing refId) are
validated too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")


def _duration(value: str) -> str:
    if not value or not _DURATION.match(value):
        raise ValueError(f"{value!r} is not a Prometheus-style duration (e.g. 10s, 5m)")
    return value


def duration_seconds(value: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|y|w|d|h|m|s)", value))


Duration = Annotated[str, AfterValidator(_duration)]
Uid = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-zA-Z0-9_-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- datasources ---------------------------------------------------------------------------


class DataSource(Strict):
    orgId: int | None = None
    orgName: str | None = None
    version: int | None = None
    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    access: Literal["proxy", "direct"] = "proxy"
    url: str = ""
    user: str | None = None
    database: str | None = None
    basicAuth: bool | None = None
    basicAuthUser: str | None = None
    withCredentials: bool | None = None
    isDefault: bool = False
    correlations: list[dict[str, Any]] | None = None
    jsonData: dict[str, Any] = Field(default_factory=dict)
    secureJsonData: dict[str, str] | None = None
    editable: bool = False
    uid: Uid


class DeleteDataSource(Strict):
    orgId: int | None = None
    orgName: str | None = None
    name: str


class DataSourcesFile(Strict):
    apiVersion: Literal[1]
    datasources: list[DataSource] = Field(default_factory=list)
    deleteDatasources: list[DeleteDataSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_default(self) -> DataSourcesFile:
        if sum(ds.isDefault for ds in self.datasources) > 1:
            raise ValueError("more than one datasource has isDefault: true")
        for kind in ("influxdb",):
            for ds in self.datasources:
                if ds.type == kind and not (ds.jsonData.get("dbName") or ds.database):
                    raise ValueError(f"InfluxQL datasource {ds.name} names no database")
        return self


# --- dashboard providers -------------------------------------------------------------------


class ProviderOptions(Strict):
    path: str = Field(min_length=1)
    foldersFromFilesStructure: bool = False


class DashboardProvider(Strict):
    name: str = Field(min_length=1)
    type: Literal["file"] = "file"
    orgId: int = 1
    folder: str = ""
    folderUid: str = ""
    editable: bool | None = None
    options: ProviderOptions
    disableDeletion: bool = False
    updateIntervalSeconds: int = Field(default=10, ge=1)
    allowUiUpdates: bool = False


class DashboardProvidersFile(Strict):
    apiVersion: Literal[1]
    providers: list[DashboardProvider]


# --- alerting: rules -----------------------------------------------------------------------


class RelativeTimeRange(Strict):
    from_: int = Field(alias="from", ge=0)
    to: int = Field(ge=0)


class DatasourceRef(Strict):
    type: str
    uid: str


class PrometheusQueryModel(Strict):
    refId: str
    datasource: DatasourceRef
    expr: str = Field(min_length=1)
    instant: bool = False
    range: bool = True
    editorMode: Literal["code", "builder"] | None = None
    intervalMs: int | None = None
    maxDataPoints: int | None = None
    legendFormat: str | None = None


class Evaluator(Strict):
    type: Literal[
        "gt",
        "lt",
        "within_range",
        "outside_range",
        "within_range_included",
        "outside_range_included",
    ]
    params: list[float]


class ThresholdCondition(Strict):
    evaluator: Evaluator
    unloadEvaluator: Evaluator | None = None


class ExpressionModel(Strict):
    refId: str
    datasource: DatasourceRef
    type: Literal["math", "reduce", "threshold", "resample", "classic_conditions", "sql"]
    expression: str = Field(min_length=1)
    reducer: str | None = None
    settings: dict[str, Any] | None = None
    conditions: list[ThresholdCondition] | None = None


class AlertQuery(Strict):
    refId: str = Field(pattern=r"^[A-Z][A-Za-z0-9_]*$")
    queryType: str = ""
    relativeTimeRange: RelativeTimeRange
    datasourceUid: str = Field(min_length=1)
    model: dict[str, Any]

    @model_validator(mode="after")
    def _model(self) -> AlertQuery:
        if self.model.get("refId") != self.refId:
            raise ValueError(f"model.refId {self.model.get('refId')!r} != refId {self.refId!r}")
        if self.datasourceUid == "__expr__":
            expr = ExpressionModel.model_validate(self.model)
            if expr.type == "threshold" and not expr.conditions:
                raise ValueError(f"threshold node {self.refId} has no conditions")
        else:
            PrometheusQueryModel.model_validate(self.model)
        return self


class AlertRule(Strict):
    uid: Uid
    title: str = Field(min_length=1)
    condition: str = Field(min_length=1)
    data: list[AlertQuery] = Field(min_length=1)
    dashboardUid: str | None = None
    panelId: int | None = None
    noDataState: Literal["Alerting", "NoData", "OK", "KeepLast"] = "NoData"
    execErrState: Literal["Alerting", "Error", "OK", "KeepLast"] = "Error"
    for_: Duration = Field(default="0s", alias="for")
    keepFiringFor: Duration | None = None
    missing_series_evals_to_resolve: int | None = Field(default=None, ge=0)
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    isPaused: bool = False
    notification_settings: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _references(self) -> AlertRule:
        refs = [q.refId for q in self.data]
        if len(set(refs)) != len(refs):
            raise ValueError(f"rule {self.title}: duplicate refIds {refs}")
        if self.condition not in refs:
            raise ValueError(f"rule {self.title}: condition {self.condition} is not a refId")
        for q in self.data:
            if q.datasourceUid != "__expr__":
                continue
            expression = str(q.model["expression"])
            used = set(re.findall(r"\$\{?([A-Za-z]\w*)", expression)) or {expression}
            missing = used - set(refs)
            if missing:
                raise ValueError(f"rule {self.title}: {q.refId} references missing {missing}")
        for key, value in self.labels.items():
            if "$" in value or "$" in key:
                raise ValueError(f"rule {self.title}: label {key} would be env-interpolated")
        return self


class AlertRuleGroup(Strict):
    orgId: int = 1
    name: str = Field(min_length=1)
    folder: str = Field(min_length=1)
    interval: Duration
    rules: list[AlertRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _interval(self) -> AlertRuleGroup:
        seconds = duration_seconds(self.interval)
        if seconds < 10 or seconds % 10:
            raise ValueError(
                f"group {self.name}: interval must be a multiple of 10s (Grafana's base)"
            )
        for rule in self.rules:  # Grafana's rule editor refuses other pending periods
            pending = duration_seconds(rule.for_)
            if pending and pending % seconds:
                raise ValueError(
                    f"rule {rule.title}: for={rule.for_} is not a multiple of {self.interval}"
                )
        return self


class RuleDelete(Strict):
    orgId: int = 1
    uid: str


# --- alerting: contact points and policies --------------------------------------------------


class HmacConfig(Strict):
    secret: str
    header: str | None = None
    timestampHeader: str | None = None


class WebhookSettings(Strict):
    url: str = Field(min_length=1)
    httpMethod: Literal["POST", "PUT"] = "POST"
    maxAlerts: str | int | None = None
    authorization_scheme: str | None = None
    authorization_credentials: str | None = None
    username: str | None = None
    password: str | None = None
    title: str | None = None
    message: str | None = None
    tlsConfig: dict[str, Any] | None = None
    hmacConfig: HmacConfig | None = None
    headers: dict[str, str] | None = None
    payload: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_auth(self) -> WebhookSettings:
        if self.username and self.password and self.authorization_credentials:
            raise ValueError("both basic auth and an Authorization header are set")
        return self


class AlertmanagerSettings(Strict):
    url: str = Field(min_length=1)
    basicAuthUser: str | None = None
    basicAuthPassword: str | None = None


class Receiver(Strict):
    uid: Uid
    type: Literal["webhook", "prometheus-alertmanager"]
    settings: dict[str, Any]
    disableResolveMessage: bool = False

    @model_validator(mode="after")
    def _settings(self) -> Receiver:
        model = WebhookSettings if self.type == "webhook" else AlertmanagerSettings
        model.model_validate(self.settings)
        return self


class ContactPoint(Strict):
    orgId: int = 1
    name: str = Field(min_length=1)
    receivers: list[Receiver] = Field(min_length=1)


class DeleteContactPoint(Strict):
    orgId: int = 1
    uid: str


def _matcher(value: list[str]) -> list[str]:
    if len(value) != 3 or value[1] not in ("=", "!=", "=~", "!~"):
        raise ValueError(f"object matcher {value} is not [label, =|!=|=~|!~, value]")
    return value


Matcher = Annotated[list[str], AfterValidator(_matcher)]


class Route(Strict):
    receiver: str | None = None
    group_by: list[str] | None = None
    object_matchers: list[Matcher] | None = None
    matchers: list[str] | None = None
    routes: list[Route] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(default=False, alias="continue")
    mute_time_intervals: list[str] | None = None
    active_time_intervals: list[str] | None = None


class Policy(Route):
    orgId: int = 1

    @model_validator(mode="after")
    def _root(self) -> Policy:
        if not self.receiver:
            raise ValueError("the root policy needs a receiver")
        if self.object_matchers or self.matchers:
            raise ValueError("the root policy cannot have matchers")
        return self


class AlertingFile(Strict):
    apiVersion: Literal[1]
    groups: list[AlertRuleGroup] = Field(default_factory=list)
    deleteRules: list[RuleDelete] = Field(default_factory=list)
    contactPoints: list[ContactPoint] = Field(default_factory=list)
    deleteContactPoints: list[DeleteContactPoint] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    resetPolicies: list[int] = Field(default_factory=list)
    muteTimes: list[dict[str, Any]] = Field(default_factory=list)
    deleteMuteTimes: list[dict[str, Any]] = Field(default_factory=list)
    templates: list[dict[str, Any]] = Field(default_factory=list)
    deleteTemplates: list[dict[str, Any]] = Field(default_factory=list)
