"""Resident memory of each component: the process supervisord started plus all its descendants.

A component is rarely one process: Airflow's scheduler forks LocalExecutor workers, the drift
consumer spawns a report worker, nginx has workers, MLflow runs uvicorn under a launcher. What
it costs is the whole tree, so `driftloop status` sums the RSS of every descendant.

RSS counts a page shared by a forked parent and child once per process, so the total slightly
over-states what the kernel holds (PSS would split shared pages); it is what `ps` and `top`
show and what the memory budget in docs/performance.md is stated in.

One snapshot of the process table (pid, parent, RSS) feeds :func:`tree_rss`, a pure function,
so the arithmetic is tested without processes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessRow:
    """One line of the process table: what the sum needs and nothing else."""

    pid: int
    ppid: int
    rss: int


def snapshot() -> list[ProcessRow]:
    """Every process this user can read (one pass over /proc); vanished ones are skipped."""
    rows = []
    for p in psutil.process_iter(["pid", "ppid", "memory_info"]):
        mem = p.info.get("memory_info")
        if mem is None:  # access denied or gone between listing and reading
            continue
        rows.append(ProcessRow(p.info["pid"], p.info["ppid"] or 0, mem.rss))
    return rows


def tree_rss(roots: Mapping[str, int], rows: list[ProcessRow]) -> dict[str, int]:
    """RSS in bytes of each named root pid and all its descendants (0 if the pid is gone).

    A pid is counted under the nearest root above it, so a root that is itself a descendant of
    another root (never the case under supervisord, whose programs are siblings) is not
    counted twice.
    """
    children: dict[int, list[int]] = defaultdict(list)
    rss = {}
    for r in rows:
        children[r.ppid].append(r.pid)
        rss[r.pid] = r.rss
    root_pids = set(roots.values())
    out = {}
    for name, pid in roots.items():
        total, stack = 0, [pid]
        while stack:
            cur = stack.pop()
            total += rss.get(cur, 0)
            stack.extend(c for c in children.get(cur, ()) if c not in root_pids)
        out[name] = total
    return out


def component_rss(pids: Mapping[str, int | None]) -> dict[str, int | None]:
    """RSS per component from supervisord's pids (``None`` for a component not running)."""
    running = {name: pid for name, pid in pids.items() if pid}
    sums = tree_rss(running, snapshot()) if running else {}
    return {name: sums.get(name) if pid else None for name, pid in pids.items()}


def mib(n: int | None) -> str:
    """``123 MiB`` for a byte count, empty for unknown."""
    return "" if n is None else f"{n / MIB:,.0f} MiB"
