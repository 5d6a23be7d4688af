"""Where a ``/predict`` spends its CPU: per process, and inside a replica per part of the path.

Drives bench_serving.py's load (``wrk``, a fresh random row per request) through nginx of a
running stack for ``--duration`` seconds and meanwhile

* reads the CPU time (user + system, from ``/proc`` via psutil) of every process that serves a
  request: the replicas, nginx's workers, Redis, the Kafka broker, Prometheus, and wrk itself;
  divided by the requests answered, that is CPU milliseconds per request, whatever the other
  load on the machine (CPU time, unlike wall time, does not grow when we wait for a core).
  What each process spends with no traffic at all (scrapes, polls, timers; measured for
  ``--idle`` seconds first) is subtracted, so the figure is the cost of a request, not of the
  time it took on a busy machine;
* samples each replica with py-spy (``--nonblocking``, so the replica is never paused) and
  sorts every sample into one part of the path (:data:`PARTS`). A part's share of the samples
  times the replica's CPU per request is that part's CPU per request.

Run against a stack that is up (``driftloop up``)::

    uv run python bench/profile_serving.py --base-port 18000 --duration 30

py-spy comes from PyPI through ``uv tool run py-spy`` (needs ptrace, i.e. root or
``CAP_SYS_PTRACE``); ``--py-spy`` names another command. ``--keep DIR`` keeps the raw
(collapsed-stack) profiles, one per replica, for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from driftloop_contracts import PortPlan, StackUrls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.* importable
from bench.bench_serving import run_wrk

#: One part of the request path: a sample belongs to the first part (in this order) any of
#: whose markers occurs in any frame of its stack. The order settles nesting: the histogram
#: observed inside ``_emit`` is metrics, not event encoding; a Redis call under
#: ``predict_one`` is the cache. A sample no part claims goes to the framework part of its
#: innermost framework frame (:data:`FRAMEWORK`).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("Kafka producer + acks (background task)", ("EventPublisher._run", "aiokafka/")),
    (
        "reloader, recovery, health (background)",
        ("driftloop_model_api/reloader.py", "driftloop_model_api/recovery.py", "health"),
    ),
    ("/metrics scrapes", ("metrics_router", "prometheus_client/exposition.py")),
    (
        "model predict (micro-batched)",
        ("predict_usd", "MicroBatcher", "sklearn/", "threadpoolctl"),
    ),
    ("prediction cache (Redis before, in-process now)", ("driftloop_model_api/cache.py", "redis/")),
    (
        "metrics on the request path",
        ("prometheus_client/", "Metrics."),
    ),
    ("event buffer + ledger", ("EventPublisher.publish", "driftloop_model_api/ledger.py")),
    ("event encoding", ("driftloop_contracts/events.py", "PredictionService._emit")),
    ("feedback token (HMAC)", ("driftloop_model_api/tokens.py",)),
    ("request ids", ("driftloop_model_api/request_ids.py",)),
    ("body read + validation", ("driftloop_model_api/inputs.py",)),
    ("logging", ("structlog/", "logging/")),
    ("response building", ("routes/predict.py", "starlette/responses.py")),
    (
        "dependency injection (FastAPI; thread pool before)",
        ("run_in_threadpool", "WorkerThread.run", "solve_dependencies"),
    ),
]
UVICORN = "uvicorn HTTP (httptools) + socket I/O"
#: Innermost frame wins among these (a sample in uvicorn's socket write under starlette's
#: response is uvicorn's).
FRAMEWORK: list[tuple[str, tuple[str, ...]]] = [
    ("FastAPI/Starlette routing + middleware", ("fastapi/", "starlette/", "anyio/")),
    (UVICORN, ("uvicorn/", "httptools")),
    ("event loop (asyncio/uvloop)", ("asyncio/", "uvloop")),
]
OTHER = "other"


def classify(frames: list[str]) -> str:
    """The part of the path one collapsed py-spy stack (outermost frame first) belongs to.

    A sample whose innermost frame is uvicorn's is socket I/O (writing the answer, reading the
    next request), whoever called it: the response's send passes through our middleware.
    """
    if "uvicorn/" in frames[-1]:
        return UVICORN
    for part, markers in PARTS:
        if any(m in f for f in frames for m in markers):
            return part
    for frame in reversed(frames):
        for part, markers in FRAMEWORK:
            if any(m in frame for m in markers):
                return part
    return OTHER


def read_profile(path: Path) -> collections.Counter[str]:
    """Samples per part from py-spy's ``--format raw`` output (``a;b;c <count>`` per line)."""
    parts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            parts[classify(stack.split(";"))] += int(count)
    return parts


@dataclass
class Proc:
    """A process whose CPU time we count, with the cumulative figure at the start."""

    role: str
    process: psutil.Process
    start: float = 0.0

    def cpu(self) -> float:
        t = self.process.cpu_times()
        return t.user + t.system


