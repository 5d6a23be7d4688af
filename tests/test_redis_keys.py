"""Services share one Redis: their key prefixes must never overlap, and each service uses the
contracts' definition rather than its own spelling."""

from __future__ import annotations

from itertools import permutations

from driftloop_bridge.settings import BridgeSettings
from driftloop_contracts import redis_keys
from driftloop_contracts.thresholds import THRESHOLDS_REDIS_KEY
from driftloop_drift_consumer import feedback_join
from driftloop_model_api import label_store


def test_no_prefix_is_another_prefix() -> None:
    stems = [p.rstrip(":") + ":" for p in redis_keys.ALL_PREFIXES]
    for a, b in permutations(stems, 2):
        assert not a.startswith(b), (a, b)


def test_every_service_uses_the_contracts_prefixes() -> None:
    assert label_store.KEY_PREFIX == redis_keys.LABEL_ACCEPTED_PREFIX
    assert feedback_join.JOIN_KEY_PREFIX == redis_keys.JOIN_PREFIX
    assert feedback_join.LABEL_KEY_PREFIX == redis_keys.JOIN_CLAIM_PREFIX
    assert feedback_join.LABEL_KEY_PREFIX != label_store.KEY_PREFIX
    assert THRESHOLDS_REDIS_KEY == redis_keys.THRESHOLDS_KEY
    assert BridgeSettings.model_fields["redis_prefix"].default == redis_keys.BRIDGE_PREFIX
