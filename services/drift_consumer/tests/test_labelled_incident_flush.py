"""The labelled log flushes fast while the champion's sequential detector is in alert (the
retrain it triggers waits for the incident's rows in that log), for a bounded time, and at
the normal pace otherwise."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from driftloop_contracts.thresholds import SEQUENTIAL_ALERT_REFERENCE_SE
from driftloop_drift_consumer.labelled_rows import LabelledRows
from driftloop_drift_consumer.sequential import (
    CusumDesign,
    SequentialDetector,
    calibrate_threshold,
    with_alert_threshold,
)
from driftloop_drift_consumer.settings import DriftConsumerSettings

from .conftest import ReferenceData
from .test_sequential import TEST_ERT, shifted, stationary


def rows_for(detector: SequentialDetector | None, **settings: Any) -> LabelledRows:
    state = SimpleNamespace(detector=detector)
    return LabelledRows(
        DriftConsumerSettings(**settings),
        state=state,  # type: ignore[arg-type]
        sinks=None,  # type: ignore[arg-type]
        references=None,  # type: ignore[arg-type]
    )


def in_alert(detector: SequentialDetector) -> bool:
    return detector.in_alert


def test_an_alert_shortens_the_flush_until_its_bound_and_a_new_detector_restarts_it(
    reference: ReferenceData,
) -> None:
    design = calibrate_threshold(
        CusumDesign.from_reference(reference.compiled, 0.5), TEST_ERT, paths=48, seed=3
    )
    leveled = with_alert_threshold(design, 1e6, SEQUENTIAL_ALERT_REFERENCE_SE)
    calm = SequentialDetector(leveled, "1")
    calm.update(stationary(reference, 2_000, seed=1))
    assert not in_alert(calm)
    rows = rows_for(
        calm,
        labelled_flush_seconds=10.0,
        labelled_incident_flush_seconds=1.0,
        labelled_incident_max_seconds=600.0,
    )
    assert rows.flush_interval(100.0) == 10.0

    calm.update(shifted(reference, 2_000, seed=2))  # the incident: the latch is set
    assert in_alert(calm)
    assert rows.flush_interval(200.0) == 1.0
    assert rows.flush_interval(800.0) == 1.0  # 600 s after the alert was first seen
    assert rows.flush_interval(800.1) == 10.0  # bounded: an unanswered incident stops it

    promoted = SequentialDetector(leveled, "2")  # the promotion's new detector, no alert
    rows.state.detector = promoted
    assert rows.flush_interval(900.0) == 10.0
    promoted.update(shifted(reference, 2_000, seed=3))  # a new incident gets its own bound
    assert rows.flush_interval(1_000.0) == 1.0


def test_no_detector_or_a_slower_incident_setting_keeps_the_normal_pace() -> None:
    assert rows_for(None, labelled_flush_seconds=10.0).flush_interval(0.0) == 10.0
    in_alert = SimpleNamespace(in_alert=True, model_version="1")
    rows = rows_for(
        in_alert,  # type: ignore[arg-type]
        labelled_flush_seconds=0.5,
        labelled_incident_flush_seconds=1.0,
    )
    assert rows.flush_interval(0.0) == 0.5  # never slower than the normal pace
