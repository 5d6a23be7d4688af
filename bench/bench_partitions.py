"""Detection delay at 1, 4 and 8 partitions, measured on real processes: per-partition windows
(the default) vs windows merged across the consumer group (``SHARED_WINDOWS``).

    uv run python bench/bench_partitions.py                   # 1,4,8 partitions, 40 trials
    uv run python bench/bench_partitions.py --trials 5 --partitions 4   # a quick look

Once for the whole run it starts a Tansu broker, Redis and InfluxDB
(``bench_drift.LocalServices``, ports ``--base-port`` + 0..3; consumers from + 10); per
partition count it creates fresh topics and runs three consumer groups of real
``python -m driftloop_drift_consumer`` processes side by side on the same events
(``tests/integration/test_consumer_exactness.py``'s ``Consumer`` and ``consumer_env``):
per-partition windows with 1 consumer (default window settings), and merged
windows (``MERGE_WINDOW_SECONDS`` = ``--slot``, ``SHARED_WINDOWS=true``) with 1 consumer and,
from 3 partitions on, with 3. Each consumer has the bench champion's reference profile
(``bench_drift.setup``: the bootstrap recipe) in its state directory; MLflow is deliberately
unreachable (the cached reference serves), thresholds are the defaults.

Once every group holds every partition, one stream is produced (``partition_delay.layout``):
per trial holdout rows, then rows of the training data with ``SHIFT_FEATURE`` moved by +0.5
standard deviations (``bench_drift.shifted_pool``: predictions recomputed by the model), then
the next trial; each event on a uniformly random partition (as random request ids hash),
stamped with Poisson event times at ``--rate`` events/s starting ``LEAD_S`` ahead of the wall
clock (so the consumers, already running, read the stream as it is produced and no
partition's slot is passed by the idle rule before its events arrive). The delay of a trial is
read from the windows the consumers wrote to InfluxDB (``drift_window``): the shifted events
up to the last event of the first window whose ``declared`` field (any of the 27 series x
statistic gauges over its threshold, or the drift share over its threshold: what an alert rule
would see) is true. See ``partition_delay`` for the exact rule and its checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the rig is imported from the repository
    sys.path.insert(0, str(ROOT))

from bench.bench_drift import (  # noqa: E402
    SHIFT_FEATURE,
    LocalServices,
    Setup,
    bulk_producer,
    setup,
    shifted_pool,
    wait_until,
)
from bench.partition_delay import (  # noqa: E402
    MERGED,
    Outcome,
    Span,
    Summary,
    Trial,
    covered,
    index_by_partition,
    layout,
    outcomes,
    partition_window_span,
    slot_window_span,
    summarize,
)
from driftloop_cli.observe import metric_total, scrape_metrics  # noqa: E402
from driftloop_contracts import FEATURE_NAMES, MODEL_NAME, PredictionEvent  # noqa: E402
from tests.integration.test_consumer_exactness import (  # noqa: E402
    Champion,
    Consumer,
    consumer_env,
)

VERSION = "bench"
#: Event time of the first event, ahead of the wall clock (see the module docstring).
LEAD_S = 30.0
#: Events are refused when stamped more than an hour after they were produced
#: (MAX_EVENT_FUTURE_SKEW_SECONDS): the stream must fit in well under that.
MAX_SPAN_S = 3_000.0
GROUP_TIMEOUT_S = 180.0
#: Counters that would make a row's windows suspect: bad or refused events, fetch gaps, an
#: event stamped in a slot its partition had passed, a zombie's refused publish.
FAULT_COUNTERS = (
    "driftloop_events_invalid_total",
    "driftloop_drift_events_ignored_total",
    "driftloop_fetch_gaps_total",
    "driftloop_shared_late_events_total",
    "driftloop_shared_slots_late_total",
)
WINDOWS_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Mode:
    """One consumer group's window settings."""

    key: str
    windows: str
    consumers: int
    settings: dict[str, str] = field(default_factory=dict)


def modes(partitions: int, slot_s: float) -> list[Mode]:
    merged = {"MERGE_WINDOW_SECONDS": str(slot_s), "SHARED_WINDOWS": "true"}
    per_partition = {"MERGE_WINDOW_SECONDS": "0"}
    out = [
        Mode("pp1", "per-partition", 1, per_partition),
        Mode("m1", "merged (shared)", 1, merged),
    ]
    if partitions >= 3:
        out.append(Mode("m3", "merged (shared)", 3, merged))
    return out


