"""Every Redis key prefix of driftloop, in one place: several services share one Redis, and two
of them once picked the same prefix for different guarantees.

``tests/test_redis_keys`` checks that no prefix is another's prefix.
"""

from __future__ import annotations

from typing import Final

#: Replicas, ``POST /feedback``: first label wins per issued request id (TTL = token lifetime).
LABEL_ACCEPTED_PREFIX: Final = "driftloop:labelled:"
#: Drift consumer: a prediction waiting for its feedback (TTL = join TTL).
JOIN_PREFIX: Final = "driftloop:join:"
#: Drift consumer: which feedback record joined a request (``partition:offset``), so a replay
#: rewrites its own row and any other record for that request is a duplicate (join TTL).
JOIN_CLAIM_PREFIX: Final = "driftloop:join-claim:"
#: Drift consumer: the post-promotion watch, per (champion, shadow) pair: the error sums of
#: both models (``<prefix>:<model>:<champion>:<shadow>:sums``), the request ids already counted
#: (``...:seen``), the decision once taken (``...:decision``) and the lock of whoever acts on it
#: (``...:lock``). TTL: the join TTL after the last write.
WATCH_PREFIX: Final = "driftloop:watch:"
#: Drift consumer: windows merged across the consumer group (``shared_store.py``), per
#: ``<prefix><group>:<model version>:``: each partition's progress, the published slot partials
#: (one hash per slot), the aggregation cursor, the closed windows and the aggregator's lease.
#: TTL: the join TTL after the last write.
SHARED_WINDOWS_PREFIX: Final = "driftloop:xwindows:"
#: Bridge state (``DRIFTLOOP_BRIDGE_REDIS_PREFIX`` may change it).
BRIDGE_PREFIX: Final = "driftloop:bridge"
#: Drift thresholds (no TTL).
THRESHOLDS_KEY: Final = "driftloop:thresholds"

ALL_PREFIXES: Final = (
    LABEL_ACCEPTED_PREFIX,
    JOIN_PREFIX,
    JOIN_CLAIM_PREFIX,
    WATCH_PREFIX,
    SHARED_WINDOWS_PREFIX,
    BRIDGE_PREFIX,
    THRESHOLDS_KEY,
)
