"""Where the local stack saturates: locust stepped up, every stage measured, each bound named.

    uv run python bench/saturation.py [--users 2,4,8,16,32,64] [--step-seconds 120]
        [--settle-seconds 15] [--base-port 18000] [--out DIR] [--down] [--replay saturation.json]

Brings the stack up if it is not (``driftloop up`` + bootstrap, idempotent), then runs one
headless locust process (``bench/saturation_locustfile.py``: the project's users stepped by a
load shape) against nginx ``/predict`` + ``/feedback``. For every step, over the step minus its
first ``--settle-seconds``, it records:

- serving: offered vs achieved req/s, p50/p99 latency, failures (per step, from locust);
- events: the replicas' publish rate (``driftloop_events_published_total``), buffered events
  (``driftloop_events_buffered``) at the start and end of the step, failed deliveries;
- drift consumer: consumed events/s (``driftloop_events_consumed_total``) and its lag
  (``driftloop_consumer_lag_events``, high watermark - next offset) at start and end;
- Redis: commands/s over the step (``INFO stats`` ``total_commands_processed``) and its
  ``instantaneous_ops_per_sec``;
- CPU % of one core per component process tree (each replica, nginx, drift consumer, broker,
  Redis, locust, the rest of the stack) and the machine's busy CPU, from psutil.

"Offered" is what the users would send at zero latency: users x requests per iteration
(1 + feedback share x (1 - bad share)) / mean think time. The users are a closed loop, so
achieved falls below offered as latency grows; a stage is saturated where it stops following
(:func:`decide`). Then it prints ``stage | rate held | bounded by | evidence``, the cluster
sizes for 10x and 100x the held traffic (:func:`extrapolate`, assumptions printed with it),
and writes ``saturation.json`` and ``saturation.md`` to the output directory next to locust's
reports. Method and definitions: docs/scale-out.md, "Where it saturates".

Run the full sweep on a quiet machine: on a shared one the CPU other work takes shows as
"other (not the stack)" and the bounds are the machine's, not the stack's.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.* importable
from bench.soak import wait_all_ready
from driftloop_cli import stack, supervisor
from driftloop_cli.commands.bootstrap import run_bootstrap
from driftloop_cli.settings import StackSettings
from driftloop_contracts import DEFAULT_BASE_PORT, load_settings
from driftloop_loadtest.command import locust_command, report_paths
from driftloop_loadtest.results import read_schedule_log

LOCUSTFILE = Path(__file__).resolve().with_name("saturation_locustfile.py")
#: A process tree at or above this share of one core is taken as bound by its core.
CORE_BUSY = 0.90
#: The machine is taken as the bound when all its cores are this busy.
MACHINE_BUSY = 0.90
#: Achieved must grow by at least this share of the offered increase to "follow" it.
FOLLOW = 0.5
#: Cluster sizes keep every process at or under this share of its core (headroom for bursts,
#: a replica lost, a rebalance).
TARGET_UTILISATION = 0.7
OTHER = "other (not the stack)"
LOCUST = "locust"
REST = "rest of the stack"
SERVING, EVENTS, CONSUMER, REDIS = "serving", "event publishing", "drift consumer", "redis"


# --------------------------------------------------------------------------- measurements


@dataclass
class Snapshot:
    """Cumulative counters at one moment (differences of two give a step's rates)."""

    at: float
    cpu_s: dict[str, float]  # CPU seconds per component process tree (user + system)
    machine_busy_s: float
    published: float
    delivery_failures: float
    buffered: float
    consumed: float
    lag: float
    redis_commands: float
    redis_instant_ops: float


@dataclass
class Step:
    """One load step, as measured (rates per second over the step's measured part)."""

    users: int
    seconds: float
    offered_rps: float
    achieved_rps: float
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    published_eps: float
    delivery_failures: float
    buffered_start: float
    buffered_end: float
    consumed_eps: float
    lag_start: float
    lag_end: float
    redis_ops: float
    redis_instant_ops: float
    #: % of one core per process tree; "machine" is the whole machine's busy % of one core.
    cpu_pct: dict[str, float] = field(default_factory=dict)


@dataclass
class Verdict:
    stage: str
    saturated: bool
    rate_held: float
    unit: str
    bounded_by: str
    evidence: str
    step_users: int | None = None  # the step where it saturated


def offered_rps(users: int, wait_min: float, wait_max: float, feedback: float, bad: float) -> float:
    """Requests/s the users would send at zero latency (the closed loop's ceiling)."""
    per_iteration = 1.0 + feedback * (1.0 - bad)
    return users * per_iteration / ((wait_min + wait_max) / 2.0)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live descendants and its reaped children (0 if gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for i, p in enumerate(procs):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
        if i == 0:
            total += t.children_user + t.children_system
    return total


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(t)) - t.idle - getattr(t, "iowait", 0.0)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` of one service as {sample name: [(labels, value)]}; empty if it did not answer
    (a missing figure shows as 0 in that step, and the log says which service)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def total(metrics: Mapping[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in metrics.get(name, []))


def snapshot(s: StackSettings, locust_pid: int) -> Snapshot:
    info = supervisor.process_info(s)
    cpu = {name: tree_cpu_seconds(int(p["pid"])) for name, p in info.items() if p.get("pid")}
    cpu[LOCUST] = tree_cpu_seconds(locust_pid)
    published = failures = buffered = 0.0
    for url in s.urls.model_apis(s.replicas):
        m = scrape(url)
        published += total(m, "driftloop_events_published_total")
        failures += total(m, "driftloop_events_failed_total")
        buffered += total(m, "driftloop_events_buffered")
    c = scrape(s.urls.drift_consumer)
    try:
        stats = redis.Redis.from_url(s.urls.redis, socket_timeout=2).info("stats")
        commands = float(stats["total_commands_processed"])
        instant = float(stats["instantaneous_ops_per_sec"])
    except redis.RedisError:
        commands = instant = 0.0
    return Snapshot(
        at=time.time(),
        cpu_s=cpu,
        machine_busy_s=machine_busy_seconds(),
        published=published,
        delivery_failures=failures,
        buffered=buffered,
        consumed=total(c, "driftloop_events_consumed_total"),
        lag=total(c, "driftloop_consumer_lag_events"),
        redis_commands=commands,
        redis_instant_ops=instant,
    )


def cpu_percent(a: Snapshot, b: Snapshot, replicas: int) -> dict[str, float]:
    """% of one core per component over a..b; the stack's minor components summed as one."""
    dt = max(b.at - a.at, 1e-6)
    main = {f"model-api-{i}" for i in range(replicas)} | {
        "nginx",
        "drift-consumer",
        "kafka",
        "redis",
        LOCUST,
    }
    pct: dict[str, float] = {}
    rest = 0.0
    for name, end in b.cpu_s.items():
        used = max(0.0, end - a.cpu_s.get(name, end)) / dt * 100
        if name in main:
            pct[name] = used
        else:
            rest += used
    pct[REST] = rest
    pct["machine"] = max(0.0, b.machine_busy_s - a.machine_busy_s) / dt * 100
    pct[OTHER] = max(0.0, pct["machine"] - sum(v for k, v in pct.items() if k != "machine"))
    return {k: round(v, 1) for k, v in pct.items()}


def _ms(value: object) -> float | None:
    return None if value is None else round(float(str(value)), 1)


def make_step(
    users: int,
    locust_row: Mapping[str, Any],
    a: Snapshot,
    b: Snapshot,
    offered: float,
    replicas: int,
) -> Step:
    dt = max(b.at - a.at, 1e-6)
    return Step(
        users=users,
        seconds=round(dt, 1),
        offered_rps=round(offered, 1),
        achieved_rps=round(int(locust_row.get("requests", 0)) / dt, 1),
        failures=int(locust_row.get("failures", 0)),
        p50_ms=_ms(locust_row.get("p50_ms")),
        p99_ms=_ms(locust_row.get("p99_ms")),
        published_eps=round((b.published - a.published) / dt, 1),
        delivery_failures=b.delivery_failures - a.delivery_failures,
        buffered_start=a.buffered,
        buffered_end=b.buffered,
        consumed_eps=round((b.consumed - a.consumed) / dt, 1),
        lag_start=a.lag,
        lag_end=b.lag,
        redis_ops=round((b.redis_commands - a.redis_commands) / dt, 1),
        redis_instant_ops=b.redis_instant_ops,
        cpu_pct=cpu_percent(a, b, replicas),
    )


# --------------------------------------------------------------------------- decisions (pure)


def bound_by(step: Step, processes: Sequence[str], cores: int) -> str:
    """The resource that bounded ``step``: the machine's cores when they were all busy, else a
    process tree of ``processes`` (or locust, the load generator) at ~100% of one core, else
    none found (then the bound is not CPU: latency, I/O or a lock; read the logs)."""
    cpu = step.cpu_pct
    hot = [
        f"{p} {cpu[p]:.0f}% of a core"
        for p in [*processes, LOCUST]
        if cpu.get(p, 0.0) >= CORE_BUSY * 100
    ]
    machine = cpu.get("machine", 0.0)
    if machine >= MACHINE_BUSY * cores * 100:
        busiest = max(processes, key=lambda p: cpu.get(p, 0.0), default=None)
        other = cpu.get(OTHER, 0.0)
        detail = f"busiest {busiest} {cpu.get(busiest or '', 0.0):.0f}%" if busiest else ""
        return (
            f"the machine's {cores} cores ({machine:.0f}% of {cores * 100}%; {detail}; "
            f"locust {cpu.get(LOCUST, 0.0):.0f}%, {OTHER} {other:.0f}%)"
        )
    if hot:
        return ", ".join(hot)
    return "no CPU bound found (latency, I/O or a lock: read the logs)"


def _busiest(step: Step, processes: Sequence[str]) -> str:
    return ", ".join(f"{p} {step.cpu_pct.get(p, 0.0):.0f}%" for p in processes)


def decide(
    steps: Sequence[Step], replicas: int, cores: int, follow: float = FOLLOW
) -> list[Verdict]:
    """Per stage: did it saturate, at which step, the rate it held and what bounded it.

    - serving (nginx + replicas): saturated at the first step whose achieved req/s grew by less
      than ``follow`` x the offered increase over the previous step, or that had failures;
      held = the highest achieved req/s of any step.
    - event publishing (replicas -> broker): saturated at the first step whose buffered events
      grew by more than one second of publishing (and > 50), or with failed deliveries;
      held = the published events/s of that step (else the highest).
    - drift consumer: saturated at the first step whose lag grew by more than 2% of the step's
      events (and > 100) while it consumed < 95% of what was published: lag growing without
      bound; held = its consumed events/s in that step, which is its capacity (else the highest).
    - redis: saturated when its process is at ~100% of its one core (Redis runs commands on one
      thread); held = commands/s.
    """
    out: list[Verdict] = []
    if not steps:
        return out
    serving_procs = [*(f"model-api-{i}" for i in range(replicas)), "nginx"]
    top = max(steps, key=lambda st: st.achieved_rps)

    # serving
    hit: tuple[int, str] | None = None
    for i, st in enumerate(steps):
        if st.failures:
            hit = (i, f"{st.users} users: {st.failures} failed requests")
            break
        if i == 0:
            continue
        prev = steps[i - 1]
        d_off = st.offered_rps - prev.offered_rps
        d_ach = st.achieved_rps - prev.achieved_rps
        if d_off > 0 and d_ach < follow * d_off:
            hit = (
                i,
                f"{prev.users}→{st.users} users: offered +{d_off:.0f} req/s, achieved "
                f"{d_ach:+.0f} (gain {d_ach / d_off:.2f}); p99 {_ms(prev.p99_ms)} → {_ms(st.p99_ms)} ms",
            )
            break
    if hit:
        i, why = hit
        out.append(
            Verdict(
                SERVING,
                True,
                top.achieved_rps,
                "req/s",
                bound_by(steps[i], serving_procs, cores),
                why,
                steps[i].users,
            )
        )
    else:
        out.append(
            Verdict(
                SERVING,
                False,
                top.achieved_rps,
                "req/s",
                "not saturated",
                f"achieved followed offered up to {steps[-1].users} users "
                f"(p99 {_ms(steps[-1].p99_ms)} ms; {_busiest(steps[-1], serving_procs)})",
            )
        )

    # event publishing
    pub_procs = [*(f"model-api-{i}" for i in range(replicas)), "kafka"]
    hit = None
    for i, st in enumerate(steps):
        growth = st.buffered_end - st.buffered_start
        if st.delivery_failures > 0 or growth > max(50.0, st.published_eps):
            hit = (
                i,
                f"{st.users} users: buffered {st.buffered_start:.0f} → {st.buffered_end:.0f}, "
                f"{st.delivery_failures:.0f} failed deliveries",
            )
            break
    top_pub = max(steps, key=lambda st: st.published_eps)
    if hit:
        i, why = hit
        out.append(
            Verdict(
                EVENTS,
                True,
                steps[i].published_eps,
                "events/s",
                bound_by(steps[i], pub_procs, cores),
                why,
                steps[i].users,
            )
        )
    else:
        out.append(
            Verdict(
                EVENTS,
                False,
                top_pub.published_eps,
                "events/s",
                "not saturated",
                f"buffer flat at every step (max {max(st.buffered_end for st in steps):.0f}); "
                f"{_busiest(top_pub, ['kafka'])}",
            )
        )

    # drift consumer
    con_procs = ["drift-consumer", "kafka", "redis"]
    hit = None
    for i, st in enumerate(steps):
        growth = st.lag_end - st.lag_start
        events = st.published_eps * st.seconds
        if growth > max(100.0, 0.02 * events) and st.consumed_eps < 0.95 * st.published_eps:
            hit = (
                i,
                f"{st.users} users: lag {st.lag_start:.0f} → {st.lag_end:.0f} events; consumed "
                f"{st.consumed_eps:.0f}/s < published {st.published_eps:.0f}/s",
            )
            break
    top_con = max(steps, key=lambda st: st.consumed_eps)
    if hit:
        i, why = hit
        out.append(
            Verdict(
                CONSUMER,
                True,
                steps[i].consumed_eps,
                "events/s",
                bound_by(steps[i], con_procs, cores),
                why,
                steps[i].users,
            )
        )
    else:
        out.append(
            Verdict(
                CONSUMER,
                False,
                top_con.consumed_eps,
                "events/s",
                "not saturated",
                f"lag bounded at every step (end of last step {steps[-1].lag_end:.0f}); "
                f"{_busiest(top_con, ['drift-consumer'])}",
            )
        )

    # redis
    redis_hot = next(
        (i for i, st in enumerate(steps) if st.cpu_pct.get("redis", 0.0) >= CORE_BUSY * 100),
        None,
    )
    top_redis = max(steps, key=lambda st: st.redis_ops)
    if redis_hot is not None:
        st = steps[redis_hot]
        out.append(
            Verdict(
                REDIS,
                True,
                st.redis_ops,
                "commands/s",
                f"redis {st.cpu_pct.get('redis', 0.0):.0f}% of its one core",
                f"{st.users} users",
                st.users,
            )
        )
    else:
        out.append(
            Verdict(
                REDIS,
                False,
                top_redis.redis_ops,
                "commands/s",
                "not saturated",
                f"{_busiest(top_redis, ['redis'])} at {top_redis.redis_ops:.0f} commands/s",
            )
        )
    return out


@dataclass
class Sizing:
    factor: int
    requests_per_s: float
    events_per_s: float
    replicas: int
    consumers: int
    partitions: int
    redis_shards: int


@dataclass
class Capacity:
    """Per-core throughput of each scaled unit, measured at the step with the most traffic."""

    held_rps: float
    per_replica_rps: float
    events_per_request: float
    per_consumer_eps: float
    redis_ops_per_request: float
    redis_ops_per_core: float
    assumptions: list[str]


def _per_core(rate: float, cpu_pct: float) -> float:
    return rate / (cpu_pct / 100) if cpu_pct > 0 else math.inf


def capacity(steps: Sequence[Step], verdicts: Sequence[Verdict], replicas: int) -> Capacity:
    """Throughput per core of a replica, a consumer and Redis, from the busiest step.

    Linear model: a process's CPU grows in proportion to its rate, and each replica, each
    consumer and Redis gets one core of its own (a replica serves on one event loop, the
    consumer decodes and scores on one, Redis runs commands on one thread). A stage that
    saturated on its own core gives its capacity directly; one that did not (or was starved by
    a full machine) is extrapolated from rate / CPU share, which assumes no other bound
    (locks, I/O) appears before its core is full.
    """
    top = max(steps, key=lambda st: st.achieved_rps)
    replica_cpu = sum(top.cpu_pct.get(f"model-api-{i}", 0.0) for i in range(replicas)) / replicas
    per_replica = _per_core(top.achieved_rps / replicas, replica_cpu)
    con = max(steps, key=lambda st: st.consumed_eps)
    per_consumer = _per_core(con.consumed_eps, con.cpu_pct.get("drift-consumer", 0.0))
    by = {v.stage: v for v in verdicts}
    if by.get(CONSUMER) and by[CONSUMER].saturated and "drift-consumer" in by[CONSUMER].bounded_by:
        per_consumer = min(per_consumer, by[CONSUMER].rate_held)
    events_per_request = top.published_eps / top.achieved_rps if top.achieved_rps else 0.0
    redis_per_request = top.redis_ops / top.achieved_rps if top.achieved_rps else 0.0
    redis_per_core = _per_core(top.redis_ops, top.cpu_pct.get("redis", 0.0))
    return Capacity(
        held_rps=top.achieved_rps,
        per_replica_rps=round(per_replica, 1),
        events_per_request=round(events_per_request, 3),
        per_consumer_eps=round(per_consumer, 1),
        redis_ops_per_request=round(redis_per_request, 2),
        redis_ops_per_core=round(redis_per_core, 1),
        assumptions=[
            f"each replica, each drift consumer and Redis get one core each; CPU grows linearly "
            f"with rate; every process kept at <= {TARGET_UTILISATION:.0%} of its core",
            f"per replica {per_replica:.0f} req/s per core (from {top.achieved_rps / replicas:.0f}"
            f" req/s at {replica_cpu:.0f}% of a core), per consumer {per_consumer:.0f} events/s "
            f"per core (from {con.consumed_eps:.0f}/s at "
            f"{con.cpu_pct.get('drift-consumer', 0.0):.0f}%), Redis {redis_per_core:.0f} "
            f"commands/s per core (from {top.redis_ops:.0f}/s at "
            f"{top.cpu_pct.get('redis', 0.0):.0f}%); a figure from a few % of a core is rough",
            f"{events_per_request:.2f} Kafka events and {redis_per_request:.1f} Redis commands "
            "per request (this traffic mix: the share with feedback sets it)",
            "partitions = 2 x consumers (>= consumers always; the group can double without "
            "re-partitioning, which would move request_id keys between partitions)",
            "nginx, the broker and the load generator are not the bound (scale them apart: an "
            "Ingress/LB, a Kafka cluster sized by its own numbers; the local broker is Tansu)",
        ],
    )


def extrapolate(cap: Capacity, factors: Sequence[int] = (10, 100)) -> list[Sizing]:
    """Replicas, consumers, partitions and Redis shards for ``factor`` x the held traffic."""
    out = []
    for f in factors:
        rps = cap.held_rps * f
        eps = rps * cap.events_per_request
        ops = rps * cap.redis_ops_per_request
        replicas = max(1, math.ceil(rps / (cap.per_replica_rps * TARGET_UTILISATION)))
        consumers = max(1, math.ceil(eps / (cap.per_consumer_eps * TARGET_UTILISATION)))
        shards = max(1, math.ceil(ops / (cap.redis_ops_per_core * TARGET_UTILISATION)))
        out.append(
            Sizing(f, round(rps, 1), round(eps, 1), replicas, consumers, 2 * consumers, shards)
        )
    return out


# --------------------------------------------------------------------------- report


def render(
    steps: Sequence[Step],
    verdicts: Sequence[Verdict],
    cap: Capacity,
    sizes: Sequence[Sizing],
    header: str,
) -> str:
    lines = [header, ""]
    lines.append(
        "| users | offered req/s | achieved req/s | p50 ms | p99 ms | failed | published ev/s "
        "| buffered start→end | consumed ev/s | lag start→end | Redis cmd/s | CPU % of a core |"
    )
    lines.append(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | --- |"
    )
    for st in steps:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in st.cpu_pct.items() if v >= 1)
        lines.append(
            f"| {st.users} | {st.offered_rps:.0f} | {st.achieved_rps:.0f} | {_ms(st.p50_ms)} "
            f"| {_ms(st.p99_ms)} | {st.failures} | {st.published_eps:.0f} "
            f"| {st.buffered_start:.0f}→{st.buffered_end:.0f} | {st.consumed_eps:.0f} "
            f"| {st.lag_start:.0f}→{st.lag_end:.0f} | {st.redis_ops:.0f} | {cpu} |"
        )
    lines += ["", "| stage | rate held | bounded by | evidence |", "| --- | ---: | --- | --- |"]
    for v in verdicts:
        held = f"{v.rate_held:.0f} {v.unit}" + ("" if v.saturated else " (not saturated: ≥)")
        lines.append(f"| {v.stage} | {held} | {v.bounded_by} | {v.evidence} |")
    lines += [
        "",
        f"Held traffic: {cap.held_rps:.0f} req/s. Cluster size for 10x and 100x of it:",
        "",
        "| traffic | req/s | Kafka events/s | replicas | drift consumers | partitions | Redis shards |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for z in sizes:
        lines.append(
            f"| {z.factor}x | {z.requests_per_s:.0f} | {z.events_per_s:.0f} | {z.replicas} "
            f"| {z.consumers} | {z.partitions} | {z.redis_shards} |"
        )
    lines += ["", "Assumptions:", *(f"- {a}" for a in cap.assumptions)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- run


def conclude(
    steps: Sequence[Step],
    replicas: int,
    cores: int,
    step_s: float,
    settle_s: float,
    load: str,
    out: Path,
) -> None:
    """Decide, size, print the tables; write ``saturation.md`` and ``saturation.json``."""
    verdicts = decide(steps, replicas, cores)
    cap = capacity(steps, verdicts, replicas)
    sizes = extrapolate(cap)
    header = (
        f"## driftloop saturation: {replicas} replicas, {cores} cores, {step_s:g} s steps "
        f"({settle_s:g} s settle), load average {load}"
    )
    text = render(steps, verdicts, cap, sizes, header)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "saturation.md").write_text(text + "\n", encoding="utf-8")
    body = {
        "replicas": replicas,
        "cores": cores,
        "step_seconds": step_s,
        "settle_seconds": settle_s,
        "load_average": load,
        "steps": [asdict(st) for st in steps],
        "verdicts": [asdict(v) for v in verdicts],
        "capacity": asdict(cap),
        "sizing": [asdict(z) for z in sizes],
    }
    (out / "saturation.json").write_text(json.dumps(body, indent=1), encoding="utf-8")


def replay(path: Path, out: Path) -> None:
    """Decide again from a run's ``saturation.json`` (after changing a rule), without a stack."""
    data = json.loads(path.read_text(encoding="utf-8"))
    steps = [Step(**st) for st in data["steps"]]
    conclude(
        steps,
        int(data["replicas"]),
        int(data["cores"]),
        float(data["step_seconds"]),
        float(data["settle_seconds"]),
        str(data.get("load_average", "unknown")),
        out,
    )


def wait_until(at: float, proc: subprocess.Popen[bytes]) -> bool:
    """Sleep until wall time ``at``; False if locust exited first."""
    while time.time() < at:
        if proc.poll() is not None:
            return False
        time.sleep(min(0.5, max(0.0, at - time.time())))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="2,4,8,16,32,64", help="users per step, ascending")
    parser.add_argument("--step-seconds", type=float, default=120.0)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=15.0,
        help="not measured at the start of each step (spawning, queues filling)",
    )
    parser.add_argument("--wait-min", type=float, default=0.05, help="users' think time, s")
    parser.add_argument("--wait-max", type=float, default=0.2)
    parser.add_argument("--feedback-share", type=float, default=0.5)
    parser.add_argument("--bad-share", type=float, default=0.02)
    parser.add_argument(
        "--base-port",
        type=int,
        default=None,
        help=f"default DRIFTLOOP_BASE_PORT or {DEFAULT_BASE_PORT}",
    )
    parser.add_argument("--out", type=Path, default=None, help="default <state>/saturation/<time>")
    parser.add_argument("--down", action="store_true", help="stop the stack afterwards")
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="a run's saturation.json: decide and size again (to --out, default its directory)",
    )
    args = parser.parse_args()
    if args.replay:
        replay(args.replay, args.out or args.replay.parent)
        return 0
    users = [int(u) for u in args.users.split(",") if u.strip()]
    if not users or users != sorted(users) or users[0] < 1:
        parser.error("--users: ascending whole numbers >= 1, e.g. 2,4,8")
    if args.settle_seconds >= args.step_seconds:
        parser.error("--settle-seconds must be shorter than --step-seconds")

    overrides = {"base_port": args.base_port} if args.base_port else {}
    s = load_settings(StackSettings, **overrides).resolved()
    err = Console(stderr=True)
    out = args.out or s.state_dir / "saturation" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    total_s = len(users) * args.step_seconds
    err.print(
        f"stack on base port {s.base_port} ({s.replicas} replicas); steps {users} users x "
        f"{args.step_seconds:g} s ({total_s / 60:.1f} min); reports in {out}"
    )
    stack.up(s)
    run_bootstrap(s, force=False, console=err)
    wait_all_ready(s, err)

    steps_file = out / "steps.json"
    argv = locust_command(
        host=s.urls.nginx,
        users=users[-1],
        spawn_rate=float(users[-1]),
        run_time_s=int(total_s + 60),  # a backstop: the shape ends the run
        schedule="steady",
        report_dir=out,
        feedback_share=args.feedback_share,
        bad_share=args.bad_share,
        extra_args=[
            "--wait-min", str(args.wait_min),
            "--wait-max", str(args.wait_max),
            "--saturation-users", ",".join(map(str, users)),
            "--saturation-step-seconds", str(args.step_seconds),
            "--saturation-settle-seconds", str(args.settle_seconds),
            "--saturation-out", str(steps_file),
        ],
    )  # fmt: skip
    argv[argv.index("-f") + 1] = str(LOCUSTFILE)
    log = (out / "locust.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    measured: list[tuple[int, Snapshot, Snapshot]] = []
    try:
        schedule_log = report_paths(out).schedule_log
        deadline = time.monotonic() + 180
        while not read_schedule_log(schedule_log):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"locust did not start; see {out / 'locust.log'}")
            time.sleep(0.5)
        t0 = float(read_schedule_log(schedule_log)[0]["wall_time"])
        for i, n in enumerate(users):
            if not wait_until(t0 + i * args.step_seconds + args.settle_seconds, proc):
                break
            a = snapshot(s, proc.pid)
            if not wait_until(t0 + (i + 1) * args.step_seconds - 0.5, proc):
                break
            b = snapshot(s, proc.pid)
            measured.append((n, a, b))
            err.print(
                f"step {i + 1}/{len(users)}: {n} users, CPU machine "
                f"{cpu_percent(a, b, s.replicas)['machine']:.0f}%, consumer lag {b.lag:.0f}"
            )
    except KeyboardInterrupt:
        err.print("interrupted: stopping locust")
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)  # locust writes its reports on SIGTERM too
                proc.wait(timeout=60)
        log.close()

    if not steps_file.exists():
        raise SystemExit(f"locust wrote no {steps_file}; see {out / 'locust.log'}")
    rows = {r["index"]: r for r in json.loads(steps_file.read_text())["steps"]}
    steps = [
        make_step(
            n,
            rows.get(i, {}),
            a,
            b,
            offered_rps(n, args.wait_min, args.wait_max, args.feedback_share, args.bad_share),
            s.replicas,
        )
        for i, (n, a, b) in enumerate(measured)
    ]
    if not steps:
        raise SystemExit("no step was measured")
    load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
    conclude(
        steps,
        s.replicas,
        psutil.cpu_count() or 1,
        args.step_seconds,
        args.settle_seconds,
        load,
        out,
    )
    err.print(f"table: {out / 'saturation.md'}; data: {out / 'saturation.json'}")
    if args.down:
        stack.down(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
