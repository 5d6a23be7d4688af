"""Concurrent rows share one model call, each answered by the model its request started on."""

from __future__ import annotations

import asyncio

import pytest

from driftloop_contracts import EXAMPLE_FEATURES, FEATURE_NAMES
from driftloop_model_api.batching import MicroBatcher

from .conftest import loaded

ROW = [EXAMPLE_FEATURES[n] for n in FEATURE_NAMES]


def rows(n: int) -> list[list[float]]:
    return [[ROW[0] + i * 0.1, *ROW[1:]] for i in range(n)]


async def test_concurrent_rows_are_one_call_with_the_same_answers() -> None:
    model = loaded("1")
    batcher = MicroBatcher(max_rows=64)
    values = await asyncio.gather(*(batcher.predict(model, r) for r in rows(10)))
    assert batcher.batches == 1 and batcher.rows == 10
    assert values == pytest.approx([model.predict_usd([r])[0] for r in rows(10)])


async def test_batches_are_capped_and_split_by_model() -> None:
    old, new = loaded("1", 1.0), loaded("2", 2.0)
    batcher = MicroBatcher(max_rows=4)
    futures = [batcher.predict(old if i % 2 else new, r) for i, r in enumerate(rows(6))]
    values = await asyncio.gather(*futures)
    assert batcher.rows == 6 and batcher.batches >= 3
    for i, (r, value) in enumerate(zip(rows(6), values, strict=True)):
        expected = (old if i % 2 else new).predict_usd([r])[0]
        assert value == pytest.approx(expected)


async def test_a_failing_model_fails_only_its_batch() -> None:
    model = loaded("1")

    class Broken:
        def predict_usd(self, rows: object) -> list[float]:
            raise RuntimeError("boom")

    batcher = MicroBatcher()
    bad = batcher.predict(Broken(), ROW)
    good = batcher.predict(model, ROW)
    with pytest.raises(RuntimeError):
        await bad
    assert await good == pytest.approx(model.predict_usd([ROW])[0])
