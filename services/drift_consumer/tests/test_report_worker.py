"""The report worker process ends with the consumer, even when the consumer is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# A stand-in consumer: starts the real report executor, reports its worker's pid, then waits.
PARENT = """
import os, sys, time
from driftloop_drift_consumer.reports import _spawn_executor

executor = _spawn_executor()
print(executor.submit(os.getpid).result(timeout=120), flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap an orphan in a container without an init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_worker_exits_when_the_consumer_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert worker != parent.pid and running(worker)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if running(worker):
        os.kill(worker, signal.SIGKILL)
        raise AssertionError(f"report worker {worker} outlived its killed consumer")
