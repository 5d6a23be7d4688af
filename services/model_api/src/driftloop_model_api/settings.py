"""The model API's settings: one pydantic-settings class, env prefix ``DRIFTLOOP_MODEL_API_``.

Built once in ``__main__`` (or by a test) and passed down; there is no module-level instance,
so tests and the CLI can build their own. Build it with
:func:`driftloop_contracts.load_settings` so a bad value fails at start-up naming the variable.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from driftloop_contracts import (
    CHAMPION_ALIAS,
    DEFAULT_BASE_PORT,
    HOST,
    MODEL_NAME,
    FeedbackApiKeySettings,
    PortPlan,
)

_DEFAULT_PORTS = PortPlan(DEFAULT_BASE_PORT)

#: Local-stack default of the feedback-token key (README, "Local credentials"). Anyone who
#: knows the key can mint tokens: every deployment reachable by others must set its own.
LOCAL_FEEDBACK_TOKEN_KEY = "driftloop-local-feedback-token-key-DEV-ONLY"


class ModelApiSettings(FeedbackApiKeySettings):
    """Every knob of one serving replica; the defaults match the user's local stack.

    ``feedback_api_keys`` (``DRIFTLOOP_MODEL_API_FEEDBACK_API_KEYS``) comes from
    :class:`driftloop_contracts.FeedbackApiKeySettings`, which our label producers read too.
    """

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_MODEL_API_", extra="ignore", populate_by_name=True
    )

    host: str = HOST
    port: int = Field(default=_DEFAULT_PORTS.model_api(0), ge=1, le=65535)
    replica_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Where the replica keeps its event ledger (the events it accepted but has not seen
    #: acknowledged, in a memory-mapped file that survives SIGKILL) and its running total of
    #: lost events. Unset: no ledger, and a killed replica's loss is not counted.
    state_dir: Path | None = None

    # --- model registry -------------------------------------------------------------------
    mlflow_tracking_uri: str = f"http://{HOST}:{_DEFAULT_PORTS.mlflow}"
    model_name: str = MODEL_NAME
    model_alias: str = CHAMPION_ALIAS
    #: First and largest wait between attempts to load the champion at start-up.
    load_retry_initial_seconds: float = Field(default=0.5, gt=0)
    load_retry_max_seconds: float = Field(default=10.0, gt=0)
    #: How often the alias is re-read in case a ModelPromoted event was missed.
    alias_check_interval_seconds: float = Field(default=30.0, gt=0)
    #: Attempts to load a version announced by an event before giving up (old model stays).
    reload_attempts: int = Field(default=3, ge=1)

    # --- Kafka ----------------------------------------------------------------------------
    kafka_bootstrap: str = f"{HOST}:{_DEFAULT_PORTS.kafka}"
    kafka_enabled: bool = True
    #: Prediction events waiting for the broker; beyond it the oldest waiting one is dropped.
    publish_buffer_size: int = Field(default=100_000, ge=1)
    #: Feedback events waiting for the broker, in a buffer of their own (a flood of
    #: predictions cannot evict them); beyond it the oldest waiting feedback is dropped.
    publish_feedback_buffer_size: int = Field(default=100_000, ge=1)
    #: Most events handed to the producer at once (the rest wait in the buffer).
    publish_batch_size: int = Field(default=1_000, ge=1)
    publish_linger_ms: int = Field(default=5, ge=0)
    #: How long the producer keeps trying one batch before it counts as failed and is re-queued.
    publish_request_timeout_ms: int = Field(default=5_000, ge=100)
    publish_retry_max_seconds: float = Field(default=5.0, gt=0)
    #: A batch not acknowledged this fast counts as failed; the producer is rebuilt.
    publish_ack_timeout_seconds: float = Field(default=2.0, gt=0)
    #: On shutdown, how long buffered events may take to be acknowledged before they count
    #: as dropped (part of the shutdown grace below).
    publish_drain_seconds: float = Field(default=5.0, ge=0)
    #: Session timeout of the model-events consumer (Tansu joins wait about half of it).
    kafka_session_timeout_ms: int = Field(default=6_000, ge=1_000)

    # --- Redis (the label store) and the prediction cache (in-process, cache.py) ----------
    redis_url: str | None = f"redis://{HOST}:{_DEFAULT_PORTS.redis}/0"
    cache_enabled: bool = True
    #: Predictions the in-process LRU keeps (~200 bytes each); the oldest unused goes first.
    cache_max_entries: int = Field(default=100_000, ge=1)

    # --- prediction ---------------------------------------------------------------------
    #: Predict concurrent single rows in one model call (see batching.py); off = one call each.
    micro_batching: bool = True
    micro_batch_max_rows: int = Field(default=64, ge=1)

    # --- shadow (post-promotion watch; shadow.py, docs/retraining.md) ---------------------
    #: Load the version under alias ``shadow`` and predict every request with it too (its
    #: answer travels on the event only). Off: events never carry a shadow prediction.
    shadow_enabled: bool = True
    #: How long the first held event waits for others before the shadow's model call (the
    #: answer never waits; only the event leaves this much later). Fewer, bigger calls.
    shadow_linger_ms: float = Field(default=20.0, ge=0, le=1_000)
    #: Most held events predicted by the shadow in one model call.
    shadow_max_batch_rows: int = Field(default=1_024, ge=1)
    #: Most events held for the shadow at once; beyond it events leave without the shadow's
    #: prediction (counted, ``driftloop_shadow_failures_total{reason="overloaded"}``).
    shadow_max_pending: int = Field(default=20_000, ge=1)

    # --- labels (POST /feedback; docs/security.md) ----------------------------------------
    #: HMAC key of the feedback tokens; the same on every replica (a label may reach another
    #: replica than its prediction). Read from ``DRIFTLOOP_FEEDBACK_TOKEN_KEY`` (no service
    #: prefix: it is the fleet's key, not one replica's knob).
    feedback_token_key: SecretStr = Field(
        default=SecretStr(LOCAL_FEEDBACK_TOKEN_KEY),
        validation_alias=AliasChoices("DRIFTLOOP_FEEDBACK_TOKEN_KEY", "feedback_token_key"),
    )

    #: A token older than this is refused (410). At most the drift consumer's join window
    #: (``DRIFTLOOP_DRIFT_CONSUMER_JOIN_TTL_SECONDS``, 1 day), past which a label could no
    #: longer join its prediction anyway; also how long "already labelled" is remembered.
    @field_validator("feedback_token_key")
    @classmethod
    def _key_long_enough(cls, key: SecretStr) -> SecretStr:
        if len(key.get_secret_value()) < 32:
            raise ValueError("DRIFTLOOP_FEEDBACK_TOKEN_KEY needs at least 32 characters")
        return key

    feedback_token_ttl_seconds: int = Field(default=86_400, ge=60)
    #: Budget of the Redis call that records "labelled" (first label wins); past it, or with
    #: Redis down, the label is refused with 503 so the producer retries. 2 s: a label is not
    #: latency-critical, and on a busy 2-core machine a Redis round trip once took over 0.5 s
    #: (one refused label in the settle e2e); a stopped Redis refuses the connection at once.
    label_store_timeout_seconds: float = Field(default=2.0, gt=0)

    # --- HTTP limits ----------------------------------------------------------------------
    max_body_bytes: int = Field(default=1_048_576, ge=256)
    batch_max_rows: int = Field(default=1_000, ge=1)
    #: Seconds uvicorn lets in-flight requests finish on SIGTERM.
    graceful_shutdown_seconds: float = Field(default=10.0, ge=0)
