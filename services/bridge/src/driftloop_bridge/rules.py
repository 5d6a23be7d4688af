"""Routing rules: label matchers -> the DAG to trigger and the ``conf`` to trigger it with.

The rules live in a YAML file (``DRIFTLOOP_BRIDGE_RULES_FILE``, default
``services/bridge/rules.yaml``) so operators can route new alerts without a release::

    version: 1
    rules:
      - name: retrain-on-drift            # [A-Za-z0-9_.-]+, unique; part of the dag_run_id
        match:                            # every label listed must match (missing label = "")
          alertname: [DriftFeatureHigh, DriftPredictionHigh]   # list: any of
          severity: critical                                   # string: equals
          feature: {regex: "median_.*"}                        # regex: full match
        dag_id: retrain_house_price       # optional; default driftloop_contracts.DAG_ID
        conf:                             # optional; default DEFAULT_CONF below
          alertname: ${alertname}         # a whole-string placeholder keeps the value's type
          reason: "alert ${alertname} on ${labels.feature}"   # embedded: interpolated as text

The first matching rule wins; an alert no rule matches is acknowledged as ``ignored``.
Placeholders: ``source status alertname labels annotations values fingerprint group_key
starts_at ends_at generator_url receiver rule dag_id dag_run_id`` and ``labels.<name>``,
``annotations.<name>``, ``values.<name>``. An unknown placeholder, a bad regex or a duplicate
name fails at start-up with the rule's name, not at the first alert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from driftloop_contracts import DAG_ID

from .errors import RulesError
from .payloads import Alert

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[^}]+)?)\}")
_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[^}]+)?)\}$")
_FIELDS = frozenset(
    {
        "source",
        "status",
        "alertname",
        "labels",
        "annotations",
        "values",
        "fingerprint",
        "group_key",
        "starts_at",
        "ends_at",
        "generator_url",
        "receiver",
        "rule",
        "dag_id",
        "dag_run_id",
    }
)
_MAPS = frozenset({"labels", "annotations", "values"})

#: The conf a rule sends when it names none: what the retraining DAG records on the run.
DEFAULT_CONF: dict[str, Any] = {
    "reason": "alert ${alertname} (${source})",
    "alertname": "${alertname}",
    "labels": "${labels}",
    "values": "${values}",
    "annotations": "${annotations}",
    "fingerprint": "${fingerprint}",
    "starts_at": "${starts_at}",
    "source": "${source}",
    "rule": "${rule}",
    "dag_run_id": "${dag_run_id}",
}


@dataclass(frozen=True)
class Matcher:
    """One label condition: equals one of ``values``, or full-matches ``pattern``."""

    label: str
    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        return value in self.values


@dataclass(frozen=True)
class Rule:
    name: str
    dag_id: str
    matchers: tuple[Matcher, ...]
    conf: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONF))

    def matches(self, alert: Alert) -> bool:
        return all(m.matches(alert.labels) for m in self.matchers)

    def render_conf(self, alert: Alert, dag_run_id: str) -> dict[str, Any]:
        """The DAG run's ``conf`` for this alert (JSON-serialisable)."""
        context = _context(alert, self, dag_run_id)
        return _render(self.conf, context)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def match(self, alert: Alert) -> Rule | None:
        for rule in self.rules:
            if rule.matches(alert):
                return rule
        return None

    def __len__(self) -> int:
        return len(self.rules)


def _context(alert: Alert, rule: Rule, dag_run_id: str) -> dict[str, Any]:
    return {
        "source": alert.source,
        "status": alert.status,
        "alertname": alert.name,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "values": dict(alert.values),
        "fingerprint": alert.fingerprint,
        "group_key": alert.group_key,
        "starts_at": alert.starts_at.isoformat(),
        "ends_at": alert.ends_at.isoformat() if alert.ends_at else None,
        "generator_url": alert.generator_url,
        "receiver": alert.receiver,
        "rule": rule.name,
        "dag_id": rule.dag_id,
        "dag_run_id": dag_run_id,
    }


