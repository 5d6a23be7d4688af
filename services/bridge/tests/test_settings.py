"""Settings: refuse to start without a webhook token unless explicitly insecure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftloop_bridge.settings import BridgeSettings
from driftloop_contracts import PortPlan, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DRIFTLOOP_BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DRIFTLOOP_BRIDGE_AIRFLOW_PASSWORD", "pw")


def test_missing_token_fails_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN: Value error, not set"):
        load_settings(BridgeSettings)


def test_blank_token_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN", "   ")
    with pytest.raises(SettingsError, match="DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN"):
        load_settings(BridgeSettings)


def test_insecure_flag_allows_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_BRIDGE_ALLOW_UNAUTHENTICATED", "true")
    settings = load_settings(BridgeSettings)
    assert settings.webhook_token is None


def test_defaults_follow_the_port_plan_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN", "tok-123")
    settings = load_settings(BridgeSettings)
    assert settings.port == PortPlan().bridge
    assert settings.airflow_url.endswith(f":{PortPlan().airflow}")
    assert settings.rules_file.is_file()
    assert "tok-123" not in repr(settings)
    assert "pw" not in repr(settings.airflow_password)


def test_missing_password_and_rules_file_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_BRIDGE_AIRFLOW_PASSWORD")
    monkeypatch.setenv("DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN", "tok")
    monkeypatch.setenv("DRIFTLOOP_BRIDGE_RULES_FILE", "/nonexistent/rules.yaml")
    with pytest.raises(SettingsError) as info:
        load_settings(BridgeSettings)
    assert "DRIFTLOOP_BRIDGE_AIRFLOW_PASSWORD" in str(info.value)
    assert "DRIFTLOOP_BRIDGE_RULES_FILE: Value error, no such file" in str(info.value)


def test_main_exits_2_with_the_variable_name(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DRIFTLOOP_BRIDGE_AIRFLOW_PASSWORD": "pw"}
    proc = subprocess.run(
        [sys.executable, "-m", "driftloop_bridge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN" in proc.stderr
