"""What the event ledger costs a request: ``EventPublisher.publish`` with and without it.

Every accepted event writes its key to a memory-mapped slot (``ledger.py``) and frees the slot
once acknowledged. This times, per event and in-process (no network, no model), the ledger's
``add`` + ``settle`` alone and a whole ``publish`` + acknowledgement with and without a ledger,
over a ledger sized like the default replica's (2 x 100,000 + 1,000 slots). Compare with a
``/predict`` that takes ~2-4 ms through nginx (``bench/bench_serving.py``).

    uv run python bench/bench_ledger.py [--events 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from driftloop_contracts import FEEDBACK_TOPIC, PREDICTIONS_TOPIC
from driftloop_model_api.ledger import MmapLedger
from driftloop_model_api.metrics import Metrics
from driftloop_model_api.publisher import EventPublisher

TOPICS = (PREDICTIONS_TOPIC, FEEDBACK_TOPIC)
SIZES = {PREDICTIONS_TOPIC: 100_000, FEEDBACK_TOPIC: 100_000}
BATCH = 1_000
VALUE = b"x" * 420  # about a prediction event's size


class InstantProducer:
    """Acknowledges every record at once (the cost measured is ours, not the broker's)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def abort(self) -> None:
        return None

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def ledger_only(directory: Path, keys: list[bytes]) -> float:
    """Seconds per event for ``add`` then, a batch later, ``settle`` (as the publisher does)."""
    ledger = MmapLedger(directory, "bench", TOPICS, EventPublisher.ledger_slots(SIZES, BATCH))
    started = time.perf_counter()
    for i in range(0, len(keys), BATCH):
        slots = [ledger.add(PREDICTIONS_TOPIC, key) for key in keys[i : i + BATCH]]
        for slot in slots:
            ledger.settle(slot)
    took = time.perf_counter() - started
    ledger.close()
    return took / len(keys)


async def publish_all(directory: Path | None, keys: list[bytes]) -> float:
    """Seconds per event for publish + delivery + ack, through the real publisher."""
    ledger = (
        MmapLedger(directory, "bench", TOPICS, EventPublisher.ledger_slots(SIZES, BATCH))
        if directory is not None
        else None
    )
    metrics = Metrics("bench")
    publisher = EventPublisher(
        InstantProducer, metrics, buffer_sizes=SIZES, batch_size=BATCH, ledger=ledger
    )
    await publisher.start()
    started = time.perf_counter()
    for i in range(0, len(keys), BATCH):
        for key in keys[i : i + BATCH]:
            publisher.publish(PREDICTIONS_TOPIC, key, VALUE)
        while publisher.buffered:  # noqa: ASYNC110 (yield to the sender task, nothing to await)
            await asyncio.sleep(0)
    took = time.perf_counter() - started
    await publisher.stop()
    if ledger is not None:
        ledger.close()
    return took / len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    keys = [f"{i:08x}-5c1e6f0a9b2d4e7f8a1b3c5d7e9f0a2b".encode() for i in range(args.events)]
    rows: dict[str, list[float]] = {"ledger add+settle": [], "publish, no ledger": [],
                                    "publish, ledger": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for _ in range(args.rounds):  # interleaved: the machine's load swings
            rows["ledger add+settle"].append(ledger_only(directory, keys))
            rows["publish, no ledger"].append(asyncio.run(publish_all(None, keys)))
            rows["publish, ledger"].append(asyncio.run(publish_all(directory, keys)))
    medians = {name: statistics.median(values) * 1e6 for name, values in rows.items()}
    for name, us in medians.items():
        print(f"{name:22s} {us:6.2f} µs/event (median of {args.rounds} x {args.events:,})")
    extra = medians["publish, ledger"] - medians["publish, no ledger"]
    print(f"ledger overhead per /predict: {extra:.2f} µs (vs ~2,000-4,000 µs per request)")


if __name__ == "__main__":
    main()
