"""Routing rules: the default file, matcher forms, conf templates and start-up validation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from driftloop_bridge.errors import RulesError
from driftloop_bridge.payloads import Alert, parse_grafana
from driftloop_bridge.rules import load_rules, parse_rules
from driftloop_bridge.settings import DEFAULT_RULES_FILE
from driftloop_contracts import DAG_ID


def _alert(**labels: str) -> Alert:
    return Alert(
        source="alertmanager",
        status="firing",
        labels=labels,
        annotations={"summary": "s"},
        starts_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        ends_at=None,
        fingerprint="f00d",
        group_key="{}:{}",
        values={"A": 0.5},
    )


@pytest.mark.parametrize("name", ["DriftFeatureHigh", "DriftPredictionHigh", "PerformanceDegraded"])
def test_default_rules_route_the_retraining_alerts_to_the_dag(name: str) -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    rule = rules.match(_alert(alertname=name, severity="warning"))
    assert rule is not None
    assert rule.dag_id == DAG_ID


@pytest.mark.parametrize("name", ["ReplicaDown", "BridgeDeadLetters", "DatasourceNoData", ""])
def test_default_rules_ignore_everything_else(name: str) -> None:
    assert load_rules(DEFAULT_RULES_FILE).match(_alert(alertname=name)) is None


def test_default_conf_carries_labels_values_and_fingerprint(payload) -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    (alert,) = parse_grafana(payload("grafana_firing.json"))
    rule = rules.match(alert)
    assert rule is not None
    conf = rule.render_conf(alert, "run-1")
    assert conf["alertname"] == "DriftPredictionHigh"
    assert conf["labels"]["feature"] == "prediction"
    assert conf["values"] == {"A": 0.3125, "B": 0.25, "C": 1.0}
    assert conf["fingerprint"] == "a4b6e0f3c3d2e1f0"
    assert conf["starts_at"] == "2026-11-23T12:31:00+00:00"
    assert conf["source"] == "grafana"
    assert conf["dag_run_id"] == "run-1"
    assert conf["reason"] == "alert DriftPredictionHigh (grafana)"


def test_matcher_forms_and_first_match_wins() -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "critical-income",
                    "match": {"severity": "critical", "feature": {"regex": "median_.*"}},
                    "dag_id": "urgent",
                    "conf": {"why": "${labels.feature} at ${values.A}", "n": 3, "flag": True},
                },
                {"name": "any-drift", "match": {"alertname": ["DriftA", "DriftB"]}},
            ]
        }
    )
    critical = _alert(alertname="DriftA", severity="critical", feature="median_income_in_block")
    rule = rules.match(critical)
    assert rule is not None and rule.name == "critical-income" and rule.dag_id == "urgent"
    assert rule.render_conf(critical, "r") == {
        "why": "median_income_in_block at 0.5",
        "n": 3,
        "flag": True,
    }
    # regex is a full match, not a search
    partial = _alert(alertname="DriftB", severity="critical", feature="x_median_income")
    fallback = rules.match(partial)
    assert fallback is not None and fallback.name == "any-drift" and fallback.dag_id == DAG_ID
    assert rules.match(_alert(alertname="DriftC")) is None


def test_missing_label_renders_as_null_or_empty() -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "r",
                    "match": {"alertname": "A"},
                    "conf": {"whole": "${labels.nope}", "text": "x${labels.nope}y"},
                }
            ]
        }
    )
    alert = _alert(alertname="A")
    rule = rules.match(alert)
    assert rule is not None
    assert rule.render_conf(alert, "r") == {"whole": None, "text": "xy"}


def test_resolved_alerts_still_match_routing() -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    resolved = replace(_alert(alertname="DriftFeatureHigh"), status="resolved")
    assert rules.match(resolved) is not None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a mapping"),
        ({"version": 2, "rules": []}, "unsupported version"),
        ({"rules": {}}, "'rules' must be a list"),
        ({"rules": [{"name": "bad name", "match": {"a": "b"}}]}, "'name' must match"),
        (
            {"rules": [{"name": "a", "match": {"a": "b"}}, {"name": "a", "match": {"a": "c"}}]},
            "duplicate name",
        ),
        ({"rules": [{"name": "a", "match": {}}]}, "non-empty mapping"),
        ({"rules": [{"name": "a", "match": {"x": 1}}]}, "a matcher is a string"),
        ({"rules": [{"name": "a", "match": {"x": {"regex": "("}}}]}, "bad regex"),
        (
            {"rules": [{"name": "a", "match": {"x": "y"}, "conf": {"k": "${nope}"}}]},
            "unknown placeholder",
        ),
        (
            {"rules": [{"name": "a", "match": {"x": "y"}, "conf": {"k": "${fingerprint.x}"}}]},
            "unknown placeholder",
        ),
        ({"rules": [{"name": "a", "match": {"x": "y"}, "dag_id": ""}]}, "'dag_id'"),
        ({"rules": [{"name": "a", "match": {"x": "y"}, "typo": 1}]}, "unknown keys"),
    ],
)
def test_invalid_rules_fail_naming_the_problem(doc, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(doc)


def test_unreadable_or_invalid_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(bad)
