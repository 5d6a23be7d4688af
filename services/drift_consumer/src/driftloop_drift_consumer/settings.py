"""The drift consumer's settings: one pydantic-settings class, env prefix
``DRIFTLOOP_DRIFT_CONSUMER_``.

Built once in ``__main__`` (or by a test) with :func:`driftloop_contracts.load_settings`, so a
bad value fails at start-up naming the variable, and passed down; no module-level instance.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop_contracts import (
    CALIBRATION_WINDOW_EVENTS,
    CHAMPION_ALIAS,
    DEFAULT_BASE_PORT,
    FEEDBACK_TOPIC,
    HOST,
    MODEL_EVENTS_TOPIC,
    MODEL_NAME,
    PREDICTIONS_TOPIC,
    SHADOW_ALIAS,
    PortPlan,
)
from driftloop_contracts.thresholds import SEQUENTIAL_ALERT_ERT_EVENTS
from driftloop_contracts.warmup import PERFORMANCE_WARMUP_ROWS

_DEFAULT_PORTS = PortPlan(DEFAULT_BASE_PORT)


class DriftConsumerSettings(BaseSettings):
    """Every knob of one drift-consumer instance; the defaults match the user's local stack."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_DRIFT_CONSUMER_", extra="ignore")

    host: str = HOST
    port: int = Field(default=_DEFAULT_PORTS.drift_consumer, ge=1, le=65535)
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- Kafka ----------------------------------------------------------------------------
    kafka_bootstrap: str = f"{HOST}:{_DEFAULT_PORTS.kafka}"
    #: Topic names default to the contracts'; an isolated test instance may read its own.
    predictions_topic: str = PREDICTIONS_TOPIC
    feedback_topic: str = FEEDBACK_TOPIC
    model_events_topic: str = MODEL_EVENTS_TOPIC
    #: One group for every instance: partitions of predictions+feedback are shared out.
    consumer_group: str = "driftloop-drift-consumer"
    #: Tansu joins wait about half the session timeout; keep it short locally.
    kafka_session_timeout_ms: int = Field(default=6_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=500, ge=100)
    #: A sink outage longer than this makes the group drop us (we rejoin and replay; no loss).
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    max_poll_records: int = Field(default=2_000, ge=1)
    poll_timeout_ms: int = Field(default=500, ge=10)
    #: How long a fetch may keep skipping the same offset before it is read past (and counted as
    #: lost): the local broker stores a record a moment after it acknowledged it.
    fetch_gap_patience_seconds: float = Field(default=10.0, gt=0)

    # --- bad records ----------------------------------------------------------------------
    #: Copy every record decoding refuses to ``<topic>.dlq`` before committing past it.
    dead_letters_enabled: bool = True
    #: Also dead-letter bad ``model-events`` records. A broadcast: every reader sees them, so
    #: exactly one process may write them (this one; replicas only count). With several drift
    #: consumer instances, leave it on in one.
    model_events_dead_letters: bool = True
    #: Tries per dead letter before it is given up (counted ``outcome="failed"``).
    dead_letter_attempts: int = Field(default=8, ge=1)
    #: A prediction or feedback stamped more than this after the record's Kafka timestamp is
    #: ``timestamp_out_of_range`` (so is one stamped before 2000).
    max_event_future_skew_seconds: float = Field(default=3600.0, gt=0)

    # --- windows and statistics -----------------------------------------------------------
    #: Tumbling window size per (partition, model version), in events.
    window_events: int = Field(default=CALIBRATION_WINDOW_EVENTS, ge=2)
    #: Also close a window once its events span this many seconds (event time); 0 = count only.
    window_seconds: float = Field(default=0.0, ge=0.0)
    #: A time-closed window needs at least this many events (the thresholds' calibration
    #: size); fewer and it keeps filling.
    min_window_events: int = Field(default=CALIBRATION_WINDOW_EVENTS, ge=2)
    ks_method: Literal["auto", "exact", "asymp"] = "auto"
    #: > 0: decide on windows merged over every owned partition, in event-time slots of this
    #: many seconds (windows.MergedWindows; a window takes slots until it holds
    #: MIN_WINDOW_EVENTS), so detection does not slow down with partitions; keep it
    #: <= MIN_WINDOW_EVENTS / (4 x events/s) (docs/scale-out.md). 0: per-partition windows of
    #: WINDOW_EVENTS (WINDOW_SECONDS).
    merge_window_seconds: float = Field(default=0.25, ge=0.0)
    #: A caught-up partition with no newer event stops holding a slot this long after its end.
    merge_idle_grace_seconds: float = Field(default=2.0, ge=0.0)
    #: Merge the windows across every consumer of the group, not only this one's partitions:
    #: slot partials meet in Redis (shared_store.py) and one instance at a time closes the
    #: windows. Needs MERGE_WINDOW_SECONDS > 0 (the slot). Off by default.
    shared_windows: bool = False
    #: Lease of the instance that aggregates the shared partials (renewed every fetch): how
    #: long the windows wait when that instance dies.
    shared_lease_seconds: float = Field(default=10.0, gt=0)
    #: A slot merged more than this after its end is counted late
    #: (driftloop_shared_slots_late_total): a partition was unowned or far behind.
    shared_late_seconds: float = Field(default=60.0, gt=0)
    #: Sequential detector (sequential.py): CUSUMs on the merged binned stream of every owned
    #: partition, designed for a location shift of this many reference standard deviations...
    sequential_shift_sd: float = Field(default=0.5, gt=0)
    #: ...with the threshold calibrated for this expected run length between false alarms
    #: (events of the merged stream); 0 turns the detector off.
    sequential_ert_events: float = Field(default=10_000.0, ge=0)
    #: The retraining alert on the detector (SequentialDriftHigh) compares its statistic with
    #: a higher level, set for this ERT (driftloop_sequential_alert_threshold); 0: no alert.
    sequential_alert_ert_events: float = Field(default=SEQUENTIAL_ALERT_ERT_EVENTS, ge=0)

    # --- reference (MLflow) ---------------------------------------------------------------
    mlflow_tracking_uri: str = f"http://{HOST}:{_DEFAULT_PORTS.mlflow}"
    #: Registered model whose champion is the baseline; predictions of other models are skipped.
    model_name: str = MODEL_NAME
    champion_alias: str = CHAMPION_ALIAS
    #: Safety net: re-read the alias this often in case a ModelPromoted event was missed.
    reference_check_interval_seconds: float = Field(default=30.0, gt=0)
    reference_retry_max_seconds: float = Field(default=10.0, gt=0)

    # --- Redis: join state and thresholds -------------------------------------------------
    redis_url: str = f"redis://{HOST}:{_DEFAULT_PORTS.redis}/0"
    #: How long a prediction waits in the join store for its feedback.
    join_ttl_seconds: int = Field(default=86_400, ge=60)
    #: A feedback record whose prediction is not in the store after this long is skipped.
    feedback_wait_seconds: float = Field(default=30.0, ge=0.0)
    thresholds_poll_seconds: float = Field(default=1.0, gt=0)
    #: How often Redis' memory is read for RedisMemoryHigh (redis_memory.py).
    redis_memory_poll_seconds: float = Field(default=15.0, gt=0)

    # --- online error ---------------------------------------------------------------------
    #: Rolling RMSE/MAE/bias over the latest this-many labelled rows per model version; at
    #: least the alerts' warm-up (driftloop_contracts.warmup), or PerformanceDegraded never fires.
    online_error_rows: int = Field(default=1_000, ge=PERFORMANCE_WARMUP_ROWS)

    # --- post-promotion watch and rollback (watch.py, rollback.py) -------------------------
    #: Compare the champion with the previous one (alias ``shadow``) while a watch runs, and
    #: roll back a worse champion. Off: the sums are still kept, nothing is decided.
    watch_enabled: bool = True
    shadow_alias: str = SHADOW_ALIAS
    #: Roll back when the champion's RMSE exceeds the shadow's by more than this share
    #: (0.05: champion RMSE > 1.05 x shadow RMSE) on the same labelled requests...
    watch_rmse_margin: float = Field(default=0.05, ge=0.0)
    #: ...and at least this many of them are labelled: fewer cannot tell 5 % from noise.
    watch_min_rows: int = Field(default=200, ge=1)
    #: How often the watch reads the aliases (MLflow) and the sums (Redis).
    watch_check_interval_seconds: float = Field(default=5.0, gt=0)
    #: Lease of the Redis lock held while one instance carries a decision out.
    watch_lock_seconds: float = Field(default=60.0, gt=0)
    #: Longest wait between two tries of a registry or Kafka step of a decision.
    watch_retry_max_seconds: float = Field(default=15.0, gt=0)

    # --- InfluxDB -------------------------------------------------------------------------
    influx_url: str = f"http://{HOST}:{_DEFAULT_PORTS.influxdb}"
    influx_db: str = "driftloop"
    influx_enabled: bool = True
    influx_timeout_seconds: float = Field(default=5.0, gt=0)
    influx_batch_lines: int = Field(default=5_000, ge=1)

    # --- labelled-data log ----------------------------------------------------------------
    labelled_log_dir: Path = Path(".driftloop/labelled")
    #: Flush a partition's joined rows once this many are waiting, or after this long.
    labelled_flush_rows: int = Field(default=2_000, ge=1)
    labelled_flush_seconds: float = Field(default=10.0, ge=0.0)
    #: While the champion's sequential detector is in alert (``SequentialDriftHigh``: a retrain
    #: is coming, and its ``wait_for_regime`` counts the incident's rows in this log), flush
    #: this often instead, for at most LABELLED_INCIDENT_MAX_SECONDS from the alert: the run
    #: sees its rows ~5 s sooner, and only an incident writes more part files.
    labelled_incident_flush_seconds: float = Field(default=1.0, ge=0.0)
    labelled_incident_max_seconds: float = Field(default=600.0, ge=0.0)
    #: Hour partitions scanned on assignment to find files written but not committed.
    labelled_scan_hours: int = Field(default=48, ge=1)
    #: Hour partitions that ended longer ago than this are deleted (hourly, by this consumer;
    #: labelled_retention.py). Keep it at least the retraining DAG's lookback
    #: (``RetrainParams.lookback_hours``, 24 h by default). 0 keeps everything.
    labelled_retention_days: int = Field(default=30, ge=0)

    # --- reports --------------------------------------------------------------------------
    reports_dir: Path = Path(".driftloop/reports")
    #: Seconds between Evidently reports (only when a new window closed); 0 disables them.
    reports_interval_seconds: float = Field(default=300.0, ge=0.0)
    reports_keep: int = Field(default=24, ge=1)

    # --- local state and retries ----------------------------------------------------------
    #: Local scratch: the last reference profile (so a restart works while MLflow is down).
    state_dir: Path = Path(".driftloop/drift-consumer")
    sink_retry_initial_seconds: float = Field(default=0.2, gt=0)
    sink_retry_max_seconds: float = Field(default=5.0, gt=0)
    #: On SIGTERM: uvicorn lets requests finish, and the loop flushes and commits, this long.
    graceful_shutdown_seconds: float = Field(default=15.0, ge=0)

    @model_validator(mode="after")
    def _windows_consistent(self) -> DriftConsumerSettings:
        if self.min_window_events > self.window_events:
            raise ValueError(
                f"DRIFTLOOP_DRIFT_CONSUMER_MIN_WINDOW_EVENTS ({self.min_window_events}) must not "
                f"exceed DRIFTLOOP_DRIFT_CONSUMER_WINDOW_EVENTS ({self.window_events})"
            )
        if self.shared_windows and self.merge_window_seconds <= 0:
            raise ValueError(
                "DRIFTLOOP_DRIFT_CONSUMER_SHARED_WINDOWS needs"
                " DRIFTLOOP_DRIFT_CONSUMER_MERGE_WINDOW_SECONDS > 0 (the slot length)"
            )
        if 0 < self.sequential_ert_events < 100:
            raise ValueError(
                "DRIFTLOOP_DRIFT_CONSUMER_SEQUENTIAL_ERT_EVENTS must be 0 (off) or at least 100"
            )
        if 0 < self.sequential_alert_ert_events < self.sequential_ert_events:
            raise ValueError(
                "DRIFTLOOP_DRIFT_CONSUMER_SEQUENTIAL_ALERT_ERT_EVENTS must be 0 (no alert) or at"
                " least DRIFTLOOP_DRIFT_CONSUMER_SEQUENTIAL_ERT_EVENTS"
            )
        if 0 < self.labelled_retention_days * 24 < self.labelled_scan_hours:
            raise ValueError(
                f"DRIFTLOOP_DRIFT_CONSUMER_LABELLED_RETENTION_DAYS ({self.labelled_retention_days})"
                " must cover DRIFTLOOP_DRIFT_CONSUMER_LABELLED_SCAN_HOURS"
                f" ({self.labelled_scan_hours} h): a restart reads those partitions back"
            )
        return self
