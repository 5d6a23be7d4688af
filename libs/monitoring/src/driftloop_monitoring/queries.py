"""Every query in the committed monitoring files, and Grafana-style variable substitution.

Read from the files on disk (not from the generator), so the tests check what Grafana and
Prometheus will actually load. Used by tests/test_monitoring_config.py (static checks) and
tests/integration/test_monitoring_live.py (each query run against the live stack).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import names

Kind = Literal["prometheus", "influxdb"]


@dataclass(frozen=True)
class Query:
    """One query as a datasource would receive it (before variable substitution)."""

    kind: Kind
    text: str
    where: str
    instant: bool = False
    #: Variable a repeated panel binds to one value per repetition.
    repeat: str | None = None
    #: ``panel`` (a panel or annotation), ``rule`` (an alert rule operand), ``variable``.
    role: str = "panel"


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    query: str
    datasource_uid: str | None
    multi: bool
    include_all: bool
    default: str = ""


@dataclass
class Dashboard:
    path: Path
    model: dict[str, Any]
    variables: list[Variable] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return str(self.model.get("uid", ""))


def load_dashboards(directory: Path) -> list[Dashboard]:
    out = []
    for path in sorted(directory.glob("*.json")):
        model = json.loads(path.read_text())
        variables = [
            Variable(
                name=v["name"],
                type=v["type"],
                query=str(v.get("definition") or _query_text(v.get("query"))),
                datasource_uid=(v.get("datasource") or {}).get("uid"),
                multi=bool(v.get("multi")),
                include_all=bool(v.get("includeAll")),
                default=str((v.get("current") or {}).get("value") or v.get("query") or ""),
            )
            for v in model.get("templating", {}).get("list", [])
        ]
        out.append(Dashboard(path, model, variables))
    return out


def _query_text(query: Any) -> str:
    if isinstance(query, dict):
        return str(query.get("query", ""))
    return str(query or "")


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


_KINDS: dict[str, Kind] = {names.PROMETHEUS_UID: "prometheus", names.INFLUXDB_UID: "influxdb"}


def datasource_kind(uid: str | None) -> Kind | None:
    return _KINDS.get(uid or "")


def dashboard_queries(dash: Dashboard) -> list[Query]:
    out: list[Query] = []
    for panel in iter_panels(dash.model.get("panels", [])):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            kind = datasource_kind(uid)
            where = f"{dash.uid} panel {panel['id']} ({panel.get('title')}) {target.get('refId')}"
            if kind == "prometheus":
                out.append(
                    Query(
                        kind,
                        target["expr"],
                        where,
                        bool(target.get("instant")),
                        panel.get("repeat"),
                    )
                )
            elif kind == "influxdb":
                out.append(Query(kind, target["query"], where, False, panel.get("repeat")))
    for ann in dash.model.get("annotations", {}).get("list", []):
        kind = datasource_kind((ann.get("datasource") or {}).get("uid"))
        if kind == "prometheus" and ann.get("expr"):
            out.append(Query(kind, ann["expr"], f"{dash.uid} annotation {ann['name']}"))
    for var in dash.variables:
        kind = datasource_kind(var.datasource_uid)
        if kind and var.type == "query":
            out.append(Query(kind, var.query, f"{dash.uid} variable {var.name}", role="variable"))
    return out


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def grafana_rule_queries(rules_file: Path) -> list[Query]:
    out = []
    for group in load_yaml(rules_file).get("groups", []):
        for rule in group["rules"]:
            for node in rule["data"]:
                kind = datasource_kind(node["datasourceUid"])
                if kind == "prometheus":
                    out.append(
                        Query(
                            kind,
                            node["model"]["expr"],
                            f"grafana rule {rule['title']} {node['refId']}",
                            instant=True,
                            role="rule",
                        )
                    )
    return out


def prometheus_rules(rules_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(rules_dir.glob("*.yml")):
        for group in load_yaml(path).get("groups", []):
            out.extend(group.get("rules", []))
    return out


# --- variable substitution ----------------------------------------------------------------


#: Built-in variables, as Grafana would substitute them for a short test range.
def builtins(range_s: int, interval_s: int = 10) -> dict[str, str]:
    return {
        # Grafana: max(4 x scrape interval, interval + scrape interval); scrape = 2s here
        "__rate_interval": f"{max(4 * 2, interval_s + 2)}s",
        "__interval": f"{interval_s}s",
        "__interval_ms": str(interval_s * 1000),
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
    }


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def _regex_escape_prometheus(value: str) -> str:
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\\\1", value)


def format_values(values: list[str], kind: Kind, *, multi: bool) -> str:
    """Grafana's formatting of a variable's value(s) inside a query of ``kind``."""
    if not multi:
        return values[0]
    if kind == "prometheus":
        escaped = [_regex_escape_prometheus(v) for v in values]
    else:
        escaped = [re.sub(r"([\\/.^$*+?()\[\]{}|])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(
    text: str,
    kind: Kind,
    values: Mapping[str, list[str]],
    multi: Mapping[str, bool],
    extra: Mapping[str, str],
) -> str:
    """Replace ``$var`` / ``${var}`` / ``[[var]]`` as Grafana would; unknown names are left."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in extra:
            return extra[name]
        if name in values:
            return format_values(values[name], kind, multi=multi.get(name, False))
        return match.group(0)

    text = text.replace("$timeFilter", "time > now() - $__range").replace(
        "$__timeFilter", "time > now() - $__range"
    )
    return _VAR.sub(repl, text)


def unresolved(text: str) -> list[str]:
    """Template variables still present in a query after substitution."""
    return [m.group(0) for m in _VAR.finditer(text)]


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def parse_label_values(query: str) -> tuple[str | None, str] | None:
    """``label_values(sel, label)`` -> (sel, label); None for other variable queries."""
    match = _LABEL_VALUES.match(query.strip())
    if not match:
        return None
    return match.group("selector"), match.group("label")


def offline_promql(query: Query, dash: Dashboard) -> str | None:
    """A Prometheus query of ``dash`` as PromQL a parser accepts, without a stack.

    Variables get stand-in values (query variables ``placeholder``, textboxes their default,
    built-ins a short range); a ``label_values(selector, label)`` variable gives its selector
    (None when it has none).
    """
    if query.kind != "prometheus":
        return None
    if query.role == "variable":
        parsed = parse_label_values(query.text)
        return parsed[0] if parsed else query.text
    values = {v.name: ["placeholder"] for v in dash.variables if v.type == "query"}
    multi = {v.name: v.multi or v.include_all for v in dash.variables}
    extra = {**builtins(60), **{v.name: v.default for v in dash.variables if v.type != "query"}}
    return substitute(query.text, query.kind, values, multi, extra)
