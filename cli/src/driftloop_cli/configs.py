"""Render the local stack's configuration files into the state directory.

The repository's files (prometheus/, alertmanager/, nginx/) are the single source; for the local
stack only hostnames, ports and paths are rewritten, so the two paths cannot drift apart.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from driftloop_contracts import HOST

from . import nginx_config
from .settings import REPO_ROOT, StackSettings


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)
    return path


def redis_conf(s: StackSettings) -> Path:
    data = s.state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return _write(
        s.state_dir / "conf" / "redis.conf",
        "\n".join(
            [
                f"bind {HOST}",
                f"port {s.ports.redis}",
                "protected-mode yes",
                "daemonize no",
                f"dir {data}",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                'logfile ""',
                # memory bound and eviction policy: one file for the local and Docker stacks
                f"include {REPO_ROOT / 'redis-conf' / 'limits.conf'}",
                "",
            ]
        ),
    )


def influxdb_conf(s: StackSettings) -> Path:
    d = s.state_dir / "influxdb"
    return _write(
        s.state_dir / "conf" / "influxdb.conf",
        f"""\
reporting-disabled = true
bind-address = "{HOST}:{s.ports.influxdb_rpc}"

[meta]
  dir = "{d / "meta"}"

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{s.ports.influxdb}"
  log-enabled = false

[monitor]
  store-enabled = false
""",
    )


def local_targets(s: StackSettings) -> dict[str, list[str]]:
    """Scrape targets per Prometheus job name of prometheus/prometheus.yml."""
    p = s.ports
    return {
        "model-api": [f"{HOST}:{p.model_api(i)}" for i in range(s.replicas)],
        "drift-consumer": [f"{HOST}:{p.drift_consumer}"],
        "bridge": [f"{HOST}:{p.bridge}"],
        "prometheus": [f"{HOST}:{p.prometheus}"],
        "alertmanager": [f"{HOST}:{p.alertmanager}"],
    }


def prometheus_conf(s: StackSettings) -> Path:
    doc: dict[str, Any] = yaml.safe_load((REPO_ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = local_targets(s)
    for job in doc.get("scrape_configs", []):
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    doc["rule_files"] = [str(REPO_ROOT / "prometheus" / "rules" / "*.yml")]
    doc["alerting"] = {
        "alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{s.ports.alertmanager}"]}]}]
    }
    return _write(s.state_dir / "conf" / "prometheus.yml", yaml.safe_dump(doc, sort_keys=False))


def bridge_token_file(s: StackSettings) -> Path:
    return _write(
        s.state_dir / "secrets" / "bridge_token",
        s.bridge_webhook_token.get_secret_value(),
        mode=0o600,
    )


def alertmanager_conf(s: StackSettings) -> Path:
    doc: dict[str, Any] = yaml.safe_load(
        (REPO_ROOT / "alertmanager" / "alertmanager.yml").read_text()
    )
    token_file = str(bridge_token_file(s))
    for receiver in doc.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            path = hook["url"].split("/", 3)[3]
            hook["url"] = f"{s.urls.bridge}/{path}"
            auth = hook.get("http_config", {}).get("authorization")
            if auth and "credentials_file" in auth:
                auth["credentials_file"] = token_file
    return _write(s.state_dir / "conf" / "alertmanager.yml", yaml.safe_dump(doc, sort_keys=False))


def nginx_conf(s: StackSettings) -> Path:
    (s.state_dir / "nginx").mkdir(parents=True, exist_ok=True)
    text = nginx_config.render(
        REPO_ROOT / "nginx" / "nginx.conf.template",
        listen_port=s.ports.nginx,
        replica_ports=[s.ports.model_api(i) for i in range(s.replicas)],
        state_dir=s.state_dir / "nginx",
    )
    return _write(s.state_dir / "conf" / "nginx.conf", text)


def airflow_jwt_secret(s: StackSettings) -> str:
    """A 64-byte secret generated once per state directory (never committed, never logged)."""
    if os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET"):
        return os.environ["AIRFLOW__API_AUTH__JWT_SECRET"]
    path = s.state_dir / "secrets" / "airflow_jwt_secret"
    if not path.exists():
        _write(path, secrets.token_hex(64), mode=0o600)
    return path.read_text().strip()


def airflow_passwords(s: StackSettings) -> Path:
    return _write(
        s.state_dir / "airflow" / "passwords.json",
        json.dumps({s.airflow_username: s.airflow_password.get_secret_value()}),
        mode=0o600,
    )
