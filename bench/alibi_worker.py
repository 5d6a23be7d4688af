"""Runs alibi-detect's CVMDriftOnline for ``bench_drift.py sequential``, in its own venv.

alibi-detect is a bench-only comparison: it is installed into ``.bench-venvs/alibi`` (numpy,
scipy, numba; no TensorFlow or PyTorch are needed for CVM online), never into the workspace.
Reads an ``.npz`` (reference, streams, null stream, settings), writes JSON: per stream the
1-based position of the first alarm (or null), the alarms on the null stream (restarting
after each), the calibration and per-event times.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import warnings

import numpy as np


def main(inp: str, out: str) -> None:
    warnings.filterwarnings("ignore")
    from alibi_detect.cd import CVMDriftOnline  # type: ignore[import-not-found]

    data = np.load(inp)
    ert = float(data["ert"])
    t = time.perf_counter()
    cd = CVMDriftOnline(
        data["reference"].astype("float32"),
        ert=ert,
        window_sizes=[int(w) for w in data["window_sizes"]],
        n_bootstraps=int(data["n_bootstraps"]),
        verbose=False,
    )
    calibration_s = time.perf_counter() - t
    first: list[int | None] = []
    events = 0
    t = time.perf_counter()
    flat = data["streams"].astype("float32")
    bounds = np.cumsum(np.concatenate([[0], data["lengths"]]))
    for lo, hi in itertools.pairwise(bounds):
        stream = flat[lo:hi]
        cd.reset_state()
        hit = None
        for i, x in enumerate(stream):
            events += 1
            if cd.predict(x, return_test_stat=False)["data"]["is_drift"]:
                hit = i + 1
                break
        first.append(hit)
    null_alarms = 0
    cd.reset_state()
    for x in data["null"].astype("float32"):
        events += 1
        if cd.predict(x, return_test_stat=False)["data"]["is_drift"]:
            null_alarms += 1
            cd.reset_state()
    per_event_s = (time.perf_counter() - t) / max(events, 1)
    with open(out, "w") as f:
        json.dump(
            {
                "first_alarm": first,
                "null_events": len(data["null"]),
                "null_alarms": null_alarms,
                "calibration_s": calibration_s,
                "per_event_s": per_event_s,
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
