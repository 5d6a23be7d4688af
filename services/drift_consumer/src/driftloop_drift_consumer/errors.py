"""The drift consumer's errors: one base, one family per dependency it writes to or reads.

::

    DriftConsumerError              base of everything raised on purpose here
     ├── SinkError                  a write that must succeed before offsets are committed
     │    ├── InfluxWriteError      InfluxDB refused or did not answer a /write
     │    ├── JoinStoreError        Redis (join state) failed
     │    ├── LabelledLogError      a Parquet part file could not be written
     │    └── SharedStoreError      Redis (windows shared across consumers) failed
     ├── SharedProgressConflict     another owner already shared further (the batch restarts)
     └── ReferenceUnavailable       no usable champion profile (none yet, MLflow down, bad file)

An invalid threshold name or value is :class:`driftloop_contracts.ThresholdError`, raised by
the threshold store the CLI and this service share.

Callers wrap library exceptions (httpx, redis, pyarrow, mlflow) into these at the call site,
so the loop decides retry-or-skip on one small vocabulary. ``SinkError.sink`` is the metric
label of ``driftloop_sink_failures_total``.

None of these reaches HTTP: the few HTTP failures (an unknown report, a bad query parameter, a
bug) answer in the one error body of every driftloop service, ``{"error", "message",
"detail": [{"field", "rule", "message"}]}``, through
:func:`driftloop_service.install_error_handlers` (registered in :mod:`.app`).
"""

from __future__ import annotations


class DriftConsumerError(Exception):
    """Base of every error the drift consumer raises on purpose."""


class SinkError(DriftConsumerError):
    """A write failed; the batch is retried with backoff and its offsets stay uncommitted."""

    sink = "unknown"


class InfluxWriteError(SinkError):
    sink = "influxdb"


class JoinStoreError(SinkError):
    sink = "redis"


class WatchStoreError(SinkError):
    sink = "redis"


class LabelledLogError(SinkError):
    sink = "labelled_log"


class SharedStoreError(SinkError):
    sink = "redis_shared"


class SharedProgressConflict(DriftConsumerError):
    """A partition's progress in the shared store is already past what this instance would
    publish: another instance owned the partition meanwhile (a zombie after a rebalance).
    Not retried: the consumer drops its state and replays from the commit, reloading it."""


class ReferenceUnavailable(DriftConsumerError):
    """No usable reference profile (no champion yet, MLflow down, or a malformed artifact)."""


class WatchActionError(DriftConsumerError):
    """Moving an alias, tagging a version or announcing a rollback failed (MLflow or Kafka
    down); the decision is kept in Redis and the step is retried until it succeeds."""