@dataclass
class _Services:
    """What ``consumer_env`` reads of a stack."""

    kafka_bootstrap: str
    influx_url: str
    mlflow_url: str


@dataclass
class Group:
    mode: Mode
    name: str
    influx_db: str
    consumers: list[Consumer] = field(default_factory=list)


@dataclass
class Row:
    partitions: int
    mode: Mode
    summary: Summary
    mean_events: float
    outcomes: list[Outcome]
    windows: list[tuple[int, int, int, int, bool]]
    #: The group's fault counters at the end (all must be 0 for the row to be clean).
    faults: dict[str, float]


@dataclass
class Stream:
    """One partition count's events, in stream (= event-time) order."""

    trials: list[Trial]
    values: np.ndarray
    partition_of: np.ndarray
    times_us: np.ndarray


def make_stream(s: Setup, partitions: int, trials: int, *, rate: float, seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    plan, total = layout(partitions, trials, rng)
    shifted = np.zeros(total, dtype=bool)
    for t in plan:
        shifted[t.onset : t.end] = True
    values = s.holdout_values[rng.integers(0, len(s.holdout_values), total)]
    values[shifted] = shifted_pool(s, int(shifted.sum()), 0.5, seed + 1)
    start_us = (time.time() + LEAD_S) * 1e6
    times_us = (start_us + np.cumsum(rng.exponential(1e6 / rate, total))).astype(np.int64)
    if (times_us[-1] - start_us) / 1e6 > MAX_SPAN_S:
        raise SystemExit(
            f"{total:,} events at {rate:g}/s span more than {MAX_SPAN_S:.0f} s of event time: "
            "raise --rate or lower --trials"
        )
    return Stream(plan, values, rng.integers(0, partitions, total), times_us)


async def _create_topics(bootstrap: str, topics: dict[str, str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + 30
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        await admin.create_topics(
            [
                NewTopic(name, 1 if kind == "model-events" else partitions, 1)
                for kind, name in topics.items()
            ]
        )
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, stream: Stream, tag: str) -> np.ndarray:
    """Send every event to its partition; returns each event's acknowledged offset."""
    producer = bulk_producer(bootstrap)
    offsets = np.full(len(stream.values), -1, dtype=np.int64)
    await producer.start()
    try:
        chunk = 2_000
        for lo in range(0, len(stream.values), chunk):
            futures = []
            for i in range(lo, min(lo + chunk, len(stream.values))):
                row = stream.values[i]
                rid = f"{tag}-{i}"
                event = PredictionEvent(
                    request_id=rid,
                    timestamp=datetime.fromtimestamp(stream.times_us[i] / 1e6, UTC),
                    model_name=MODEL_NAME,
                    model_version=VERSION,
                    features=dict(zip(FEATURE_NAMES, map(float, row[:8]), strict=True)),
                    prediction=float(row[8]),
                    latency_ms=1.0,
                    replica_id="bench",
                )
                futures.append(
                    await producer.send(
                        topic,
                        event.to_bytes(),
                        key=rid.encode(),
                        partition=int(stream.partition_of[i]),
                    )
                )
            for i, meta in enumerate(await asyncio.gather(*futures), start=lo):
                offsets[i] = meta.offset
    finally:
        await producer.stop()
    return offsets


def influx_windows(influx_url: str, db: str) -> list[dict[str, Any]]:
    """Every ``drift_window`` point of a database (empty until the consumer created it)."""
    r = httpx.get(
        f"{influx_url}/query",
        params={
            "db": db,
            "q": 'SELECT "events", "first_offset", "last_offset", "declared" FROM '
            '"drift_window" GROUP BY "partition"',
        },
        timeout=30,
    )
    r.raise_for_status()
    rows = []
    for result in r.json().get("results", []):
        for series in result.get("series", []):
            for values in series["values"]:
                rows.append({**series["tags"], **dict(zip(series["columns"], values, strict=True))})
    return rows


def spans_of(
    rows: list[dict[str, Any]], index: dict[int, np.ndarray], slot_of: np.ndarray
) -> list[tuple[int, Span]]:
    out = []
    for r in rows:
        p = int(r["partition"])
        args = (int(r["first_offset"]), int(r["last_offset"]), int(r["events"]))
        if p == MERGED:
            first, last = slot_window_span(slot_of, *args)
        else:
            first, last = partition_window_span(index, p, *args)
        out.append((p, Span(first, last, bool(r["declared"]))))
    return out


def run_partitions(
    s: Setup,
    services: LocalServices,
    root: Path,
    partitions: int,
    *,
    trials: int,
    rate: float,
    slot_s: float,
    seed: int,
    port: int,
) -> list[Row]:
    sfx = uuid.uuid4().hex[:6]
    topics = {
        c: f"{c}-pdelay-{partitions}-{sfx}" for c in ("predictions", "feedback", "model-events")
    }
    asyncio.run(_create_topics(services.kafka, topics, partitions))
    # MLflow deliberately unreachable: nothing listens on base + 9
    stack = _Services(services.kafka, services.influx_url, f"http://127.0.0.1:{services.base + 9}")
    champion = Champion(MODEL_NAME, VERSION, s.model, s.train)
    groups: list[Group] = []
    for mode in modes(partitions, slot_s):
        g = Group(
            mode, f"pdelay-{partitions}-{mode.key}-{sfx}", f"pdelay_{partitions}_{mode.key}_{sfx}"
        )
        for k in range(mode.consumers):
            name = f"{partitions}-{mode.key}-{k}"
            state = root / f"state-{name}"
            state.mkdir(parents=True)
            # the reference the consumer would fetch from MLflow (deliberately unreachable)
            (state / "reference.json").write_text(
                json.dumps(
                    {
                        "version": VERSION,
                        "run_id": "",
                        "holdout_rmse_usd": 50_000.0,
                        "profile": s.profile.model_dump(mode="json"),
                    }
                )
            )
            env = consumer_env(
                stack,
                champion,
                topics,
                port=port,
                instance_id=f"pdelay-{name}",
                group=g.name,
                redis_url=services.redis_url,
                influx_db=g.influx_db,
                labelled_dir=root / f"labelled-{name}",
                scratch=root,
                suffix=name,
                SEQUENTIAL_ERT_EVENTS="0",  # not measured here; saves each process a calibration
                WATCH_ENABLED="false",
                REPORTS_INTERVAL_SECONDS="0",
                LOG_LEVEL="warning",
                **mode.settings,
            )
            g.consumers.append(Consumer(name, port, env, root / f"consumer-{name}.log"))
            port += 1
        groups.append(g)
    consumers = [c for g in groups for c in g.consumers]
    try:
        for c in consumers:
            c.start()
        for g in groups:
            wait_until(partial(_holds_everything, g, partitions), GROUP_TIMEOUT_S, g.name, 0.5)
        stream = make_stream(s, partitions, trials, rate=rate, seed=seed)
        t = time.perf_counter()
        offsets = asyncio.run(_produce(services.kafka, topics["predictions"], stream, sfx))
        produced_s = time.perf_counter() - t
        index = index_by_partition(stream.partition_of, offsets)
        slot_of = stream.times_us // round(slot_s * 1e6)
        need = stream.trials[-1].end - 1
        rows: list[Row] = []
        for g in groups:
            merged = g.mode.windows != "per-partition"

            def done(g: Group = g, merged: bool = merged) -> bool:
                raw = influx_windows(services.influx_url, g.influx_db)
                spans = spans_of(raw, index, slot_of)
                return covered(spans, list(index), merged, need)

            wait_until(done, WINDOWS_TIMEOUT_S, f"{g.name}'s windows past the last trial", 2.0)
            raw = influx_windows(services.influx_url, g.influx_db)
            windows = sorted(
                (
                    int(r["partition"]),
                    int(r["first_offset"]),
                    int(r["last_offset"]),
                    int(r["events"]),
                    bool(r["declared"]),
                )
                for r in raw
            )
            spans = [span for _, span in spans_of(raw, index, slot_of)]
            results = outcomes(spans, stream.trials)
            scraped = scrape_metrics([c.url for c in g.consumers])
            faults = {name: metric_total(scraped, name) for name in FAULT_COUNTERS}
            faults["driftloop_shared_partials_total{outcome=conflict}"] = metric_total(
                scraped, "driftloop_shared_partials_total", outcome="conflict"
            )
            rows.append(
                Row(
                    partitions,
                    g.mode,
                    summarize(results),
                    float(np.mean([w[3] for w in windows])),
                    results,
                    windows,
                    faults,
                )
            )
        print(
            f"{partitions} partitions: {len(stream.values):,} events produced in {produced_s:.0f} s "
            f"({trials} trials)",
            file=sys.stderr,
        )
        return rows
    finally:
        for c in consumers:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.terminate()
        for c in consumers:
            c.stop()


def _holds_everything(g: Group, partitions: int) -> bool:
    """Every consumer of the group is ready and holds partitions, and together they hold
    each partition of both topics once (the group's rebalance is over)."""
    held: list[str] = []
    for c in g.consumers:
        ready = c.ready()
        if ready.get("status") != "ready" or not ready.get("assigned"):
            return False
        held.extend(ready["assigned"])
    return len(held) == len(set(held)) == 2 * partitions


def print_table(rows: list[Row], *, rate: float, slot_s: float) -> None:
    print(f"\n## Detection delay of a +0.5 sd shift of {SHIFT_FEATURE}, real consumer processes")
    print(
        f"Event time {rate:g} events/s (Poisson); merged windows: {slot_s:g} s slots, a window "
        "takes slots until it holds 200 events; per-partition windows: 200 events. Delay = "
        "shifted events up to the last event of the first window declaring drift; order "
        "statistics over the trials; false = windows of holdout rows only that declared drift.\n"
    )
    print(
        "| partitions | windows | consumers | trials | median delay | p90 delay | missed "
        "| false windows before onset | events per window |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r.summary
        print(
            f"| {r.partitions} | {r.mode.windows} | {r.mode.consumers} | {s.trials} "
            f"| {s.median:,.0f} | {s.p90:,.0f} | {s.missed} "
            f"| {s.false_windows} of {s.clean_windows} | {r.mean_events:,.0f} |"
        )
        if s.dropped:
            print(f"|  | ({s.dropped} trials dropped: a window straddled two trials) |")
    faults = {
        f"{r.partitions}/{r.mode.key}: {k}": v for r in rows for k, v in r.faults.items() if v
    }
    print(
        "\nFault counters of every group ("
        + ", ".join(FAULT_COUNTERS)
        + "): "
        + (f"NOT ZERO: {faults}" if faults else "all 0")
    )
    by_p: dict[int, list[Row]] = {}
    for r in rows:
        if r.mode.windows != "per-partition":
            by_p.setdefault(r.partitions, []).append(r)
    for p, merged in sorted(by_p.items()):
        if len(merged) == 2:
            one, three = merged
            same_w = one.windows == three.windows
            same_d = [o.delay for o in one.outcomes] == [o.delay for o in three.outcomes]
            print(
                f"\n{p} partitions, merged windows, 1 vs 3 consumers: {len(one.windows)} vs "
                f"{len(three.windows)} windows, identical (slots, events, decision): "
                f"{'yes' if same_w else 'NO'}; per-trial delays identical: "
                f"{'yes' if same_d else 'NO'}"
            )


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", default="1,4,8", help="comma-separated counts")
    parser.add_argument("--trials", type=int, default=40, help="shifts per partition count")
    parser.add_argument("--rate", type=float, default=200.0, help="event-time events/s")
    parser.add_argument("--slot", type=float, default=0.25, help="MERGE_WINDOW_SECONDS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-port", type=int, default=31800)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    busy = [p for p in range(args.base_port, args.base_port + 60) if _in_use(p)]
    if busy:  # another stack there: the broker would die with "Address in use" and we hang
        raise SystemExit(f"ports in use near --base-port {args.base_port}: {busy}")
    t0 = time.perf_counter()
    s = setup()
    root = Path(tempfile.mkdtemp(prefix="driftloop-pdelay-"))
    services = LocalServices(args.base_port, root)
    services.start()
    rows: list[Row] = []
    try:
        port = args.base_port + 10
        for i, p in enumerate(int(x) for x in args.partitions.split(",")):
            rows += run_partitions(
                s,
                services,
                root,
                p,
                trials=args.trials,
                rate=args.rate,
                slot_s=args.slot,
                seed=args.seed + 100 * p,
                port=port + 10 * i,
            )
    finally:
        services.stop()
    print_table(rows, rate=args.rate, slot_s=args.slot)
    print(f"\n(whole run {time.perf_counter() - t0:.0f} s; logs in {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
