"""Evidently ``DataDriftPreset`` HTML reports of the latest window vs the reference.

Evidently takes ~0.7 s of CPU per report (plus ~10 s to import), so it runs in one separate
*process* (spawned on the first report, reused while windows keep closing, ended after an
interval with no new window, so an idle stack does not hold Evidently in memory): the consumer's
event loop never waits for it and the GIL is not shared. At most one report is in flight; every ``reports_interval_seconds`` the newest
closed window (if a new one closed since the last report) is rendered. Files are written to a
temp name and renamed; ``latest.html`` is a symlink moved atomically to the newest report, so
its URL (``GET /reports/latest``) is stable. Only the newest ``reports_keep`` files are kept.

The reference handed to Evidently is the profile's sorted per-series sample (the profile
keeps no rows); Evidently's per-column drift tests do not look across columns, so this is the
same comparison the consumer makes. With a 5,000-row reference Evidently picks the normalised
Wasserstein test for numeric columns, so the report's verdicts use Evidently's defaults, not
driftloop's calibrated thresholds (the numbers are comparable; the HTML says which test).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from driftloop_contracts import SERIES_NAMES
from driftloop_service import wait_or_stop

from .reference import LoadedReference
from .windows import ClosedWindow

log = structlog.get_logger(__name__)

LATEST = "latest.html"
_NAME_RE = re.compile(
    r"^drift-v(?P<version>[\w.]+)-(?P<stamp>\d{8}T\d{6}Z)-p(?P<p>\d+)-o(?P<o>\d+)\.html$"
)


def render_report(
    reference: dict[str, list[float]], current: dict[str, list[float]], path: str, title: str
) -> str:
    """Runs in the report process: build the Evidently report and write it atomically."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ref = pd.DataFrame(reference)
    cur = pd.DataFrame(current)
    snapshot = Report([DataDriftPreset()], metadata={"title": title}).run(cur, ref)
    tmp = f"{path}.{os.getpid()}.tmp"
    snapshot.save_html(tmp)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class ReportInfo:
    name: str
    model_version: str
    created_at: str
    partition: int
    first_offset: int
    size_bytes: int


class ReportStore:
    """The report directory: names, listing, the latest link and pruning."""

    def __init__(self, directory: Path, keep: int = 24) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def name_for(self, window: ClosedWindow, now: datetime | None = None) -> str:
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        version = re.sub(r"[^\w.]", "_", window.model_version)
        return f"drift-v{version}-{stamp}-p{window.partition}-o{window.first_offset}.html"

    def list(self) -> list[ReportInfo]:
        if not self.directory.is_dir():
            return []
        out = []
        for path in self.directory.iterdir():
            m = _NAME_RE.match(path.name)
            if not m or not path.is_file():
                continue
            stamp = datetime.strptime(m["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            out.append(
                ReportInfo(
                    path.name,
                    m["version"],
                    stamp.isoformat(),
                    int(m["p"]),
                    int(m["o"]),
                    path.stat().st_size,
                )
            )
        return sorted(out, key=lambda r: (r.created_at, r.name), reverse=True)

    def path(self, name: str) -> Path | None:
        """The file for ``name`` (``latest.html`` or a listed report), or None: nothing
        outside the directory can be named."""
        if name in (LATEST, "latest"):
            link = self.directory / LATEST
            return link if link.exists() else None
        if not _NAME_RE.match(name):
            return None
        path = self.directory / name
        return path if path.is_file() else None

    def publish(self, name: str) -> None:
        """Point ``latest.html`` at ``name`` atomically, then prune old reports."""
        link = self.directory / LATEST
        tmp = self.directory / f".{LATEST}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(name)
        os.replace(tmp, link)
        for old in self.list()[self.keep :]:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / old.name).unlink()


def _spawn_executor() -> Executor:
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
    )


def exit_with_parent() -> None:
    """Worker initializer: end the worker when the consumer process ends, however it ends.

    A spawned pool worker otherwise outlives a consumer that was SIGKILLed (or OOM-killed),
    blocked forever on its call queue with a whole Evidently import in memory.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ReportScheduler:
    """Renders the newest window every ``interval_s`` in a worker process."""

    def __init__(
        self,
        store: ReportStore,
        interval_s: float,
        *,
        executor_factory: Callable[[], Executor] | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self._executor_factory = executor_factory or _spawn_executor
        self._executor: Executor | None = None
        self._pending: tuple[ClosedWindow, LoadedReference] | None = None
        self._on_outcome = on_outcome
        self.last_error: str | None = None

    def offer(self, window: ClosedWindow, reference: LoadedReference) -> None:
        """Remember the newest window (cheap; called for every closed window)."""
        self._pending = (window, reference)

    async def render_pending(self) -> str | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        window, reference = pending
        self.store.directory.mkdir(parents=True, exist_ok=True)
        name = self.store.name_for(window)
        ref_columns = {s.name: s.sample.tolist() for s in reference.compiled.series}
        cur_columns = {name_: window.values[:, i].tolist() for i, name_ in enumerate(SERIES_NAMES)}
        title = (
            f"driftloop drift: model version {window.model_version}, partition "
            f"{window.partition}, offsets {window.first_offset}-{window.last_offset}"
        )
        if self._executor is None:
            self._executor = self._executor_factory()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor,
            render_report,
            ref_columns,
            cur_columns,
            str(self.store.directory / name),
            title,
        )
        self.store.publish(name)
        log.info("drift_report_written", name=name, model_version=window.model_version)
        return name

    async def run(self, stopping: asyncio.Event) -> None:
        while not await wait_or_stop(stopping, self.interval_s):
            try:
                name = await self.render_pending()
                if name is None:
                    # No window closed for a whole interval: traffic stopped. The worker holds
                    # Evidently (~340 MiB) and is spawned again by the next report.
                    self._reset_executor()
                elif self._on_outcome is not None:
                    self._on_outcome("success")
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed report never affects consumption
                self.last_error = str(exc)
                log.warning("drift_report_failed", error=str(exc))
                if self._on_outcome is not None:
                    self._on_outcome("failure")
                self._reset_executor()

    def _reset_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        self._reset_executor()
