"""scripts/check_secrets.py: the step before `docker compose up` that refuses example secrets.

Each test writes an env file of its own (from the real .env.example) and runs the script's
``main`` on it, with an explicit environment (Compose lets the shell override the file).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / ".env.example"
SCRIPT = REPO / "scripts" / "check_secrets.py"


@pytest.fixture(scope="module")
def cs() -> Any:
    """The script as a module (a script, not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("check_secrets", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def good_env(tmp_path: Path, cs) -> Path:
    path = tmp_path / ".env"
    assert cs.main(["--env-file", str(path), "--init"], environ={}) == 0
    return path


def set_value(path: Path, name: str, value: str) -> None:
    lines = path.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{name}=")]
    assert len(hits) == 1, name
    lines[hits[0]] = f"{name}={value}"
    path.write_text("\n".join(lines) + "\n")


def run(cs, path: Path, environ: dict[str, str] | None = None) -> int:
    return cs.main(["--env-file", str(path)], environ=environ or {})


def test_the_secrets_are_the_env_examples_secrets_section(cs) -> None:
    names = cs.secret_names(EXAMPLE.read_text())
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "MLFLOW_ADMIN_PASSWORD"} <= set(names)
    assert {"DRIFTLOOP_BRIDGE_HMAC_SECRET", "AIRFLOW_FERNET_KEY"} <= set(names)
    # user names and ports are not secrets
    assert not {
        "MINIO_ROOT_USER",
        "DRIFTLOOP_AIRFLOW_USERNAME",
        "DRIFTLOOP_DOCKER_NGINX_PORT",
    } & set(names)


def test_a_copy_of_the_example_is_refused_naming_every_secret(
    cs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ".env"
    path.write_text(EXAMPLE.read_text())
    assert run(cs, path) == 1
    err = capsys.readouterr().err
    names = cs.secret_names(EXAMPLE.read_text())
    for name in names:
        assert f"{name}: still the .env.example placeholder" in err
    assert f"{len(names)} secret(s) not ready" in err


def test_init_writes_fresh_secrets_that_pass_and_never_overwrites(
    cs, good_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert good_env.stat().st_mode & 0o777 == 0o600
    assert run(cs, good_env) == 0
    example = cs.parse_env(EXAMPLE.read_text())
    written = cs.parse_env(good_env.read_text())
    assert set(written) == set(example)
    for name in cs.secret_names(EXAMPLE.read_text()):
        assert written[name] != example[name]
    for name in set(example) - set(cs.secret_names(EXAMPLE.read_text())):
        assert written[name] == example[name], name
    before = good_env.read_text()
    assert cs.main(["--env-file", str(good_env), "--init"], environ={}) == 1
    assert good_env.read_text() == before
    assert "not overwriting" in capsys.readouterr().err


def test_one_placeholder_left_is_named_alone(
    cs, good_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_value(good_env, "REDIS_PASSWORD", "CHANGE-ME-redis")
    assert run(cs, good_env) == 1
    err = capsys.readouterr().err
    assert "REDIS_PASSWORD: still the .env.example placeholder" in err
    assert "1 secret(s) not ready" in err


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("GRAFANA_ADMIN_PASSWORD", "", "empty"),
        ("MLFLOW_DB_PASSWORD", "p@ss/word", "goes into a URL"),
        ("REDIS_PASSWORD", "has space", "goes into a URL"),
        ("MLFLOW_ADMIN_PASSWORD", "short-pw", "shorter than 12"),
        ("AIRFLOW_FERNET_KEY", "not-a-fernet-key", "not a Fernet key"),
    ],
)
def test_unusable_values_are_refused(
    cs,
    good_env: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    reason: str,
) -> None:
    set_value(good_env, name, value)
    assert run(cs, good_env) == 1
    assert f"{name}: {reason}" in capsys.readouterr().err


def test_a_missing_secret_is_refused(
    cs, good_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        line
        for line in good_env.read_text().splitlines()
        if not line.startswith("POSTGRES_PASSWORD=")
    ]
    good_env.write_text("\n".join(lines) + "\n")
    assert run(cs, good_env) == 1
    assert "POSTGRES_PASSWORD: missing" in capsys.readouterr().err


def test_the_shell_environment_overrides_the_file_as_in_compose(
    cs, good_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(cs, good_env, {"DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN": "CHANGE-ME-webhook-token"}) == 1
    assert "DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN: still the" in capsys.readouterr().err


def test_url_variables_come_from_the_compose_file(cs) -> None:
    found = cs.url_variables((REPO / "docker-compose.yml").read_text())
    assert {"MLFLOW_DB_PASSWORD", "AIRFLOW_DB_PASSWORD", "REDIS_PASSWORD"} <= found
    assert "GRAFANA_ADMIN_PASSWORD" not in found


def test_the_command_line_exits_non_zero_on_the_example(tmp_path: Path) -> None:
    """The real command, as docs/docker.md runs it (stdlib only, no project environment)."""
    env_file = tmp_path / ".env"
    env_file.write_text(EXAMPLE.read_text())
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    refused = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), "--env-file", str(env_file)],
        capture_output=True, text=True, timeout=60, env=clean,
    )  # fmt: skip
    assert refused.returncode == 1 and "POSTGRES_PASSWORD" in refused.stderr
    fresh = tmp_path / "fresh.env"
    ok = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), "--env-file", str(fresh), "--init"],
        capture_output=True, text=True, timeout=60, env=clean,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "all 15 secrets set" in ok.stdout or "secrets set and not the examples" in ok.stdout
