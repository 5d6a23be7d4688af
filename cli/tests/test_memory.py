"""The per-component memory sum of `driftloop status` (pure arithmetic over a process table)."""

from __future__ import annotations

import os

from driftloop_cli import memory
from driftloop_cli.memory import ProcessRow, tree_rss


def test_a_component_is_its_process_and_every_descendant() -> None:
    rows = [
        ProcessRow(1, 0, 5),  # supervisord
        ProcessRow(10, 1, 100),  # scheduler
        ProcessRow(11, 10, 20),  # its executor worker
        ProcessRow(12, 11, 3),  # the task the worker forked
        ProcessRow(20, 1, 50),  # another program
        ProcessRow(99, 0, 7),  # unrelated
    ]
    assert tree_rss({"scheduler": 10, "other": 20}, rows) == {"scheduler": 123, "other": 50}


def test_a_root_below_another_root_is_counted_once() -> None:
    rows = [ProcessRow(10, 1, 100), ProcessRow(11, 10, 20), ProcessRow(12, 11, 3)]
    assert tree_rss({"outer": 10, "inner": 11}, rows) == {"outer": 100, "inner": 23}


def test_a_vanished_pid_weighs_nothing() -> None:
    assert tree_rss({"gone": 4242}, [ProcessRow(1, 0, 9)]) == {"gone": 0}


def test_component_rss_reads_this_process_and_skips_stopped_ones() -> None:
    out = memory.component_rss({"me": os.getpid(), "stopped": None})
    assert out["stopped"] is None
    assert out["me"] is not None and out["me"] > 1024 * 1024


def test_mib_formats_whole_mebibytes() -> None:
    assert memory.mib(3 * memory.MIB + 1) == "3 MiB"
    assert memory.mib(None) == ""