def _lookup(path: str, context: Mapping[str, Any]) -> Any:
    head, _, key = path.partition(".")
    value = context[head]
    if key:
        return value.get(key)
    return value


def _render(template: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole:
            return _lookup(whole.group(1), context)

        def text(m: re.Match[str]) -> str:
            value = _lookup(m.group(1), context)
            return "" if value is None else str(value)

        return _PLACEHOLDER.sub(text, template)
    if isinstance(template, Mapping):
        return {str(k): _render(v, context) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, context) for v in template]
    return template


def _check_placeholders(template: Any, where: str) -> None:
    if isinstance(template, str):
        for m in _PLACEHOLDER.finditer(template):
            head, dot, key = m.group(1).partition(".")
            if head not in _FIELDS or (dot and (head not in _MAPS or not key)):
                raise RulesError(f"{where}: unknown placeholder ${{{m.group(1)}}}")
    elif isinstance(template, Mapping):
        for k, v in template.items():
            _check_placeholders(v, f"{where}.{k}")
    elif isinstance(template, list):
        for i, v in enumerate(template):
            _check_placeholders(v, f"{where}[{i}]")
    elif template is not None and not isinstance(template, bool | int | float):
        raise RulesError(f"{where}: unsupported value of type {type(template).__name__}")


def _matcher(label: str, spec: Any, where: str) -> Matcher:
    if isinstance(spec, str):
        return Matcher(label, values=(spec,))
    if isinstance(spec, list) and spec and all(isinstance(v, str) for v in spec):
        return Matcher(label, values=tuple(spec))
    if isinstance(spec, Mapping) and set(spec) == {"regex"} and isinstance(spec["regex"], str):
        try:
            return Matcher(label, pattern=re.compile(spec["regex"]))
        except re.error as exc:
            raise RulesError(f"{where}: bad regex {spec['regex']!r}: {exc}") from None
    raise RulesError(
        f"{where}: a matcher is a string, a non-empty list of strings or {{regex: ...}}"
    )


def parse_rules(data: Any, *, origin: str = "rules") -> RuleSet:
    """Validate the YAML document's data into a :class:`RuleSet`."""
    if not isinstance(data, Mapping):
        raise RulesError(f"{origin}: expected a mapping with 'rules'")
    version = data.get("version", 1)
    if version != 1:
        raise RulesError(f"{origin}: unsupported version {version!r} (expected 1)")
    items = data.get("rules")
    if not isinstance(items, list):
        raise RulesError(f"{origin}: 'rules' must be a list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{origin}: rules[{i}]"
        if not isinstance(item, Mapping):
            raise RulesError(f"{where}: expected a mapping")
        unknown = set(item) - {"name", "match", "dag_id", "conf", "description"}
        if unknown:
            raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RulesError(f"{where}: 'name' must match {_NAME.pattern}")
        where = f"{origin}: rule {name!r}"
        if name in seen:
            raise RulesError(f"{where}: duplicate name")
        seen.add(name)
        match = item.get("match")
        if not isinstance(match, Mapping) or not match:
            raise RulesError(f"{where}: 'match' must be a non-empty mapping of label matchers")
        matchers = tuple(
            _matcher(str(label), spec, f"{where}: match.{label}") for label, spec in match.items()
        )
        dag_id = item.get("dag_id", DAG_ID)
        if not isinstance(dag_id, str) or not dag_id.strip():
            raise RulesError(f"{where}: 'dag_id' must be a non-empty string")
        conf = item.get("conf", DEFAULT_CONF)
        if not isinstance(conf, Mapping):
            raise RulesError(f"{where}: 'conf' must be a mapping")
        _check_placeholders(conf, f"{where}: conf")
        rules.append(Rule(name=name, dag_id=dag_id, matchers=matchers, conf=dict(conf)))
    return RuleSet(tuple(rules))


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rules file; every problem is a :class:`RulesError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(data, origin=str(path))
