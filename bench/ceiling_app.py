"""The ceiling of bench_serving.py: FastAPI with the replicas' validation and a constant answer.

The same body checks as baseline (c) (the contracts' ``HouseFeatures``), no model, no event, no
metrics: what uvicorn + FastAPI alone can answer on this machine, so ``ours/ceiling`` shows how
much of the framework's throughput the rest of the path keeps. Run by the benchmark as
``uvicorn ceiling_app:app --workers N``.
"""

from __future__ import annotations

from fastapi import FastAPI

from driftloop_contracts import HouseFeatures

app = FastAPI()


@app.post("/predict")
async def predict(features: HouseFeatures) -> dict[str, float]:
    return {"median_house_value": 200_000.0}
