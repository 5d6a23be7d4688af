"""Settings of the local stack (prefix ``DRIFTLOOP_``); every credential has a documented local default."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_contracts import DEFAULT_BASE_PORT, PortPlan, StackUrls
from driftloop_contracts.retention import INFLUX_RETENTION

REPO_ROOT = Path(__file__).resolve().parents[3]


class StackSettings(BaseSettings):
    """How ``driftloop up`` lays the stack out on this machine.

    The defaults are for a developer laptop: loopback only, state under ``.driftloop/``.
    Local-only credentials have defaults documented in the README; override them via env.
    """

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    base_port: int = Field(DEFAULT_BASE_PORT, ge=1024, le=65000)
    state_dir: Path = REPO_ROOT / ".driftloop"
    replicas: int = Field(2, ge=1, le=8)
    airflow_venv: Path = REPO_ROOT / ".venv-airflow"
    airflow_username: str = "admin"
    airflow_password: SecretStr = SecretStr("admin")
    bridge_webhook_token: SecretStr = SecretStr("driftloop-local-webhook-token")
    scikit_learn_data: Path = REPO_ROOT.parent / "shared" / "data" / "scikit_learn_data"
    influx_db: str = "driftloop"
    #: How long InfluxDB keeps the drift history (an InfluxQL duration: 30d, 12w, 720h); set on
    #: the database's default retention policy at every `up` (docs/operations.md).
    influx_retention: str = Field(INFLUX_RETENTION, pattern=r"^[1-9][0-9]*(h|d|w)$")
    up_timeout_s: float = 240.0

    @property
    def ports(self) -> PortPlan:
        return PortPlan(self.base_port)

    @property
    def urls(self) -> StackUrls:
        """Every component's URL on this stack (the one place URLs are built from ports)."""
        return StackUrls(self.ports)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def resolved(self) -> StackSettings:
        """A copy with absolute paths, so generated configs never depend on the cwd."""
        return self.model_copy(
            update={
                "state_dir": self.state_dir.expanduser().resolve(),
                "airflow_venv": self.airflow_venv.expanduser().resolve(),
                "scikit_learn_data": self.scikit_learn_data.expanduser().resolve(),
            }
        )
