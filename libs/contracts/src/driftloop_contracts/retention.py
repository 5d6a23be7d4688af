"""Retention defaults shared by the local and the Docker stack (docs/operations.md).

Topics: every driftloop topic is created with :data:`TOPIC_CONFIGS`, by the local broker's
set-up (``driftloop_cli.kafka_broker``) and the Docker stack's ``kafka-init``.

Kafka deletes a partition's oldest segments once they are older than ``retention.ms`` or the
partition is larger than ``retention.bytes``, whichever comes first. Nothing of ours reads old
records back: the drift consumer commits as it goes (its windows, the labelled-data log and
InfluxDB hold what it derived), replicas read ``model-events`` from the latest offset and the
registry is MLflow. Retention only has to cover a consumer that is down and must catch up, so
three days (a long weekend) is ample.

The local Tansu broker (0.6.0, ``memory://`` storage) accepts and reports these configs but
does not enforce them; see docs/operations.md for what bounds it instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

RETENTION_MS = 3 * 24 * 3600 * 1000
#: Per partition: 1 GiB, so the data topics (4 + 4 partitions) stay under 8 GiB of disk.
RETENTION_BYTES = 1024**3

TOPIC_CONFIGS: Mapping[str, str] = MappingProxyType(
    {
        "cleanup.policy": "delete",
        "retention.ms": str(RETENTION_MS),
        "retention.bytes": str(RETENTION_BYTES),
    }
)


#: How long InfluxDB keeps the per-window drift history (an InfluxQL duration), set on the
#: database's default retention policy by ``driftloop up`` (overridable there with
#: ``DRIFTLOOP_INFLUX_RETENTION``) and by the Docker stack's ``influxdb-retention`` job.
#: Grafana's drift dashboards look back hours to days; a month keeps incidents comparable.
INFLUX_RETENTION = "30d"
#: Shards of one day, so expired history goes a day at a time (InfluxDB drops whole shards).
INFLUX_SHARD_DURATION = "1d"


def influx_retention_statement(database: str, duration: str = INFLUX_RETENTION) -> str:
    """InfluxQL that bounds ``database``'s default policy; idempotent, and it also applies
    to a database created before (with the default infinite policy)."""
    return (
        f'ALTER RETENTION POLICY "autogen" ON "{database}" DURATION {duration}'
        f" SHARD DURATION {INFLUX_SHARD_DURATION} DEFAULT"
    )
