"""A feedback token lives no longer than the drift consumer keeps a prediction for its label:
a label accepted later could never be joined (docs/api.md, "Feedback")."""

from __future__ import annotations

import pytest


def test_token_lifetime_is_within_the_join_window() -> None:
    model_api = pytest.importorskip("driftloop_model_api.settings")
    consumer = pytest.importorskip("driftloop_drift_consumer.settings")
    ttl = model_api.ModelApiSettings.model_fields["feedback_token_ttl_seconds"].default
    join = consumer.DriftConsumerSettings.model_fields["join_ttl_seconds"].default
    assert ttl <= join