def listeners(ports: dict[int, str]) -> list[Proc]:
    """The processes listening on ``ports`` (nginx: its workers, which do the work)."""
    found: list[Proc] = []
    seen: set[int] = set()
    for conn in psutil.net_connections(kind="tcp"):
        port = getattr(conn.laddr, "port", None)  # an unbound socket has an empty laddr
        role = ports.get(port) if port is not None and conn.status == psutil.CONN_LISTEN else None
        if role is None or conn.pid is None or conn.pid in seen:
            continue
        seen.add(conn.pid)
        process = psutil.Process(conn.pid)
        if role == "nginx" and process.children():
            continue  # the master; its workers listen on the same socket
        found.append(Proc(role, process))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-port", type=int, default=None, help="stack's port plan")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--idle", type=float, default=10, help="seconds of no traffic measured first (0: none)"
    )
    parser.add_argument("--py-spy", default="uv tool run py-spy", help="py-spy command")
    parser.add_argument("--keep", type=Path, help="keep the raw profiles in this directory")
    args = parser.parse_args()

    plan = PortPlan(args.base_port) if args.base_port else PortPlan()
    urls = StackUrls(plan)
    roles = {plan.nginx: "nginx", plan.redis: "redis", plan.kafka: "kafka broker"}
    roles[plan.prometheus] = "prometheus"
    for i in range(args.replicas):
        roles[plan.model_api(i)] = f"replica-{i}"
    procs = listeners(roles)
    replicas = [p for p in procs if p.role.startswith("replica-")]
    if len(replicas) != args.replicas:
        raise SystemExit(f"found {len(replicas)} replicas listening, expected {args.replicas}")
    out = args.keep or Path(tempfile.mkdtemp(prefix="driftloop-profile-"))
    out.mkdir(parents=True, exist_ok=True)

    idle: dict[str, float] = dict.fromkeys((p.role for p in procs), 0.0)
    if args.idle > 0:
        for p in procs:
            p.start = p.cpu()
        time.sleep(args.idle)
        idle = {p.role: (p.cpu() - p.start) / args.idle for p in procs}

    spies = []
    for p in replicas:
        cmd = [
            *shlex.split(args.py_spy),
            "record",
            "--pid",
            str(p.process.pid),
            "--rate",
            str(args.rate),
            "--duration",
            str(args.duration + 1),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out / f"{p.role}.txt"),
        ]
        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(2)  # py-spy attached (uv tool run may resolve first)
    for p in procs:
        p.start = p.cpu()
    load_before = psutil.getloadavg()
    wrk_cpu_before = _children_cpu()
    result = run_wrk(
        "a) driftloop via nginx",
        f"{urls.nginx}/predict",
        "api",
        connections=args.connections,
        threads=args.threads,
        duration=args.duration,
        warmup=0,
    )
    # Busy CPU minus what the process would have spent idle over the same time.
    spent = {p.role: p.cpu() - p.start - idle[p.role] * args.duration for p in procs}
    spent["wrk (load generator)"] = _children_cpu() - wrk_cpu_before
    load_after = psutil.getloadavg()
    for spy in spies:
        _, err = spy.communicate(timeout=args.duration + 120)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.decode()[-2000:]}")

    requests = result.rps * args.duration
    print(
        f"\n{requests:.0f} requests in {args.duration}s ({result.rps:.0f} req/s, p99 "
        f"{result.p99_ms:.1f} ms); load average {load_before[0]:.1f} -> {load_after[0]:.1f} "
        f"on {psutil.cpu_count()} cores"
    )
    print("\nCPU per request, by process")
    print(f"| {'process':<26} | {'CPU ms/request':>14} |")
    print(f"|{'-' * 28}|{'-' * 16}|")
    merged: dict[str, float] = collections.defaultdict(float)
    for role, seconds in spent.items():
        merged["replicas (all)" if role.startswith("replica-") else role] += seconds
    for role, seconds in sorted(merged.items(), key=lambda kv: -kv[1]):
        print(f"| {role:<26} | {seconds / requests * 1000:>14.3f} |")
    print(f"| {'total':<26} | {sum(merged.values()) / requests * 1000:>14.3f} |")

    replica_ms = sum(spent[p.role] for p in replicas) / requests * 1000
    samples: collections.Counter[str] = collections.Counter()
    for p in replicas:
        samples.update(read_profile(out / f"{p.role}.txt"))
    total = sum(samples.values())
    print(f"\nInside the replicas ({total} samples; {replica_ms:.3f} CPU ms/request in all)")
    print(f"| {'part of the path':<42} | {'share':>6} | {'CPU ms/request':>14} |")
    print(f"|{'-' * 44}|{'-' * 8}|{'-' * 16}|")
    for part, n in samples.most_common():
        share = n / total
        print(f"| {part:<42} | {share:>6.1%} | {share * replica_ms:>14.3f} |")
    if args.keep is None:
        print(f"\n(raw profiles in {out})")


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk runs as one)."""
    times = psutil.Process().cpu_times()
    return times.children_user + times.children_system


if __name__ == "__main__":
    main()
