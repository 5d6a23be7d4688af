"""Dead letters through the real broker and the stack's real drift consumer.

The whole poison corpus goes to ``predictions``, ``feedback`` and ``model-events``, then normal
traffic. Proved: the drift consumer answers ``/health/ready`` 200 at every poll during and
after; every normal event is consumed (exact counts from its metrics, every feedback joined
into the labelled log); each poison record is in ``<topic>.dlq`` exactly once with its origin
(topic, partition, offset), reason and first bytes; the invalid counter equals the poison count
per topic and reason; and `driftloop dead-letters` shows them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from driftloop_cli.commands.dead_letters import read_dead_letters
from driftloop_contracts import (
    EXAMPLE_FEATURES,
    FEEDBACK_TOPIC,
    MAX_DEAD_LETTER_BYTES,
    MODEL_EVENTS_TOPIC,
    MODEL_NAME,
    PREDICTIONS_TOPIC,
    TOPICS,
    FeedbackEvent,
    InvalidReason,
    ModelPromoted,
    PredictionEvent,
    utcnow,
)
from driftloop_contracts.poison import (
    FAR_FUTURE,
    PoisonCase,
    feedback_poison,
    poison_corpus,
    prediction_poison,
)

pytestmark = pytest.mark.integration

DATA_PARTITIONS = next(t.partitions for t in TOPICS if t.name == PREDICTIONS_TOPIC)
#: Normal events sent after the poison, per data topic.
NORMAL = 400


def _far_future(valid: dict[str, Any]) -> PoisonCase:
    """Stamped in the year 2999: out of range against the record's Kafka timestamp."""
    value = json.dumps({**valid, "timestamp": FAR_FUTURE}).encode()
    return PoisonCase("timestamp_far_future", value, InvalidReason.TIMESTAMP_OUT_OF_RANGE)


