"""The bridge's settings: environment variables prefixed ``DRIFTLOOP_BRIDGE_``.

Secrets are ``SecretStr`` so they never show up in a repr or a log line. The webhook token is
required: a bridge that answers unauthenticated alert webhooks can be made to retrain models by
anyone who can reach it, so start-up fails naming ``DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN`` unless the
operator opts out explicitly with ``DRIFTLOOP_BRIDGE_ALLOW_UNAUTHENTICATED=true`` (meant for a
throw-away local experiment only; the flag is logged loudly at start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_contracts import HOST, PortPlan
from driftloop_contracts.redis_keys import BRIDGE_PREFIX

_PORTS = PortPlan()
#: The default routing rules ship next to the package source (services/bridge/rules.yaml).
DEFAULT_RULES_FILE = Path(__file__).resolve().parents[2] / "rules.yaml"


class BridgeSettings(BaseSettings):
    """Everything the bridge reads from its environment, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_BRIDGE_", extra="ignore")

    host: str = HOST
    port: int = Field(default=_PORTS.bridge, ge=1, le=65535)
    redis_url: str = f"redis://{HOST}:{_PORTS.redis}/0"
    #: Key prefix for everything the bridge keeps in Redis (several stacks can share one Redis).
    redis_prefix: str = Field(default=BRIDGE_PREFIX, min_length=1)

    airflow_url: str = f"http://{HOST}:{_PORTS.airflow}"
    airflow_username: str = "admin"
    airflow_password: SecretStr
    #: Per-request timeout for Airflow calls made by the retry worker.
    airflow_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- webhook authentication -------------------------------------------------------------
    allow_unauthenticated: bool = False
    webhook_token: SecretStr | None = Field(default=None, validate_default=True)
    #: Grafana's HMAC option (contact point ``hmacConfig``): when set, /webhooks/grafana also
    #: needs a valid signature. The signature header default is Grafana's own default; Grafana
    #: has no default timestamp header, so set its ``timestamp_header`` to the name below. An
    #: empty timestamp header accepts body-only signatures (no replay protection).
    hmac_secret: SecretStr | None = None
    hmac_signature_header: str = Field(default="X-Grafana-Alert-Signature", min_length=1)
    hmac_timestamp_header: str = "X-Grafana-Alert-Timestamp"
    hmac_max_skew_seconds: float = Field(default=300.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # --- routing, dedupe, cooldown ----------------------------------------------------------
    rules_file: Path = DEFAULT_RULES_FILE
    #: After a trigger is accepted for a DAG, other incidents for that DAG are answered
    #: ``cooldown`` for this long (a retrain takes minutes; a storm of alerts wants one).
    cooldown_seconds: float = Field(default=900.0, ge=0)
    #: How long an incident id is remembered for ``duplicate`` (Alertmanager re-sends a firing
    #: group every repeat_interval, 4h by default).
    incident_ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)

    # --- circuit breaker (see brake.py) ---------------------------------------------------
    #: At most this many accepted triggers per window; beyond, alerts are answered ``braked``
    #: and the brake stays engaged until reset or ``brake_hold_seconds`` pass. 0 = no brake.
    brake_max_triggers: int = Field(default=2, ge=0)
    brake_window_seconds: float = Field(default=3600.0, gt=0)
    brake_hold_seconds: float = Field(default=6 * 3600.0, gt=0)
    #: How often the ``brake_engaged`` gauge is re-read from Redis (expiry, other instances).
    brake_refresh_seconds: float = Field(default=5.0, gt=0)

    # --- trigger and retry ------------------------------------------------------------------
    #: The webhook tries Airflow once inline with this timeout, then answers ``queued``.
    inline_trigger_timeout_seconds: float = Field(default=3.0, gt=0)
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_backoff_seconds: float = Field(default=60.0, gt=0)
    #: A pending trigger older than this is moved to the dead letters (visible, not retried).
    retry_max_age_seconds: float = Field(default=6 * 3600.0, gt=0)
    retry_poll_seconds: float = Field(default=0.5, gt=0)
    decisions_keep: int = Field(default=1000, ge=10)

    #: On SIGTERM: uvicorn lets requests finish, and the retry worker its attempt, this long.
    graceful_shutdown_seconds: float = Field(default=15.0, ge=0)

    log_format: Literal["json", "console"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("webhook_token")
    @classmethod
    def _token_required(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            value = None
        if value is None and not info.data.get("allow_unauthenticated", False):
            raise ValueError(
                "not set: the webhook token is required (set it, or set "
                "DRIFTLOOP_BRIDGE_ALLOW_UNAUTHENTICATED=true for an unauthenticated local "
                "experiment)"
            )
        return value

    @field_validator("rules_file")
    @classmethod
    def _rules_file_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value
