"""Serving benchmark: single-row ``/predict`` throughput and latency, up to seven ways, one run.

    (a) driftloop through nginx (all replicas, events to Kafka, prediction cache, Prometheus scraping)
    (b) one driftloop replica, direct
    (c) bare FastAPI running the same model version, as many uvicorn workers as (a) has replicas
    (c1) the same bare app with one worker (the fair partner of (b))
    (d) only with ``--with-mlflow-serve``: ``mlflow models serve`` of the same version, as many
        workers as (a) has replicas. Off by default: MLflow's server loads through pyfunc, which
        takes the skops trusted types (and the format) from the artifact's own ``MLmodel`` and
        needs ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``, set for that process only. (a)-(c1) load
        with driftloop's checked loader (digest + our trusted types).
    (e) only with ``--with-mlserver``: Seldon's MLServer (``mlserver-sklearn``, adaptive batching
        on: ``max_batch_size`` 16, ``max_batch_time`` 2 ms) serving the same version with as
        many inference workers (``parallel_workers``) as (a) has replicas. It runs from its own
        venv, ``bench/.venv/mlserver``, which the bench creates with uv on first use
        (``bench/mlserver-requirements.txt`` plus the workspace's scikit-learn version): MLServer
        pins its own FastAPI, uvicorn and pandas. The model is loaded here with driftloop's
        checked loader and handed over as the joblib file ``mlserver-sklearn`` reads.
    (f) the ceiling: FastAPI with the same validation as (c) answering a constant, as many
        workers as (a) has replicas (``bench/ceiling_app.py``).

Every server runs with ``OMP_NUM_THREADS=1``. Load: ``wrk`` (Debian package) at a fixed number
of connections; every request carries new random feature values, so the cache in (a)/(b) misses
(a look-up and an insert per request) instead of flattering the result.

Run against a stack that is up (``driftloop up``; default base port 18000)::

    uv run python bench/bench_serving.py --base-port 18000
    uv run python bench/bench_serving.py --nginx-url http://127.0.0.1:31000 \\
        --replica-url http://127.0.0.1:31010 --replica-url http://127.0.0.1:31011 \\
        --mlflow-url http://127.0.0.1:31050 --with-prometheus

All servers are started first; the setups then run in interleaved rounds and the medians are
reported, because this machine is shared and its background load swings within minutes.
Prints a table, the load average, and the ratios a/c, a/d, a/e (a/MLServer), a/f (a/ceiling)
and b/c1 (each when both sides ran). Compare setups of one run with each other: on a shared
machine the absolute figures move with the other load, the ratios much less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from driftloop_contracts import FEATURE_NAMES, FEATURE_SPECS, HOST, MODEL_NAME, PortPlan, StackUrls

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent

#: Plausible ranges for random rows (inside the contracts' bounds).
RANGES = dict(
    zip(
        FEATURE_NAMES,  # contract order: income, age, rooms, bedrooms, population, occupancy, lat, lon
        [
            (0.5, 12.0),
            (1.0, 52.0),
            (2.0, 9.0),
            (0.8, 1.5),
            (100.0, 4000.0),
            (1.5, 5.0),
            (32.6, 41.9),
            (-124.3, -114.4),
        ],
        strict=True,
    )
)


def lua_script(kind: str, order: list[int] | None = None) -> str:
    """A wrk script posting one fresh random row per request, in the target's body format.

    ``order`` (MLServer only, which takes a bare tensor): the model's column order as indices
    into the contract's feature order.
    """
    names = [spec.name for spec in FEATURE_SPECS]
    if kind == "mlserver" and order is not None:
        names = [names[i] for i in order]
    draws = ", ".join(f"{lo} + math.random() * {hi - lo}" for lo, hi in (RANGES[n] for n in names))
    if kind == "mlserver":
        fmt = (
            '{\\"inputs\\": [{\\"name\\": \\"features\\", \\"shape\\": [1, '
            + str(len(names))
            + '], \\"datatype\\": \\"FP64\\", \\"data\\": ['
            + ", ".join(["%.6f"] * len(names))
            + "]}]}"
        )
    elif kind == "mlflow":
        columns = ", ".join(f'\\"{n}\\"' for n in names)
        fmt = (
            '{\\"dataframe_split\\": {\\"columns\\": ['
            + columns
            + '], \\"data\\": [['
            + ", ".join(["%.6f"] * len(names))
            + "]]}}"
        )
    else:
        fmt = "{" + ", ".join(f'\\"{n}\\": %.6f' for n in names) + "}"
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) math.randomseed(os.time() * 1000 + id) end
function request()
  return wrk.format(nil, nil, nil, string.format("{fmt}", {draws}))
end
function done(summary, latency, requests)
  io.write(string.format("WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, "
    .. "\\"p99_us\\": %d, \\"non2xx\\": %d, \\"socket_errors\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


class Results(list[Result]):
    """Prints each result as it arrives (a long run shows progress)."""

    def append(self, item: Result) -> None:
        print(
            f"  {item.name}: {item.rps:.0f} req/s, p50 {item.p50_ms:.1f} ms, "
            f"p99 {item.p99_ms:.1f} ms, errors {item.errors}",
            flush=True,
        )
        super().append(item)


def run_wrk(
    name: str,
    url: str,
    kind: str,
    *,
    connections: int,
    threads: int,
    duration: int,
    warmup: int,
    order: list[int] | None = None,
) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua_script(kind, order))
        script = fh.name
    try:
        base = ["wrk", f"-t{threads}", f"-c{connections}", "-s", script, url]
        if warmup > 0:
            subprocess.run(
                [*base[:1], f"-d{warmup}s", *base[1:]],
                check=True,
                capture_output=True,
                timeout=warmup + 60,
            )
        out = subprocess.run(
            [*base[:1], f"-d{duration}s", "--timeout", "5s", *base[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
    finally:
        os.unlink(script)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line[len("WRKJSON ") :])
    result = Result(
        name,
        data["requests"] / (data["duration_us"] / 1e6),
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        data["non2xx"] + data["socket_errors"],
    )
    print(
        f"  {result.name}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, errors {result.errors}",
        flush=True,
    )
    return result


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited; log:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} not up within {timeout_s}s")


@contextlib.contextmanager
def process(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def server_env(mlflow_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": mlflow_url,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(BENCH_DIR),
    }


def prometheus_config(replicas: list[str], work: Path) -> Path:
    targets = ", ".join(f'"{u.split("://", 1)[1]}"' for u in replicas)
    conf = work / "prometheus.yml"
    conf.write_text(
        f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: model_api\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    return conf


#: Under a ``.venv`` directory: ignored by git, ruff, mypy and the repo's source scans.
MLSERVER_VENV = BENCH_DIR / ".venv" / "mlserver"
MLSERVER_MODEL = "california-housing"


def mlserver_executable() -> Path:
    """``mlserver`` from its own venv, created with uv on first use (see the module docstring)."""
    import sklearn

    exe = MLSERVER_VENV / "bin" / "mlserver"
    if exe.exists():
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("--with-mlserver needs uv on PATH to create bench/.venv/mlserver")
    print(f"creating {MLSERVER_VENV} (MLServer + scikit-learn {sklearn.__version__})", flush=True)
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(MLSERVER_VENV)], check=True)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(MLSERVER_VENV / "bin" / "python"),
            "-r",
            str(BENCH_DIR / "mlserver-requirements.txt"),
            f"scikit-learn=={sklearn.__version__}",
        ],
        check=True,
    )
    return exe


def mlserver_repository(
    work: Path, mlflow_url: str, version: str, *, workers: int, port: int
) -> tuple[Path, list[int]]:
    """A model repository for MLServer holding ``version`` (loaded and checked by driftloop),
    and the model's column order (indices into the contract's feature order)."""
    import joblib  # type: ignore[import-untyped]  # no stubs; only dump() is used

    from driftloop_model_api.model_holder import column_order
    from driftloop_training import registry

    model = registry.load_model(mlflow_url, version)
    root = work / "mlserver"
    (root / MLSERVER_MODEL).mkdir(parents=True)
    joblib.dump(model, root / MLSERVER_MODEL / "model.joblib")
    (root / "settings.json").write_text(
        json.dumps(
            {
                "host": HOST,
                "http_port": port,
                "grpc_port": port + 10,
                "metrics_port": port + 11,
                "parallel_workers": workers,
                "debug": False,
            }
        )
    )
    (root / MLSERVER_MODEL / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MLSERVER_MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "max_batch_size": 16,
                "max_batch_time": 0.002,
                "parameters": {"uri": "./model.joblib", "version": version},
            }
        )
    )
    return root, column_order(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="port plan of a running `driftloop up` stack (default 18000)",
    )
    parser.add_argument("--nginx-url")
    parser.add_argument("--replica-url", action="append", default=[])
    parser.add_argument("--mlflow-url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--port", type=int, default=31900, help="first port for (c)-(f) (uses port..port+13)"
    )
    parser.add_argument(
        "--with-mlflow-serve",
        action="store_true",
        help="also measure (d) `mlflow models serve` (pyfunc load; registry you control only)",
    )
    parser.add_argument(
        "--with-mlserver",
        action="store_true",
        help="also measure (e) MLServer (creates bench/.venv/mlserver with uv on first use)",
    )
    parser.add_argument(
        "--with-prometheus",
        action="store_true",
        help="also run a Prometheus scraping the replicas every second "
        "(when the stack has none of its own)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    urls = StackUrls(PortPlan(args.base_port) if args.base_port else PortPlan())
    nginx = args.nginx_url or urls.nginx
    replicas = args.replica_url or urls.model_apis(2)
    mlflow_url = args.mlflow_url or urls.mlflow
    workers = len(replicas)
    info = httpx.get(f"{replicas[0]}/model", timeout=5).json()
    model_uri = f"models:/{info['model_name']}/{info['model_version']}"
    if info["model_name"] != MODEL_NAME:
        raise SystemExit(f"replicas serve {info['model_name']}, not {MODEL_NAME}")
    print(
        f"model {model_uri}; {workers} replicas; {args.connections} connections; "
        f"{args.duration}s per run; OMP_NUM_THREADS=1",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    env = {**server_env(mlflow_url), "BENCH_MODEL_VERSION": str(info["model_version"])}
    bare_n, bare_1, mlflow_port = args.port, args.port + 1, args.port + 2
    ceiling_port, mlserver_port = args.port + 3, args.port + 4  # MLServer: +4, +14, +15
    workers_n = ["--workers", str(workers)]
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_app:app",
        "--host",
        HOST,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    wrk = {
        "connections": args.connections,
        "threads": args.threads,
        "duration": args.duration,
        "warmup": args.warmup,
    }
    targets: list[tuple[str, str, str]] = [
        ("a) driftloop via nginx", f"{nginx}/predict", "api"),
        ("b) one replica direct", f"{replicas[0]}/predict", "api"),
        (f"c) bare FastAPI x{workers}", f"{urls.http(bare_n)}/predict", "api"),
        ("c1) bare FastAPI x1", f"{urls.http(bare_1)}/predict", "api"),
    ]
    if args.with_mlflow_serve:
        targets.append(
            (
                f"d) mlflow models serve x{workers}",
                f"{urls.http(mlflow_port)}/invocations",
                "mlflow",
            )
        )
    if args.with_mlserver:
        targets.append(
            (
                f"e) MLServer x{workers} (batching)",
                f"{urls.http(mlserver_port)}/v2/models/{MLSERVER_MODEL}/infer",
                "mlserver",
            )
        )
    targets.append(
        (f"f) ceiling: constant x{workers}", f"{urls.http(ceiling_port)}/predict", "api")
    )
    runs: dict[str, list[Result]] = {name: [] for name, _, _ in targets}
    order: list[int] | None = None
    load_start = os.getloadavg()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        servers = []
        if args.with_prometheus and shutil.which("prometheus"):
            stack.enter_context(
                process(
                    [
                        "prometheus",
                        f"--config.file={prometheus_config(replicas, work)}",
                        f"--storage.tsdb.path={work / 'tsdb'}",
                        f"--web.listen-address={HOST}:{args.port + 90}",
                    ],
                    env,
                    work / "prom.log",
                )
            )
        commands = [
            (
                [*uvicorn, "--port", str(bare_n), "--workers", str(workers)],
                "bare.log",
                f"{urls.http(bare_n)}/docs",
            ),
            (
                [*uvicorn, "--port", str(bare_1), "--workers", "1"],
                "bare1.log",
                f"{urls.http(bare_1)}/docs",
            ),
            (
                [
                    *uvicorn[:3],
                    "ceiling_app:app",
                    *uvicorn[4:],
                    "--port",
                    str(ceiling_port),
                    *workers_n,
                ],
                "ceiling.log",
                f"{urls.http(ceiling_port)}/docs",
            ),
        ]
        if args.with_mlserver:
            exe = mlserver_executable()
            repo, order = mlserver_repository(
                work, mlflow_url, str(info["model_version"]), workers=workers, port=mlserver_port
            )
            commands.append(
                (
                    [str(exe), "start", str(repo)],
                    "mlserver.log",
                    f"{urls.http(mlserver_port)}/v2/models/{MLSERVER_MODEL}/ready",
                )
            )
        if args.with_mlflow_serve:
            commands.append(
                (
                    [
                        str(VENV_BIN / "mlflow"),
                        "models",
                        "serve",
                        "-m",
                        model_uri,
                        "-h",
                        HOST,
                        "-p",
                        str(mlflow_port),
                        "-w",
                        str(workers),
                        "--env-manager",
                        "local",
                    ],
                    "mlflow-serve.log",
                    f"{urls.http(mlflow_port)}/ping",
                )
            )
        for cmd, log, health in commands:
            server_env_for = (
                {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
                if log == "mlflow-serve.log"
                else env
            )
            proc = stack.enter_context(process(cmd, server_env_for, work / log, cwd=BENCH_DIR))
            servers.append((proc, log, health))
        for proc, log, health in servers:
            wait_http(health, 180, proc, work / log)
        # Every server is up (the idle ones cost nothing); rounds interleave the setups so a
        # burst of other load on this shared machine hits all of them, then medians are kept.
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            for name, url, kind in targets:
                runs[name].append(run_wrk(name, url, kind, order=order, **wrk))

    def median(values: list[float]) -> float:
        return statistics.median(values)

    results = [
        Result(
            name,
            median([r.rps for r in rs]),
            median([r.p50_ms for r in rs]),
            median([r.p99_ms for r in rs]),
            sum(r.errors for r in rs),
        )
        for name, rs in runs.items()
    ]
    by = {r.name.split(")")[0]: r for r in results}
    print()
    load_end = os.getloadavg()
    print(f"medians of {args.rounds} rounds x {args.duration}s, {args.connections} connections")
    print(
        f"load average (1 min) {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end, "
        f"on {os.cpu_count()} cores"
    )
    print(f"| {'setup':<28} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for r in results:
        print(
            f"| {r.name:<28} | {r.rps:>8.0f} | {r.p50_ms:>7.1f} | {r.p99_ms:>7.1f} | "
            f"{r.errors:>6} |"
        )
    ratios = {
        f"{x}/{y}": by[x].rps / by[y].rps
        for x, y in (("a", "c"), ("a", "d"), ("a", "e"), ("a", "f"), ("b", "c1"))
        if x in by and y in by
    }
    names = {"a/e": "a/MLServer", "a/f": "a/ceiling"}
    print()
    print("   ".join(f"{names.get(k, k)} = {v:.2f}" for k, v in ratios.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "results": [r.__dict__ for r in results],
                    "load_average": [load_start[0], load_end[0]],
                    "ratios": ratios,
                    "runs": {k: [r.__dict__ for r in v] for k, v in runs.items()},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
