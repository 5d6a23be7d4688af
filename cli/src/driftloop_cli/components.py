"""Every process of the local stack: how supervisord starts it, where it listens, how it is probed.

This is the one list of the stack. `up`, `status`, `down`, the supervisord config and the test
fixtures all read it.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from driftloop_contracts import HOST

from . import configs
from .settings import REPO_ROOT, StackSettings


@dataclass(frozen=True)
class Component:
    """One supervised program."""

    name: str
    command: list[str]
    port: int | None
    url: str
    probe: str
    env: dict[str, str] = field(default_factory=dict)
    priority: int = 100
    startsecs: int = 1
    directory: Path = REPO_ROOT
    #: Services that need others to be healthy first are only waited for, never ordered:
    #: each retries its dependencies itself.
    group: str = "infra"
    #: Our services also answer readiness (can it do its job, and why not): `status` shows it;
    #: `up` waits for liveness only (a replica is not ready before a champion exists).
    readiness_path: str | None = None


def service_available(module: str) -> bool:
    return importlib.util.find_spec(f"{module}.__main__") is not None


def build_components(s: StackSettings) -> list[Component]:
    p = s.ports
    py = sys.executable
    state = s.state_dir
    common = {"PYTHONUNBUFFERED": "1", "SCIKIT_LEARN_DATA": str(s.scikit_learn_data)}
    mlflow_uri = s.urls.mlflow
    kafka = s.urls.kafka
    redis_url = s.urls.redis
    comps = [
        Component(
            "kafka",
            [py, "-m", "driftloop_cli.kafka_broker", str(p.kafka)],
            p.kafka,
            f"kafka://{kafka}",
            "kafka",
            env=common,
            priority=10,
            startsecs=2,
        ),
        Component(
            "redis",
            ["redis-server", str(configs.redis_conf(s))],
            p.redis,
            redis_url,
            "redis",
            priority=10,
        ),
        Component(
            "influxdb",
            ["influxd", "-config", str(configs.influxdb_conf(s))],
            p.influxdb,
            s.urls.influxdb,
            "influxdb",
            priority=10,
        ),
        Component(
            "mlflow",
            [
                py,
                "-m",
                # `mlflow server`, exec'ing its uvicorn rather than waiting beside it (-260 MiB)
                "driftloop_cli.mlflow_server",
                "--host",
                HOST,
                "--port",
                str(p.mlflow),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
                "--artifacts-destination",
                str(state / "mlflow" / "artifacts"),
            ],
            p.mlflow,
            mlflow_uri,
            "mlflow",
            env={
                **common,
                "PATH": f"{Path(py).parent}:/usr/bin:/bin",
                # the job runner pre-forks ~7 workers of ~200 MB that driftloop never uses
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
            priority=20,
        ),
        Component(
            "prometheus",
            [
                "prometheus",
                f"--config.file={configs.prometheus_conf(s)}",
                f"--storage.tsdb.path={state / 'prometheus'}",
                f"--web.listen-address={HOST}:{p.prometheus}",
                "--web.enable-lifecycle",
            ],
            p.prometheus,
            s.urls.prometheus,
            "prometheus",
            priority=30,
        ),
        Component(
            "alertmanager",
            [
                "prometheus-alertmanager",
                f"--config.file={configs.alertmanager_conf(s)}",
                f"--storage.path={state / 'alertmanager'}",
                f"--web.listen-address={HOST}:{p.alertmanager}",
                "--cluster.listen-address=",
            ],
            p.alertmanager,
            s.urls.alertmanager,
            "alertmanager",
            priority=30,
        ),
    ]
    comps += airflow_components(s, common, mlflow_uri, kafka)
    comps += service_components(s, common, mlflow_uri, kafka, redis_url)
    return comps


#: The local bridge's cooldown: one retrain per 2 minutes per DAG, for the loop budget (the
#: bridge's production default is 15 minutes). bench/bench_loop.py waits it out between runs.
LOCAL_BRIDGE_COOLDOWN_SECONDS = 120

#: Airflow's LocalExecutor whose worker imports pandas/scikit-learn/MLflow once for every task
#: (airflow/lib/driftloop_airflow/preloading_executor.py).
PRELOADING_EXECUTOR = "driftloop_airflow.preloading_executor.PreloadingLocalExecutor"


def airflow_env(s: StackSettings) -> dict[str, str]:
    p = s.ports
    home = s.state_dir / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # One LocalExecutor worker that has imported the tasks' libraries once (the DAG is a
        # chain with max_active_runs=1: one task at a time); docs/performance.md.
        "AIRFLOW__CORE__EXECUTOR": PRELOADING_EXECUTOR,
        "AIRFLOW__CORE__PARALLELISM": "1",
        "PYTHONPATH": str(REPO_ROOT / "airflow" / "lib"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.airflow_username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(p.airflow),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.urls.airflow}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": configs.airflow_jwt_secret(s),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The scheduler loop sleeps this long when it found nothing to do (default 1 s): it is the
        # gap between a trigger and the run starting, and between one task and the next.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        # A task's supervisor waits for its process's exit in a select() of up to this many
        # seconds (default 5) once the task closed its sockets, and holds the one worker until
        # then: up to 5 s between a task's end and the next task's start (docs/performance.md).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }


def airflow_components(
    s: StackSettings, common: dict[str, str], mlflow_uri: str, kafka: str
) -> list[Component]:
    bin_dir = s.airflow_venv / "bin"
    env = {
        **common,
        **airflow_env(s),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DRIFTLOOP_TRAINING_MLFLOW_TRACKING_URI": mlflow_uri,
        "DRIFTLOOP_TRAINING_KAFKA_BOOTSTRAP": kafka,
        "DRIFTLOOP_TRAINING_LABELLED_LOG_DIR": str(s.state_dir / "labelled"),
        "DRIFTLOOP_TRAINING_WORK_DIR": str(s.state_dir / "airflow" / "work"),
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }
    airflow = str(bin_dir / "airflow")
    url = s.urls.airflow
    return [
        Component(
            "airflow-api-server",
            [airflow, "api-server"],
            s.ports.airflow,
            url,
            "airflow",
            env=env,
            priority=40,
            startsecs=3,
            group="airflow",
        ),
        Component(
            "airflow-scheduler",
            [airflow, "scheduler", "--skip-serve-logs"],
            None,
            url,
            "airflow:scheduler",
            env=env,
            priority=41,
            group="airflow",
        ),
        Component(
            "airflow-dag-processor",
            [airflow, "dag-processor"],
            None,
            url,
            "airflow:dag_processor",
            env=env,
            priority=41,
            group="airflow",
        ),
        Component(
            "airflow-triggerer",
            [airflow, "triggerer", "--skip-serve-logs"],
            None,
            url,
            "airflow:triggerer",
            env=env,
            priority=41,
            group="airflow",
        ),
    ]


def service_components(
    s: StackSettings, common: dict[str, str], mlflow_uri: str, kafka: str, redis_url: str
) -> list[Component]:
    p = s.ports
    py = sys.executable
    comps: list[Component] = []
    log_format = {"LOG_FORMAT": "console"}
    if service_available("driftloop_model_api"):
        for i in range(s.replicas):
            env = {
                **common,
                "OMP_NUM_THREADS": "1",
                **_prefixed(
                    "DRIFTLOOP_MODEL_API_",
                    {
                        "HOST": HOST,
                        "PORT": str(p.model_api(i)),
                        "REPLICA_ID": f"replica-{i}",
                        # the event ledger that outlives a SIGKILL (model_api ledger.py)
                        "STATE_DIR": str(s.state_dir / "model-api"),
                        "KAFKA_BOOTSTRAP": kafka,
                        "REDIS_URL": redis_url,
                        "MLFLOW_TRACKING_URI": mlflow_uri,
                        **log_format,
                    },
                ),
            }
            comps.append(
                Component(
                    f"model-api-{i}",
                    [py, "-m", "driftloop_model_api"],
                    p.model_api(i),
                    s.urls.model_api(i),
                    "http:/health/live",
                    env=env,
                    priority=60,
                    group="services",
                    readiness_path="/health/ready",
                )
            )
        comps.append(
            Component(
                "nginx",
                [
                    "nginx",
                    "-c",
                    str(configs.nginx_conf(s)),
                    "-e",
                    str(s.logs_dir / "nginx-error.log"),
                    "-g",
                    "daemon off;",
                ],
                p.nginx,
                s.urls.nginx,
                "tcp",
                priority=70,
                group="services",
            )
        )
    if service_available("driftloop_drift_consumer"):
        env = {
            **common,
            "OMP_NUM_THREADS": "1",
            **_prefixed(
                "DRIFTLOOP_DRIFT_CONSUMER_",
                {
                    "HOST": HOST,
                    "PORT": str(p.drift_consumer),
                    "KAFKA_BOOTSTRAP": kafka,
                    "REDIS_URL": redis_url,
                    "INFLUX_URL": s.urls.influxdb,
                    "INFLUX_DB": s.influx_db,
                    "MLFLOW_TRACKING_URI": mlflow_uri,
                    "LABELLED_LOG_DIR": str(s.state_dir / "labelled"),
                    "REPORTS_DIR": str(s.state_dir / "reports"),
                    "STATE_DIR": str(s.state_dir / "drift-consumer"),
                    **log_format,
                },
            ),
        }
        comps.append(
            Component(
                "drift-consumer",
                [py, "-m", "driftloop_drift_consumer"],
                p.drift_consumer,
                s.urls.drift_consumer,
                "http:/health/live",
                env=env,
                priority=60,
                group="services",
                readiness_path="/health/ready",
            )
        )
    if service_available("driftloop_bridge"):
        env = {
            **common,
            **_prefixed(
                "DRIFTLOOP_BRIDGE_",
                {
                    "HOST": HOST,
                    "PORT": str(p.bridge),
                    "REDIS_URL": redis_url,
                    "AIRFLOW_URL": s.urls.airflow,
                    "AIRFLOW_USERNAME": s.airflow_username,
                    "AIRFLOW_PASSWORD": s.airflow_password.get_secret_value(),
                    "WEBHOOK_TOKEN": s.bridge_webhook_token.get_secret_value(),
                    "RULES_FILE": str(REPO_ROOT / "services" / "bridge" / "rules.yaml"),
                    "COOLDOWN_SECONDS": str(LOCAL_BRIDGE_COOLDOWN_SECONDS),
                    **log_format,
                },
            ),
        }
        comps.append(
            Component(
                "bridge",
                [py, "-m", "driftloop_bridge"],
                p.bridge,
                s.urls.bridge,
                "http:/health/live",
                env=env,
                priority=60,
                group="services",
                readiness_path="/health/ready",
            )
        )
    return comps


def _prefixed(prefix: str, values: dict[str, str]) -> dict[str, str]:
    return {prefix + k: v for k, v in values.items()}
