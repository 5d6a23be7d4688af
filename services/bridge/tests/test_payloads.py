"""Parsing real-format Grafana and Alertmanager webhook bodies into :class:`Alert`.

Where the fixture formats come from (the senders' own sources and docs, read for this work):

* ``alertmanager_firing.json``, ``alertmanager_resolved.json``: prometheus/alertmanager
  ``notify/webhook/webhook.go`` (``Message``: ``template.Data`` + ``version: "4"``,
  ``groupKey``, ``truncatedAlerts``) and ``template/template.go`` (``Data`` and ``Alert``
  fields; Go's zero ``endsAt`` for a firing alert, nanosecond RFC 3339 timestamps).
* ``grafana_firing.json``, ``grafana_resolved.json``, ``grafana_nodata.json``: grafana/alerting
  ``receivers/webhook/v1/webhook.go`` (``webhookMessage``: ``ExtendedData`` + ``version: "1"``,
  groupKey, truncatedAlerts, orgId, title, state, message) and ``templates/template_data.go``
  (``ExtendedAlert``: silenceURL, dashboardURL, panelURL, ``values`` map of float64 — a nil
  map marshals as ``null`` —, valueString, orgId); field order and example values as in
  https://grafana.com/docs/grafana/v10.1/alerting/alerting-rules/manage-contact-points/webhook-notifier/
* ``alertmanager_0_25_firing_captured.json``, ``alertmanager_0_25_resolved_captured.json``:
  captured byte-for-byte from a real Alertmanager 0.25.0 (Debian's prometheus-alertmanager)
  posting to a ``webhook_config`` with ``http_config.authorization`` (Bearer) on this machine.
* ``grafana_v9_valuestring.json``: the Grafana 9.x body (``valueString`` only, no ``values``),
  https://grafana.com/docs/grafana/v9.4/alerting/manage-notifications/webhook-notifier
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from driftloop_bridge.errors import PayloadError
from driftloop_bridge.payloads import parse_alertmanager, parse_grafana


def test_alertmanager_firing_group_becomes_one_alert_per_entry(payload) -> None:
    alerts = parse_alertmanager(payload("alertmanager_firing.json"))
    assert len(alerts) == 2
    first, second = alerts
    assert first.source == "alertmanager"
    assert first.status == "firing"
    assert first.name == "DriftFeatureHigh"
    assert first.labels["feature"] == "median_income_in_block"
    assert first.fingerprint == "8c1f1b3c0f7b2a11"
    assert first.group_key.startswith("{}/{alertname=~")
    # Go writes nanoseconds; Python keeps microseconds, deterministically truncated.
    assert first.starts_at == datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=UTC)
    assert first.ends_at is None  # Go's zero time means "not ended"
    assert second.starts_at.utcoffset() == timedelta(hours=1)
    assert second.starts_at == datetime(
        2026, 11, 23, 12, 30, 45, tzinfo=timezone(timedelta(hours=1))
    )
    assert first.values == {}


def test_alertmanager_resolved_has_an_end(payload) -> None:
    (alert,) = parse_alertmanager(payload("alertmanager_resolved.json"))
    assert alert.status == "resolved"
    assert alert.ends_at == datetime(2026, 11, 23, 12, 48, 0, 500000, tzinfo=UTC)


def test_grafana_firing_keeps_values_and_labels(payload) -> None:
    (alert,) = parse_grafana(payload("grafana_firing.json"))
    assert alert.source == "grafana"
    assert alert.name == "DriftPredictionHigh"
    assert alert.values == {"A": 0.3125, "B": 0.25, "C": 1.0}
    assert alert.labels["grafana_folder"] == "driftloop"
    assert alert.fingerprint == "a4b6e0f3c3d2e1f0"
    assert alert.receiver == "driftloop-bridge"
    assert "__grafana_receiver__" in alert.group_key


def test_grafana_resolved(payload) -> None:
    (alert,) = parse_grafana(payload("grafana_resolved.json"))
    assert alert.status == "resolved"
    assert alert.ends_at == datetime(2026, 11, 23, 12, 52, tzinfo=UTC)


def test_grafana_nodata_alert_with_null_values(payload) -> None:
    (alert,) = parse_grafana(payload("grafana_nodata.json"))
    assert alert.name == "DatasourceNoData"
    assert alert.values == {}


def test_grafana_9_body_with_value_string_only(payload) -> None:
    (alert,) = parse_grafana(payload("grafana_v9_valuestring.json"))
    assert alert.name == "PerformanceDegraded"
    assert alert.values == {}
    assert alert.starts_at.utcoffset() == timedelta(hours=2)


def test_unknown_extra_fields_are_tolerated(payload) -> None:
    body = payload.json("grafana_firing.json")
    body["somethingNew"] = {"x": 1}
    body["alerts"][0]["imageURL"] = "http://img"
    body["alerts"][0]["futureField"] = [1, 2]
    (alert,) = parse_grafana(json.dumps(body).encode())
    assert alert.name == "DriftPredictionHigh"


def test_non_finite_grafana_values_become_null(payload) -> None:
    raw = payload("grafana_firing.json").replace(b'"A": 0.3125', b'"A": NaN')
    (alert,) = parse_grafana(raw)
    assert alert.values["A"] is None


def _problems(parse, raw: bytes) -> list[str]:
    with pytest.raises(PayloadError) as info:
        parse(raw)
    return [f"{p.field}: {p.message}" for p in info.value.problems]


def test_malformed_json_is_named() -> None:
    problems = _problems(parse_alertmanager, b'{"alerts": [')
    assert problems == ["body: not valid JSON"]


def test_non_object_body_is_named() -> None:
    assert "expected an object" in _problems(parse_grafana, b"[1, 2]")[0]


def test_missing_alerts_is_named(payload) -> None:
    body = payload.json("alertmanager_firing.json")
    del body["alerts"]
    problems = _problems(parse_alertmanager, json.dumps(body).encode())
    assert problems == ["alerts: Field required"]


def test_empty_alerts_is_refused(payload) -> None:
    body = payload.json("grafana_firing.json")
    body["alerts"] = []
    problems = _problems(parse_grafana, json.dumps(body).encode())
    assert problems[0].startswith("alerts: List should have at least 1 item")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda a: a.update(status="pending"), "alerts.0.status"),
        (lambda a: a.update(labels={"alertname": 3}), "alerts.0.labels.alertname"),
        (lambda a: a.update(labels="DriftFeatureHigh"), "alerts.0.labels"),
        (lambda a: a.pop("startsAt"), "alerts.0.startsAt: Field required"),
        (lambda a: a.update(startsAt=1795400000), "alerts.0.startsAt"),
        (lambda a: a.update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda a: a.update(values={"A": "0.3"}), "alerts.0.values.A"),
        (lambda a: a.update(fingerprint=12), "alerts.0.fingerprint"),
    ],
)
def test_wrong_types_name_the_field(payload, mutate, expected) -> None:
    body = payload.json("grafana_firing.json")
    mutate(body["alerts"][0])
    problems = _problems(parse_grafana, json.dumps(body).encode())
    assert any(p.startswith(expected) for p in problems), problems


def test_wrong_version_is_refused(payload) -> None:
    body = payload.json("alertmanager_firing.json")
    body["version"] = "3"
    problems = _problems(parse_alertmanager, json.dumps(body).encode())
    assert problems == ["version: expected '4' for the Alertmanager format, got '3'"]


def test_grafana_body_sent_to_alertmanager_parser_is_refused_by_version(payload) -> None:
    problems = _problems(parse_alertmanager, payload("grafana_firing.json"))
    assert problems[0].startswith("version: expected '4'")


def test_captured_alertmanager_0_25_firing_and_resolved_are_the_same_incident(payload) -> None:
    from driftloop_bridge.dedupe import dag_run_id_for

    (firing,) = parse_alertmanager(payload("alertmanager_0_25_firing_captured.json"))
    (resolved,) = parse_alertmanager(payload("alertmanager_0_25_resolved_captured.json"))
    assert firing.status == "firing" and resolved.status == "resolved"
    assert firing.fingerprint == resolved.fingerprint == "179ad3b413b9d9b2"
    assert firing.ends_at is None and resolved.ends_at is not None
    assert dag_run_id_for("r", firing) == dag_run_id_for("r", resolved)


def test_a_utf8_bom_is_tolerated_but_other_encodings_are_not(payload) -> None:
    (alert,) = parse_grafana(b"\xef\xbb\xbf" + payload("grafana_firing.json"))
    assert alert.name == "DriftPredictionHigh"
    utf16 = payload("grafana_firing.json").decode().encode("utf-16")
    assert _problems(parse_grafana, utf16) == ["body: not valid JSON"]


def test_too_deep_json_is_not_valid_json_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _problems(parse_alertmanager, deep) == ["body: not valid JSON"]