def _prediction(request_id: str, version: str) -> PredictionEvent:
    return PredictionEvent(
        request_id=request_id,
        timestamp=utcnow(),
        model_name=MODEL_NAME,
        model_version=version,
        features=EXAMPLE_FEATURES,
        prediction=200_000.0,
        latency_ms=1.0,
        replica_id="test-dead-letters",
    )


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class ReadinessWatch:
    """Polls ``/health/ready`` every 100 ms; every answer that is not 200 is kept."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/health/ready"
        self.polls = 0
        self.not_ready: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    r = await client.get(self.url)
                    if r.status_code != 200:
                        self.not_ready.append(f"{r.status_code} {r.text[:300]}")
                except httpx.HTTPError as exc:
                    self.not_ready.append(repr(exc))
                self.polls += 1
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


async def _until(check: Any, what: str, within_s: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        last = await asyncio.to_thread(check)
        if last is True:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached in {within_s:.0f} s; last: {last}")
        await asyncio.sleep(0.5)


async def test_poison_is_dead_lettered_once_and_the_traffic_after_it_is_consumed(
    stack: Any, champion: str
) -> None:
    url = stack.drift_consumer_url
    await _until(
        lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200 or "not ready",
        "drift consumer ready",
    )
    valid = {
        PREDICTIONS_TOPIC: json.loads(_prediction("v", champion).to_bytes()),
        FEEDBACK_TOPIC: json.loads(
            FeedbackEvent(request_id="v", timestamp=utcnow(), actual=1.0).to_bytes()
        ),
        MODEL_EVENTS_TOPIC: json.loads(
            ModelPromoted(model_name=MODEL_NAME, version="1", run_id="r").to_bytes()
        ),
    }
    corpora = {
        PREDICTIONS_TOPIC: [
            *prediction_poison(valid[PREDICTIONS_TOPIC]),
            _far_future(valid[PREDICTIONS_TOPIC]),
        ],
        FEEDBACK_TOPIC: [
            *feedback_poison(valid[FEEDBACK_TOPIC]),
            _far_future(valid[FEEDBACK_TOPIC]),
        ],
        MODEL_EVENTS_TOPIC: poison_corpus(valid[MODEL_EVENTS_TOPIC]),
    }
    before = _samples(url)
    dlq_before = {
        topic: len(await read_dead_letters(stack.kafka_bootstrap, topic)) for topic in corpora
    }
    watch = ReadinessWatch(url)
    watching = asyncio.create_task(watch.run())

    # 1. the poison, spread over every partition; where each landed is its expected origin
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        acks="all",
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=30_000,
    )
    await producer.start()
    sent: dict[tuple[str, int, int], PoisonCase] = {}
    try:
        for topic, corpus in corpora.items():
            partitions = 1 if topic == MODEL_EVENTS_TOPIC else DATA_PARTITIONS
            for i, case in enumerate(corpus):
                meta = await producer.send_and_wait(
                    topic, case.value, key=f"poison-{i}".encode(), partition=i % partitions
                )
                sent[(topic, meta.partition, meta.offset)] = case

        # 2. normal traffic after it: predictions of the champion and their feedback
        run = uuid.uuid4().hex[:8]
        ids = [f"dlq-{run}-{i}" for i in range(NORMAL)]
        futures = []
        for rid in ids:
            futures.append(
                await producer.send(
                    PREDICTIONS_TOPIC, _prediction(rid, champion).to_bytes(), key=rid.encode()
                )
            )
        for i, rid in enumerate(ids):
            feedback = FeedbackEvent(request_id=rid, timestamp=utcnow(), actual=100_000.0 + i)
            futures.append(
                await producer.send(FEEDBACK_TOPIC, feedback.to_bytes(), key=rid.encode())
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    # 3. consumed in full: every record read once, every normal feedback joined and logged
    poison = {topic: len(corpus) for topic, corpus in corpora.items()}

    def caught_up() -> bool | str:
        now = _samples(url)
        got = {
            topic: _value(now, "driftloop_events_consumed_total", topic=topic)
            - _value(before, "driftloop_events_consumed_total", topic=topic)
            for topic in (PREDICTIONS_TOPIC, FEEDBACK_TOPIC)
        }
        rows = _value(now, "driftloop_labelled_rows_total") - _value(
            before, "driftloop_labelled_rows_total"
        )
        want = {t: NORMAL + poison[t] for t in got}
        return (got == want and rows == NORMAL) or f"consumed {got} of {want}, rows {rows}"

    await _until(caught_up, "every record consumed and every feedback logged", 180)

    def dead_lettered() -> bool | str:
        now = _samples(url)
        got = {
            t: _value(now, "driftloop_dead_letters_total", topic=t, outcome="published")
            - _value(before, "driftloop_dead_letters_total", topic=t, outcome="published")
            for t in corpora
        }
        return got == poison or f"published {got} of {poison}"

    await _until(dead_lettered, "every dead letter published", 120)
    after = _samples(url)

    # 4. counted by reason: exactly the corpus, nothing lost, nothing else
    for topic, corpus in corpora.items():
        expected = Counter(str(case.reason) for case in corpus)
        counted = {
            reason: _value(after, "driftloop_events_invalid_total", topic=topic, reason=reason)
            - _value(before, "driftloop_events_invalid_total", topic=topic, reason=reason)
            for reason in InvalidReason
        }
        assert {r: n for r, n in counted.items() if n} == dict(expected), topic
        assert (
            _value(after, "driftloop_dead_letters_total", topic=topic, outcome="failed")
            - _value(before, "driftloop_dead_letters_total", topic=topic, outcome="failed")
            == 0
        )

    # 5. each poison record in <topic>.dlq exactly once, with its origin and first bytes
    for topic in corpora:
        records = await read_dead_letters(stack.kafka_bootstrap, topic)
        new = records[dlq_before[topic] :]
        assert all(r.letter is not None for r in new), [r.problem for r in new]
        letters = [r.letter for r in new if r.letter is not None]
        origins = [(x.source_topic, x.partition, x.offset) for x in letters]
        mine = {origin: case for origin, case in sent.items() if origin[0] == topic}
        assert Counter(origins) == Counter(mine.keys()), topic  # each once, nothing else
        for record, letter in zip(new, letters, strict=True):
            case = mine[(letter.source_topic, letter.partition, letter.offset)]
            assert letter.reason == case.reason, (case.name, letter.error)
            assert record.key == f"{topic}:{letter.partition}:{letter.offset}".encode()
            head = None if case.value is None else case.value[:MAX_DEAD_LETTER_BYTES]
            assert letter.value_head == head, case.name
            assert letter.value_size == (None if case.value is None else len(case.value))

    # 6. ready throughout, and still ready after (the watcher's polls after the checks above)
    seen = watch.polls
    await _until(lambda: watch.polls >= seen + 5 or "polls", "readiness polled after", 10)
    watch.stop()
    await watching
    assert watch.not_ready == [], watch.not_ready[:5]
    assert watch.polls > 10


def test_the_cli_shows_the_newest_dead_letters(stack: Any, driftloop: Any) -> None:
    """Runs after the test above (file order): the newest feedback dead letters are listed."""
    result = driftloop("dead-letters", "--topic", "feedback", "--limit", "3", "--json")
    assert result.returncode == 0, result.stderr
    letters = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(letters) == 3
    assert {x["source_topic"] for x in letters} == {FEEDBACK_TOPIC}
    table = driftloop("dead-letters", "--topic", "feedback", "--limit", "2")
    assert table.returncode == 0 and "feedback.dlq" in table.stdout, table.stderr
    bad = driftloop("dead-letters", "--topic", "nope")
    assert bad.returncode == 2 and "unknown topic" in bad.stderr
