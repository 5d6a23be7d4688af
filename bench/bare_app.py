"""Baseline (c) of bench_serving.py: the same model behind the barest FastAPI endpoint.

No events, cache, metrics or error shaping: body validated by FastAPI with the contracts'
``HouseFeatures``, one ``predict`` call inline, the value returned. Run by the benchmark as
``uvicorn bare_app:app --workers N`` with ``BENCH_MODEL_VERSION`` and ``MLFLOW_TRACKING_URI``
set. The model is loaded like the replicas load it: digest checked, skops with driftloop's
trusted types only (:func:`driftloop_training.registry.load_model`).
"""

from __future__ import annotations

import os
import warnings

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np
from fastapi import FastAPI

from driftloop_contracts import FEATURE_NAMES, TARGET_SCALE_USD, HouseFeatures
from driftloop_training import registry

# Same predict path as the replica: a numpy row in the fitted column order.
warnings.filterwarnings("ignore", message="X does not have valid feature names")
model = registry.load_model(os.environ["MLFLOW_TRACKING_URI"], os.environ["BENCH_MODEL_VERSION"])
assert list(getattr(model, "feature_names_in_", FEATURE_NAMES)) == list(FEATURE_NAMES)
app = FastAPI()


@app.post("/predict")
async def predict(features: HouseFeatures) -> dict[str, float]:
    row = np.asarray([features.as_row()], dtype=np.float64)
    return {"median_house_value": float(model.predict(row)[0]) * TARGET_SCALE_USD}
