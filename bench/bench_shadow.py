"""What a shadow costs the answer: one replica without and with a shadow, same models, one run.

Two replicas of the real app (``create_app``) run side by side, each with two champion-sized
models (the training defaults: a 400-tree HistGradientBoosting pipeline, fitted on the
California data with two seeds) served from memory instead of MLflow: ``off`` serves version 2
alone; ``on`` serves version 2 with version 1 as its shadow (as during a post-promotion watch).
Kafka and the cache are off in both, so the difference is the shadow alone (events are still
built and encoded; with a shadow, copied and encoded with the shadow's fields).

Measured, in interleaved rounds (medians kept; the machine is shared):

* single rows: ``wrk`` at a fixed number of connections, fresh random rows (bench_serving.py's
  script): req/s, p50, p99;
* batches: sequential ``POST /predict/batch`` of ``--batch-rows`` rows: p50, p99 per batch;
* the shadow's own model calls (``driftloop_shadow_call_seconds``): count and mean, and rows
  per call, from the ``on`` replica's /metrics.

Run (no stack needed; needs ``wrk`` and SCIKIT_LEARN_DATA with the California cache)::

    SCIKIT_LEARN_DATA=/work/shared/data/scikit_learn_data uv run python bench/bench_shadow.py
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_serving import RANGES, Result, process, run_wrk, wait_http  # type: ignore[import-not-found]  # noqa: E402

from driftloop_contracts import FEATURE_NAMES  # noqa: E402


def serve(port: int, shadow: bool) -> None:
    """One replica on ``port``: champion 2, and version 1 as its shadow if ``shadow``."""
    import uvicorn

    from driftloop_contracts import MODEL_NAME, SHADOW_ALIAS, utcnow
    from driftloop_model_api.app import create_app
    from driftloop_model_api.errors import AliasNotFound
    from driftloop_model_api.model_holder import LoadedModel
    from driftloop_model_api.model_source import VersionRef
    from driftloop_model_api.settings import ModelApiSettings
    from driftloop_training.data import load_base_data
    from driftloop_training.train import ModelParams, fit_model

    data = load_base_data()
    seeds = {"1": 1, "2": 2}

    class MemorySource:
        model_name = MODEL_NAME

        def resolve_alias(self, alias: str) -> VersionRef:
            if alias == SHADOW_ALIAS:
                if not shadow:
                    raise AliasNotFound(alias)
                return VersionRef("1", "run-1")
            return VersionRef("2", "run-2")

        def load(self, version: str) -> LoadedModel:
            return LoadedModel.build(
                name=MODEL_NAME,
                version=version,
                run_id=f"run-{version}",
                loaded_at=utcnow(),
                profile_id=None,
                estimator=fit_model(data, params=ModelParams(random_state=seeds[version])),
            )

    settings = ModelApiSettings(
        replica_id=f"bench-shadow-{'on' if shadow else 'off'}",
        port=port,
        kafka_enabled=False,
        cache_enabled=False,
        alias_check_interval_seconds=3600,
        log_level="warning",
    )
    app = create_app(settings, source=MemorySource(), label_redis=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def predict_requests(url: str) -> float:
    """``POST /predict`` answered so far (the replica's own counter)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if (
                sample.name == "driftloop_http_requests_total"
                and sample.labels["route"] == "/predict"
            ):
                total += sample.value
    return total


def random_row(rng: random.Random) -> dict[str, float]:
    return {n: rng.uniform(*RANGES[n]) for n in FEATURE_NAMES}


def batch_latency(url: str, rows: int, n: int, seed: int) -> tuple[float, float]:
    """p50 and p99 (ms) of ``n`` sequential batches of ``rows`` fresh rows."""
    rng = random.Random(seed)
    took: list[float] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            body = {"rows": [random_row(rng) for _ in range(rows)]}
            started = time.perf_counter()
            response = client.post(f"{url}/predict/batch", json=body)
            took.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    took.sort()
    return statistics.median(took), took[int(0.99 * (len(took) - 1))]


