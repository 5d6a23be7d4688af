"""The monitoring configuration, checked without a stack.

* The generated files (Grafana provisioning, dashboards, Prometheus alert rules) are current.
* ``promtool check config`` on the Prometheus config the local stack renders, ``promtool check
  rules``, ``promtool test rules`` (the rules' behaviour on synthetic series), ``amtool
  check-config`` and ``amtool config routes test`` (retraining alerts reach the bridge, nothing
  else does).
* Grafana provisioning files validate against strict models of what Grafana reads
  (driftloop_monitoring.provisioning_models); dashboards against grafana-foundation-sdk's model
  of Grafana's dashboard schema (driftloop_monitoring.dashboard_schema); every datasource uid a
  panel, annotation, variable or rule references exists; dashboard uids are unique; rule links
  point at existing panels.
* The two alert paths are the same rules: same names, same expressions, same routing label.
* Every metric a query reads is one the services define (their own metric registries); every
  PromQL query parses (promql-parser).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftloop_cli import configs
from driftloop_cli.settings import REPO_ROOT, StackSettings
from driftloop_monitoring import (
    alerts,
    dashboard_schema,
    names,
    promql,
    provisioning_models,
    queries,
    render,
)

GRAFANA = REPO_ROOT / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DASHBOARDS = GRAFANA / "dashboards"
RULES_DIR = REPO_ROOT / "prometheus" / "rules"
ALERTMANAGER = REPO_ROOT / "alertmanager" / "alertmanager.yml"
RETRAIN_ALERTS = {
    "DriftFeatureHigh",
    "DriftPredictionHigh",
    "SequentialDriftHigh",
    "PerformanceDegraded",
}
#: The gauge each retraining rule compares with: thresholds are data the consumer exports.
RETRAIN_THRESHOLD_GAUGES = {
    "DriftFeatureHigh": "driftloop_drift_threshold",
    "DriftPredictionHigh": "driftloop_drift_threshold",
    "SequentialDriftHigh": "driftloop_sequential_alert_threshold",
    "PerformanceDegraded": "driftloop_drift_threshold",
}


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(str(cmd[0])) is None:
        pytest.fail(f"{cmd[0]} is not installed (Debian: prometheus / prometheus-alertmanager)")
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=60, check=False
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture
def local_settings(tmp_path: Path) -> StackSettings:
    return StackSettings(base_port=38000, state_dir=tmp_path / "state").resolved()


def alerting_docs() -> dict[str, Any]:
    return {
        p.name: yaml.safe_load(p.read_text()) for p in (PROVISIONING / "alerting").glob("*.yml")
    }


def dashboards() -> list[queries.Dashboard]:
    return queries.load_dashboards(DASHBOARDS)


# --- generated files -------------------------------------------------------------------------


def test_generated_files_are_current() -> None:
    stale = [
        rel
        for rel, text in render.files().items()
        if not (REPO_ROOT / rel).exists() or (REPO_ROOT / rel).read_text() != text
    ]
    assert not stale, f"regenerate with `uv run python -m driftloop_monitoring`: {stale}"


# --- Prometheus and Alertmanager tools -----------------------------------------------------------


def test_promtool_checks_the_rendered_local_config(local_settings: StackSettings) -> None:
    path = configs.prometheus_conf(local_settings)
    output = assert_ok(run("promtool", "check", "config", path))
    assert "SUCCESS" in output
    rendered = yaml.safe_load(path.read_text())
    assert {job["job_name"] for job in rendered["scrape_configs"]} == {
        "model-api",
        "drift-consumer",
        "bridge",
        "prometheus",
        "alertmanager",
    }
    # the rendered config loads the repository's rule files (one source for both setups)
    assert rendered["rule_files"] == [str(RULES_DIR / "*.yml")]
    assert str(RULES_DIR / "driftloop-alerts.yml") in output


def test_promtool_checks_the_docker_config_syntax() -> None:
    output = assert_ok(
        run(
            "promtool",
            "check",
            "config",
            "--syntax-only",
            REPO_ROOT / "prometheus" / "prometheus.yml",
        )
    )
    assert "SUCCESS" in output


def test_promtool_checks_the_rules() -> None:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files
    output = assert_ok(run("promtool", "check", "rules", *files))
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in output


def test_rules_behave_on_synthetic_series() -> None:
    """promtool's rule unit tests: firing labels, annotations, thresholds raised and lowered."""
    tests = sorted((REPO_ROOT / "prometheus" / "tests").glob("*.yml"))
    assert tests
    output = assert_ok(run("promtool", "test", "rules", *tests))
    assert "SUCCESS" in output


