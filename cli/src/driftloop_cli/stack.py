"""Bring the local stack up, report on it, and take it down: the logic behind `driftloop up/status/down`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from driftloop_contracts.retention import influx_retention_statement

from . import configs, memory, supervisor
from .components import Component, airflow_env, build_components
from .health import airflow_status, probe, readiness
from .settings import StackSettings

REQUIRED_BINARIES = ("redis-server", "influxd", "prometheus", "prometheus-alertmanager", "nginx")


class StackError(RuntimeError):
    """The stack could not be brought up; the message names the component and its log."""


@dataclass
class ComponentStatus:
    name: str
    state: str
    pid: int | None
    port: int | None
    url: str
    healthy: bool
    detail: str
    log: str
    #: Our services only: ready to do their job (``None`` for infrastructure), and why not.
    ready: bool | None = None
    ready_detail: str = ""
    #: Resident memory of the program and all its descendants (``None``: not running).
    rss_bytes: int | None = None


def check_prerequisites(s: StackSettings) -> None:
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        raise StackError(f"missing programs {missing}: run `make setup` (installs Debian packages)")
    if not (s.airflow_venv / "bin" / "airflow").exists():
        raise StackError(
            f"no Airflow environment at {s.airflow_venv}: run `make setup` "
            "(or set DRIFTLOOP_AIRFLOW_VENV)"
        )


def migrate_airflow(s: StackSettings) -> None:
    """`airflow db migrate` once per state directory (it is idempotent, but slow)."""
    marker = s.state_dir / "airflow" / ".migrated"
    if marker.exists():
        return
    log = s.logs_dir / "airflow-db-migrate.log"
    env = {**os.environ, **airflow_env(s), "PATH": f"{s.airflow_venv / 'bin'}:/usr/bin:/bin"}
    with log.open("w") as fh:
        result = subprocess.run(
            [str(s.airflow_venv / "bin" / "airflow"), "db", "migrate"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"airflow db migrate failed; see {log}")
    marker.touch()


def prepare(s: StackSettings) -> list[Component]:
    for sub in ("logs", "conf", "secrets", "airflow", "labelled", "reports"):
        (s.state_dir / sub).mkdir(parents=True, exist_ok=True)
    (s.state_dir / "secrets").chmod(0o700)
    configs.airflow_passwords(s)
    components = build_components(s)
    configs._write(supervisor.conf_path(s), supervisor.render(s, components), mode=0o600)
    return components


def up(
    s: StackSettings, on_progress: Callable[[list[ComponentStatus]], None] | None = None
) -> list[ComponentStatus]:
    s = s.resolved()
    check_prerequisites(s)
    components = prepare(s)
    migrate_airflow(s)
    if supervisor.is_running(s):
        supervisor.apply_config(s)
        supervisor.start_all(s)
    else:
        supervisor.start_daemon(s)
    statuses = wait_healthy(s, components, on_progress)
    reload_monitoring(s)
    return statuses


def reload_monitoring(s: StackSettings) -> None:
    """Make Prometheus and Alertmanager re-read their files (rules may have changed since start)."""
    for name, url in (("prometheus", s.urls.prometheus), ("alertmanager", s.urls.alertmanager)):
        r = httpx.post(f"{url}/-/reload", timeout=30)
        if r.status_code != 200:
            raise StackError(
                f"{name} refused its configuration: {r.text.strip()} — log: {s.logs_dir}/{name}.log"
            )


def wait_healthy(
    s: StackSettings,
    components: list[Component],
    on_progress: Callable[[list[ComponentStatus]], None] | None = None,
) -> list[ComponentStatus]:
    deadline = time.monotonic() + s.up_timeout_s
    influx_ready = False
    while True:
        statuses = status(s, components)
        by_name = {st.name: st for st in statuses}
        if not influx_ready and by_name.get("influxdb") and by_name["influxdb"].healthy:
            influx_ready = create_influx_database(s)
        if on_progress:
            on_progress(statuses)
        if all(st.healthy for st in statuses) and influx_ready:
            return statuses
        fatal = [st for st in statuses if st.state in {"FATAL", "BACKOFF"} and not st.healthy]
        if time.monotonic() > deadline or (fatal and time.monotonic() > deadline - 60):
            bad = [st for st in statuses if not st.healthy]
            names = "; ".join(f"{st.name} ({st.state}: {st.detail}) — log: {st.log}" for st in bad)
            raise StackError(f"not healthy after {s.up_timeout_s:.0f}s: {names}")
        time.sleep(1.0)


def create_influx_database(s: StackSettings) -> bool:
    """The drift-history database, its default retention policy set to ``influx_retention``
    (InfluxDB then drops whole shards, one per day, once they are older). Both statements are
    idempotent; ALTER also bounds a database created before the setting existed."""
    statements = (
        f'CREATE DATABASE "{s.influx_db}"',
        influx_retention_statement(s.influx_db, s.influx_retention),
    )
    try:
        for q in statements:
            r = httpx.post(f"{s.urls.influxdb}/query", data={"q": q}, timeout=5)
            if r.status_code != 200 or "error" in r.text:
                return False
        return True
    except httpx.HTTPError:
        return False


def status(s: StackSettings, components: list[Component] | None = None) -> list[ComponentStatus]:
    s = s.resolved()
    components = components if components is not None else build_components(s)
    info = supervisor.process_info(s)
    af = airflow_status(next((c.url for c in components if c.name == "airflow-api-server"), ""))

    def one(c: Component) -> ComponentStatus:
        proc = info.get(c.name)
        state = proc["statename"] if proc else "NOT STARTED"
        h = probe(c, airflow_health=af) if state == "RUNNING" else None
        r = readiness(c) if h is not None and h.healthy else None
        return ComponentStatus(
            name=c.name,
            state=state,
            pid=(proc or {}).get("pid") or None,
            port=c.port,
            url=c.url,
            healthy=bool(h and h.healthy),
            detail=h.detail if h else state.lower(),
            log=str(s.logs_dir / f"{c.name}.log"),
            ready=None if r is None else r.healthy,
            ready_detail="" if r is None else r.detail,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, components))
    rss = memory.component_rss({st.name: st.pid for st in statuses})
    for st in statuses:
        st.rss_bytes = rss.get(st.name)
    return statuses


def total_rss(statuses: list[ComponentStatus]) -> int:
    """The stack's resident memory: the sum over components (the budget in docs/performance.md)."""
    return sum(st.rss_bytes or 0 for st in statuses)


def down(s: StackSettings) -> bool:
    """Stop supervisord and everything it started; True if something was running."""
    s = s.resolved()
    running = supervisor.is_running(s)
    supervisor.shutdown(s)
    return running


def as_json(statuses: list[ComponentStatus]) -> list[dict[str, Any]]:
    return [asdict(st) for st in statuses]