def shadow_calls(url: str) -> tuple[float, float, float]:
    """(calls, mean seconds per call, rows shadowed) from the replica's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    calls = values.get("driftloop_shadow_call_seconds_count", 0.0)
    mean = values.get("driftloop_shadow_call_seconds_sum", 0.0) / calls if calls else 0.0
    return calls, mean, values.get("driftloop_shadow_predictions_total", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shadow", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=31950, help="ports: this one and the next")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100, help="batches per round")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.shadow)
        return

    work = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-shadow"
    work.mkdir(exist_ok=True)
    urls = {"off": f"http://127.0.0.1:{args.port}", "on": f"http://127.0.0.1:{args.port + 1}"}
    me = [sys.executable, str(Path(__file__).resolve())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (
        process([*me, "--serve", str(args.port)], env, work / "off.log") as off,
        process([*me, "--serve", str(args.port + 1), "--shadow"], env, work / "on.log") as on,
    ):
        servers = {"off": psutil.Process(off.pid), "on": psutil.Process(on.pid)}
        for name, url in urls.items():
            wait_http(f"{url}/health/ready", 300, on, work / f"{name}.log")
        deadline = time.monotonic() + 600  # the shadow loads (is fitted) after the champion
        while httpx.get(f"{urls['on']}/model").json()["shadow_model_version"] != "1":
            if time.monotonic() > deadline:
                raise SystemExit("the 'on' replica did not load its shadow within 600 s")
            time.sleep(1)
        singles: dict[str, list[Result]] = {"off": [], "on": []}
        batches: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        #: CPU seconds the server process spent (all its threads) and rows it answered.
        cpu: dict[str, list[float]] = {"off": [0.0, 0.0], "on": [0.0, 0.0]}
        for round_ in range(args.rounds):
            for name in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                before, served = cpu_seconds(servers[name]), predict_requests(urls[name])
                singles[name].append(
                    run_wrk(
                        f"{name} r{round_}",
                        f"{urls[name]}/predict",
                        "driftloop",
                        connections=args.connections,
                        threads=2,
                        duration=args.duration,
                        warmup=1,
                    )
                )
                cpu[name][0] += cpu_seconds(servers[name]) - before
                cpu[name][1] += predict_requests(urls[name]) - served
                batches[name].append(
                    batch_latency(urls[name], args.batch_rows, args.batches, seed=round_)
                )
        calls, mean_s, rows = shadow_calls(urls["on"])

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(f"\nsingle rows, wrk -c{args.connections}, median of {args.rounds} rounds:")
    print(f"{'shadow':8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name in ("off", "on"):
        r = singles[name]
        print(
            f"{name:8}{med([x.rps for x in r]):8.0f}{med([x.p50_ms for x in r]):9.2f}"
            f"{med([x.p99_ms for x in r]):9.2f}{sum(x.errors for x in r):8d}"
        )
    print(f"\nbatches of {args.batch_rows} rows, sequential, median of {args.rounds} rounds:")
    print(f"{'shadow':8}{'p50 ms':>9}{'p99 ms':>9}")
    for name in ("off", "on"):
        b = batches[name]
        print(f"{name:8}{med([x[0] for x in b]):9.2f}{med([x[1] for x in b]):9.2f}")
    print("\nCPU per single-row request (server process, all threads; robust to a shared box):")
    for name in ("off", "on"):
        spent, answered = cpu[name]
        print(f"{name:8}{spent / answered * 1000 if answered else 0.0:9.3f} ms")
    per_call = rows / calls if calls else 0.0
    print(
        f"\nshadow model calls: {calls:.0f} for {rows:.0f} rows ({per_call:.1f} rows per call),"
        f" mean {mean_s * 1000:.2f} ms per call (worker thread)"
    )


if __name__ == "__main__":
    main()