def test_amtool_checks_repository_and_rendered_configs(local_settings: StackSettings) -> None:
    assert "SUCCESS" in assert_ok(run("amtool", "check-config", ALERTMANAGER))
    rendered = configs.alertmanager_conf(local_settings)
    assert "SUCCESS" in assert_ok(run("amtool", "check-config", rendered))
    doc = yaml.safe_load(rendered.read_text())
    bridge = next(r for r in doc["receivers"] if r["name"] == "bridge")
    hook = bridge["webhook_configs"][0]
    assert hook["url"] == f"http://127.0.0.1:{local_settings.ports.bridge}/webhooks/alertmanager"
    assert Path(hook["http_config"]["authorization"]["credentials_file"]).exists()


@pytest.mark.parametrize("spec", alerts.ALERTS, ids=lambda s: s.name)
def test_alertmanager_routes_only_retraining_alerts_to_the_bridge(spec: alerts.AlertSpec) -> None:
    labels = [f"alertname={spec.name}", *(f"{k}={v}" for k, v in spec.labels.items())]
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert_ok(result)
    assert result.stdout.strip() == ("bridge" if spec.retrain else "null"), result.stdout


# --- the two alert paths are the same rules ----------------------------------------------------


def prometheus_rules_by_name() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in queries.prometheus_rules(RULES_DIR) if "alert" in r}


def grafana_rules_by_title() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((PROVISIONING / "alerting" / "rules.yml").read_text())
    return {r["title"]: r for g in doc["groups"] for r in g["rules"]}


def test_retraining_alerts_carry_the_route_label_and_operational_ones_do_not() -> None:
    prom = prometheus_rules_by_name()
    graf = grafana_rules_by_title()
    assert set(prom) == set(graf)
    retrain = {
        n for n, r in prom.items() if r["labels"].get(names.ROUTE_LABEL) == names.RETRAIN_ROUTE
    }
    assert retrain == RETRAIN_ALERTS
    for name, rule in graf.items():
        assert (rule["labels"].get(names.ROUTE_LABEL) == names.RETRAIN_ROUTE) == (
            name in RETRAIN_ALERTS
        )
        assert prom[name]["labels"] == rule["labels"], name
    assert {
        "ReplicaDown",
        "DriftConsumerStalled",
        "DriftConsumerLagging",
        "KafkaPublishFailures",
        "BridgeDeadLetters",
    } <= set(prom) - retrain


def test_the_bridge_retrains_on_exactly_the_retraining_alerts() -> None:
    """The bridge's default routing rules name the same four alerts (its file, read only)."""
    doc = yaml.safe_load((REPO_ROOT / "services" / "bridge" / "rules.yaml").read_text())
    matched = {name for rule in doc["rules"] for name in rule["match"].get("alertname", [])}
    assert matched == RETRAIN_ALERTS


