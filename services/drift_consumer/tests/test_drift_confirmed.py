"""``driftloop_drift_confirmed``: what the retraining alerts compare is the smaller of a
statistic's values in the latest two windows, so one window with an extreme row (it moves
Wasserstein alone, seen in CI) cannot start a retrain, while a shift that persists does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from driftloop_drift_consumer.metrics import ConsumerMetrics

SERIES = ("average_rooms", "wasserstein")


def window(version: str, value: float) -> Any:
    stats = SimpleNamespace(values=lambda: [(*SERIES, value)])
    return SimpleNamespace(model_version=version, statistics=stats, n=200, end_us=0)


def decision() -> Any:
    return SimpleNamespace(drift_share=0.0, any_drift=False)


def confirmed(metrics: ConsumerMetrics, version: str) -> float | None:
    labels = {"feature": SERIES[0], "statistic": SERIES[1], "model_version": version}
    return metrics.registry.get_sample_value("driftloop_drift_confirmed", labels)


def test_one_spiking_window_is_not_confirmed_and_a_persisting_shift_is() -> None:
    m = ConsumerMetrics()
    m.record_window(window("4", 0.12), decision())
    assert confirmed(m, "4") is None  # one window: nothing to confirm yet
    m.record_window(window("4", 0.73), decision())  # an extreme row in one window
    assert confirmed(m, "4") == 0.12
    m.record_window(window("4", 0.11), decision())
    assert confirmed(m, "4") == 0.11
    m.record_window(window("4", 0.60), decision())  # a shift: every window from here on
    m.record_window(window("4", 0.65), decision())
    assert confirmed(m, "4") == 0.60


def test_a_new_champion_starts_its_own_pair_of_windows() -> None:
    m = ConsumerMetrics()
    m.record_window(window("4", 0.6), decision())
    m.record_window(window("4", 0.6), decision())
    m.set_reference("5", "profile-5")  # the reference switched: v4's series go
    assert confirmed(m, "4") is None
    m.record_window(window("5", 0.1), decision())
    assert confirmed(m, "5") is None  # v4's last window does not pair with v5's first
