"""Settings of the training package (prefix ``DRIFTLOOP_TRAINING_``).

The same class configures ``driftloop bootstrap`` and every task of the retraining DAG; the
Airflow workers get the values as environment variables from the stack (or docker-compose).
Build it once per process with :func:`load_training_settings` and pass it down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_contracts import (
    DEFAULT_BASE_PORT,
    DEFAULT_WATCH_SECONDS,
    HOST,
    PortPlan,
    load_settings,
)

_DEFAULT_PORTS = PortPlan(DEFAULT_BASE_PORT)


class TrainingSettings(BaseSettings):
    """Where training reads its data and writes its results."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_TRAINING_", extra="ignore")

    mlflow_tracking_uri: str = f"http://{HOST}:{_DEFAULT_PORTS.mlflow}"
    kafka_bootstrap: str = f"{HOST}:{_DEFAULT_PORTS.kafka}"
    #: Root of the labelled-data log the drift consumer writes (hourly Parquet partitions).
    labelled_log_dir: Path = Path(".driftloop/labelled")
    #: Scratch space for one DAG run's hand-over files (``<work_dir>/<run key>/...``).
    work_dir: Path = Path(".driftloop/work")
    #: Offline by default: the California housing cache must already be in SCIKIT_LEARN_DATA.
    download_if_missing: bool = False
    #: Seed for every split and sample, so a re-run of a task produces the same result.
    seed: int = 42
    #: Share of the California data held out to score the bootstrap champion.
    base_holdout_share: float = Field(0.2, gt=0.0, lt=0.9)
    #: Seconds to wait for the Kafka broker when announcing a promotion.
    kafka_timeout_s: float = Field(20.0, gt=0.0)
    #: Length of the watch after a promotion: the previous champion stays loaded on every
    #: replica as a shadow (alias ``shadow``) and a worse new champion is rolled back.
    #: 0 disables the watch (docs/retraining.md, "Shadow during the watch").
    watch_seconds: float = Field(DEFAULT_WATCH_SECONDS, ge=0.0)


def load_training_settings(**overrides: object) -> TrainingSettings:
    """Read the settings from the environment; an invalid value fails naming its variable."""
    return load_settings(TrainingSettings, **overrides)