@pytest.mark.parametrize("title", sorted(grafana_rules_by_title()))
def test_grafana_and_prometheus_rules_are_the_same_expression(title: str) -> None:
    graf = grafana_rules_by_title()[title]
    prom = prometheus_rules_by_name()[title]
    nodes = {n["refId"]: n["model"] for n in graf["data"]}
    cut = promql.comparison(prom["expr"])
    assert cut is not None, prom["expr"]
    assert promql.text(cut.lhs) == promql.canonical(nodes["A"]["expr"])
    condition = nodes[graf["condition"]]
    if condition["type"] == "math":
        assert condition["expression"] == f"$A {cut.op} $B"
        assert promql.text(cut.rhs) == promql.canonical(nodes["B"]["expr"])
    else:
        assert condition["type"] == "threshold" and condition["expression"] == "A"
        evaluator = condition["conditions"][0]["evaluator"]
        assert {"gt": ">", "lt": "<"}[evaluator["type"]] == cut.op
        assert promql.is_number(cut.rhs)
        assert evaluator["params"] == [float(promql.text(cut.rhs))]
    # Grafana evaluates every query as an instant vector, as Prometheus evaluates a rule
    assert all(m.get("instant") for m in nodes.values() if "expr" in m)


def test_drift_rules_compare_with_the_threshold_gauge_for_every_statistic() -> None:
    """No statistic or number is hard-coded in a drift rule: the gauge carries the threshold."""
    assert set(RETRAIN_THRESHOLD_GAUGES) == RETRAIN_ALERTS
    for name, gauge in RETRAIN_THRESHOLD_GAUGES.items():
        expr = prometheus_rules_by_name()[name]["expr"]
        cut = promql.comparison(expr)
        assert cut is not None
        assert gauge in promql.metric_names(promql.text(cut.rhs)), expr
        assert not re.search(r'statistic=~?"(psi|ks|wasserstein)', expr), expr
        assert not promql.is_number(cut.rhs)


# --- Grafana provisioning structure ------------------------------------------------------------


def test_datasources_file_is_valid_with_fixed_uids() -> None:
    doc = provisioning_models.DataSourcesFile.model_validate(
        yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    )
    uids = {ds.uid: ds.type for ds in doc.datasources}
    assert uids == {
        names.PROMETHEUS_UID: "prometheus",
        names.INFLUXDB_UID: "influxdb",
        names.ALERTMANAGER_UID: "alertmanager",
    }


def test_dashboard_provider_is_valid() -> None:
    doc = provisioning_models.DashboardProvidersFile.model_validate(
        yaml.safe_load((PROVISIONING / "dashboards" / "driftloop.yml").read_text())
    )
    assert [p.options.path for p in doc.providers] == [names.DASHBOARDS_CONTAINER_PATH]


