"""Print the Secrets the charts and the stores expect, built from driftloop's ``.env``.

The charts want credentials under their own Secret names and keys (Airflow's ``fernet-key``,
CloudNativePG's ``kubernetes.io/basic-auth`` roles, a SQLAlchemy URL with the password in it),
which kustomize cannot compose from ``.env``'s variables. This writes them as one
Kubernetes ``List`` on stdout, so nothing secret is written to disk or committed::

    python3 deploy/k8s/chart_secrets.py .env | kubectl apply -f -

Idempotent (``kubectl apply``), standard library only. The values come from the same
``.env`` docker compose reads (check it first with ``python3 scripts/check_secrets.py``).
``driftloop-secrets`` itself (every ``.env`` variable, for our own manifests) comes from the
kustomize overlay; tests/test_k8s_manifests.py checks every Secret the charts name exists here
or there.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "driftloop"
#: Postgres' read-write Service (CloudNativePG: <cluster>-rw), deploy/k8s/stores/postgres.yaml.
POSTGRES_HOST = "driftloop-postgres-rw"


def read_env(path: Path) -> dict[str, str]:
    """``path``'s variables as Compose reads them: scripts/check_secrets.py's ``parse_env``
    (one reading of ``.env`` for the checker, compose and this script)."""
    spec = importlib.util.spec_from_file_location(
        "check_secrets", REPO / "scripts" / "check_secrets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    values: dict[str, str] = module.parse_env(path.read_text())
    return values


def secret(name: str, data: dict[str, str], type_: str = "Opaque") -> dict[str, object]:
    """A Secret manifest with ``data`` base64-encoded."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": type_,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def chart_secrets(env: dict[str, str], api_secret_key: str) -> list[dict[str, object]]:
    """Every Secret of deploy/k8s/charts/*-values.yaml and deploy/k8s/stores/, from ``env``.

    ``api_secret_key`` signs Airflow UI sessions; it has no compose counterpart, so the caller
    makes a random one (rotating it logs people out, nothing else).
    """
    missing = [
        k
        for k in (
            "MLFLOW_DB_PASSWORD",
            "AIRFLOW_DB_PASSWORD",
            "AIRFLOW_FERNET_KEY",
            "AIRFLOW_JWT_SECRET",
            "AIRFLOW_ADMIN_USERNAME",
            "AIRFLOW_ADMIN_PASSWORD",
            "DRIFTLOOP_AIRFLOW_USERNAME",
            "DRIFTLOOP_AIRFLOW_PASSWORD",
        )
        if not env.get(k)
    ]
    if missing:
        raise SystemExit(f"missing in the env file: {', '.join(missing)}")
    passwords = {
        env["AIRFLOW_ADMIN_USERNAME"]: env["AIRFLOW_ADMIN_PASSWORD"],
        env["DRIFTLOOP_AIRFLOW_USERNAME"]: env["DRIFTLOOP_AIRFLOW_PASSWORD"],
    }
    if len(passwords) != 2:
        raise SystemExit("AIRFLOW_ADMIN_USERNAME and DRIFTLOOP_AIRFLOW_USERNAME must differ")
    basic_auth = "kubernetes.io/basic-auth"
    airflow_url = (
        f"postgresql+psycopg2://airflow:{env['AIRFLOW_DB_PASSWORD']}@{POSTGRES_HOST}:5432/airflow"
    )
    return [
        secret(
            "mlflow-db", {"username": "mlflow", "password": env["MLFLOW_DB_PASSWORD"]}, basic_auth
        ),
        secret(
            "airflow-db",
            {"username": "airflow", "password": env["AIRFLOW_DB_PASSWORD"]},
            basic_auth,
        ),
        secret("airflow-metadata", {"connection": airflow_url}),
        secret("airflow-fernet-key", {"fernet-key": env["AIRFLOW_FERNET_KEY"]}),
        secret("airflow-jwt-secret", {"jwt-secret": env["AIRFLOW_JWT_SECRET"]}),
        secret("airflow-api-secret-key", {"api-secret-key": api_secret_key}),
        secret("airflow-simple-auth", {"passwords.json": json.dumps(passwords)}),
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH_TO_.env | kubectl apply -f -", file=sys.stderr)
        return 2
    items = chart_secrets(read_env(Path(argv[1])), api_secret_key=secrets.token_urlsafe(32))
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