@pytest.mark.parametrize("name", sorted(alerting_docs()))
def test_alerting_files_are_valid(name: str) -> None:
    provisioning_models.AlertingFile.model_validate(alerting_docs()[name])


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboards_are_valid(path: Path) -> None:
    """Every key and value survives grafana-foundation-sdk's model of the dashboard schema."""
    model = json.loads(path.read_text())
    assert dashboard_schema.problems(model) == []
    ids = [p["id"] for p in queries.iter_panels(model["panels"])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    assert model["schemaVersion"] >= 36


def test_invalid_provisioning_is_rejected() -> None:
    """The models are strict: a misspelt key or an impossible value fails (self-test)."""
    rules = alerting_docs()["rules.yml"]
    bad = json.loads(json.dumps(rules))
    bad["groups"][0]["rules"][0]["dashboardUID"] = "x"
    with pytest.raises(ValueError, match="dashboardUID"):
        provisioning_models.AlertingFile.model_validate(bad)
    bad = json.loads(json.dumps(rules))
    bad["groups"][0]["rules"][0]["condition"] = "Z"
    with pytest.raises(ValueError, match="condition Z"):
        provisioning_models.AlertingFile.model_validate(bad)
    bad = json.loads(json.dumps(rules))
    bad["groups"][0]["rules"][0]["noDataState"] = "Ok"
    with pytest.raises(ValueError):
        provisioning_models.AlertingFile.model_validate(bad)
    bad = json.loads(json.dumps(rules))
    bad["groups"][0]["interval"] = "15s"
    with pytest.raises(ValueError, match="multiple of 10s"):
        provisioning_models.AlertingFile.model_validate(bad)
    dash = json.loads((DASHBOARDS / "drift.json").read_text())
    dash["panels"][1]["gridpos"] = dash["panels"][1].pop("gridPos")
    dash["panels"][1]["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 2
    dash["panels"][1]["targets"][0]["editorMode"] = "cod"
    dash["panels"][2]["targets"][0]["datasource"] = {"type": "loki", "uid": "x"}
    found = "\n".join(dashboard_schema.problems(dash))
    for expected in ("gridpos", "lineWidht", "editorMode='cod'", "unknown datasource type"):
        assert expected in found, found


def test_every_referenced_datasource_uid_exists() -> None:
    provisioned = {
        ds["uid"]
        for ds in yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())[
            "datasources"
        ]
    }
    known = provisioned | names.BUILTIN_DATASOURCE_UIDS | {names.EXPRESSION_UID}
    referenced: list[tuple[str, str]] = []
    for dash in dashboards():
        model = dash.model
        for panel in queries.iter_panels(model["panels"]):
            for ref in [
                panel.get("datasource"),
                *(t.get("datasource") for t in panel.get("targets", [])),
            ]:
                if ref:
                    referenced.append((ref["uid"], f"{dash.uid} panel {panel['id']}"))
        for ann in model["annotations"]["list"]:
            referenced.append((ann["datasource"]["uid"], f"{dash.uid} annotation {ann['name']}"))
        for var in model["templating"]["list"]:
            if var.get("datasource"):
                referenced.append((var["datasource"]["uid"], f"{dash.uid} variable {var['name']}"))
    for group in alerting_docs()["rules.yml"]["groups"]:
        for rule in group["rules"]:
            for node in rule["data"]:
                referenced.append((node["datasourceUid"], f"rule {rule['title']}"))
                referenced.append(
                    (node["model"]["datasource"]["uid"], f"rule {rule['title']} model")
                )
    missing = [(uid, where) for uid, where in referenced if uid not in known]
    assert referenced and not missing, missing


def test_dashboard_uids_are_unique_and_rule_links_resolve() -> None:
    uids = [d.uid for d in dashboards()]
    assert len(uids) == len(set(uids)) == 3
    assert set(uids) == {
        names.MODEL_SERVICE_DASHBOARD_UID,
        names.DRIFT_DASHBOARD_UID,
        names.LOOP_DASHBOARD_UID,
    }
    panels = {
        d.uid: {p["id"] for p in queries.iter_panels(d.model["panels"])} for d in dashboards()
    }
    for title, rule in grafana_rules_by_title().items():
        if "dashboardUid" in rule:
            assert rule["panelId"] in panels[rule["dashboardUid"]], title


def test_alerting_uids_and_titles_are_unique() -> None:
    rules = [r for g in alerting_docs()["rules.yml"]["groups"] for r in g["rules"]]
    assert len({r["uid"] for r in rules}) == len(rules)
    assert len({r["title"] for r in rules}) == len(rules)
    receivers = [
        rc["uid"]
        for cp in alerting_docs()["contact-points.yml"]["contactPoints"]
        for rc in cp["receivers"]
    ]
    assert len(set(receivers)) == len(receivers)


def test_policy_routes_retraining_alerts_to_the_bridge_webhook_with_env_credentials() -> None:
    contact_points = {
        cp["name"]: cp for cp in alerting_docs()["contact-points.yml"]["contactPoints"]
    }
    (policy,) = alerting_docs()["policies.yml"]["policies"]

    def receivers(route: dict[str, Any]) -> list[str]:
        return [route["receiver"], *(r for sub in route.get("routes", []) for r in receivers(sub))]

    assert set(receivers(policy)) <= set(contact_points)
    (retrain,) = [
        r
        for r in policy["routes"]
        if [names.ROUTE_LABEL, "=", names.RETRAIN_ROUTE] in r["object_matchers"]
    ]
    assert retrain["receiver"] == names.BRIDGE_CONTACT_POINT
    assert policy["receiver"] != names.BRIDGE_CONTACT_POINT
    (hook,) = contact_points[names.BRIDGE_CONTACT_POINT]["receivers"]
    assert hook["type"] == "webhook"
    assert hook["settings"]["url"].endswith("/webhooks/grafana")
    assert hook["settings"]["authorization_scheme"] == "Bearer"
    # a variable Grafana interpolates from the environment, never a literal secret
    assert hook["settings"]["authorization_credentials"] == f"${names.BRIDGE_TOKEN_ENV}"


def test_dashboard_queries_use_only_defined_variables() -> None:
    builtin = set(queries.builtins(60)) | {
        "timeFilter",
        "__timeFilter",
        "col",
        "tag_feature",
        "tag_statistic",
        "tag_partition",
        "tag_model_version",
    }
    for dash in dashboards():
        defined = {v.name for v in dash.variables} | builtin
        texts = [q.text for q in queries.dashboard_queries(dash)]
        texts += [p.get("title", "") for p in queries.iter_panels(dash.model["panels"])]
        texts += [link.get("url", "") for link in dash.model["links"]]
        for text in texts:
            for var in queries.unresolved(text):
                name = re.sub(r"[${}\[\]]", "", var).split(":")[0]
                assert name in defined, f"{dash.uid}: {var} in {text!r}"


# --- metric names ---------------------------------------------------------------------------


def service_metric_names() -> set[str]:
    """Every metric family the three services register (from their own metric modules)."""
    from prometheus_client import CollectorRegistry

    from driftloop_bridge.metrics import BridgeMetrics
    from driftloop_drift_consumer.metrics import ConsumerMetrics
    from driftloop_model_api.metrics import Metrics
    from driftloop_model_api.shadow import ShadowMetrics

    model_api = Metrics("t", CollectorRegistry())
    ShadowMetrics(model_api.registry, "t")  # the shadow's series, on the replica's registry
    out: set[str] = set()
    for registry in (
        model_api.registry,
        ConsumerMetrics(CollectorRegistry()).registry,
        BridgeMetrics(CollectorRegistry()).registry,
    ):
        for family in registry.collect():
            out.add(family.name)
            if family.type == "counter":
                out.add(f"{family.name}_total")
    return out


def test_every_metric_read_is_defined_by_a_service() -> None:
    defined = service_metric_names() | {"up", "ALERTS"}
    texts = [r["expr"] for r in queries.prometheus_rules(RULES_DIR)]
    texts += [
        text
        for d in dashboards()
        for q in queries.dashboard_queries(d)
        if (text := queries.offline_promql(q, d))
    ]
    used = set().union(*(promql.metric_names(t) for t in texts))  # each one parses, too
    unknown = {m for m in used if promql.base_metric(m) not in defined and m not in defined}
    assert used and not unknown, unknown


def test_promql_operands() -> None:
    """Self-test of the operand helpers the live test relies on."""
    expr = '(time() - max(x) and on() (sum(rate(y{a!="b"}[2m])) > 0)) > 30'
    assert promql.operands_needing_data(expr) == [
        promql.canonical("time() - max(x)"),
        promql.canonical('sum(rate(y{a!="b"}[2m]))'),
    ]
    assert promql.operands_needing_data("a or b * 0") == [promql.canonical("a or b * 0")]
    assert promql.operands_needing_data("a unless b") == ["a"]
    cut = promql.comparison("max by (m) (x) > on() group_left() max(y)")
    assert cut and cut.modifier == "on () group_left ()" and promql.text(cut.rhs) == "max(y)"
    assert promql.metric_names('sum(driftloop_a_total{x="driftloop_b"}) / up') == {
        "driftloop_a_total",
        "up",
    }
    with pytest.raises(ValueError, match="not PromQL"):
        promql.parse("rate(x[$__rate_interval])")
