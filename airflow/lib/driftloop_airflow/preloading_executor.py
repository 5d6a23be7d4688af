"""A LocalExecutor whose worker imports the retraining tasks' libraries once, before any task.

Airflow 3's LocalExecutor worker runs every task in a process it forks (the task supervisor
``os.fork()``s the task runner), so a module the worker has imported is already in every
task's ``sys.modules``. Without this, each of the DAG's five tasks imports pandas,
scikit-learn, MLflow and skops anew: 1-3 s per task on an idle 2-core machine, over 10 s under
load, the largest share of the DAG's run time (docs/performance.md, "Loop latency").

The worker pays the imports once, in the background, right after the scheduler forks it; its
resident memory grows by what they hold, which is why the local stack runs one worker
(``AIRFLOW__CORE__PARALLELISM=1``: the DAG is a chain with ``max_active_runs=1``, so one task
runs at a time anyway).

A module that fails to import is logged and skipped: the task that needs it then fails on its
own import, with Airflow's retry policy and the real error in its log.

Select it with ``AIRFLOW__CORE__EXECUTOR=driftloop_airflow.preloading_executor.PreloadingLocalExecutor``
(``airflow/lib`` on the PYTHONPATH of the Airflow programs: cli/src/driftloop_cli/components.py).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import time
import warnings
from typing import Any

from airflow.executors import local_executor
from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

#: What the tasks of ``airflow/dags/retrain.py`` import (at module level or inside the calls
#: of ``driftloop_training.retrain``): the heavy ones, each worth seconds.
PRELOAD_MODULES: tuple[str, ...] = (
    "driftloop_training.retrain",
    "pandas",
    "sklearn.ensemble",
    "sklearn.pipeline",
    "skops.io",
    "mlflow",
    "mlflow.artifacts",
    "mlflow.models",
    "aiokafka",
)


def preload(modules: tuple[str, ...] = PRELOAD_MODULES) -> list[str]:
    """Import ``modules``; return the ones that failed (logged, never raised)."""
    failed = []
    started = time.monotonic()
    for name in modules:
        try:
            # skops scans every loaded module at import; Airflow's deprecated-name shims answer
            # each look-up with a warning (thousands of log lines per import)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception:  # the task that needs it reports the real error
            log.exception("preloading %s failed; tasks will import it themselves", name)
            failed.append(name)
    log.info(
        "preloaded %d modules in %.1fs", len(modules) - len(failed), time.monotonic() - started
    )
    return failed


def _preload_then_run_worker(**kwargs: Any) -> None:
    preload()
    local_executor._run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """Airflow's LocalExecutor; its workers preload :data:`PRELOAD_MODULES` before the first task."""

    def _spawn_worker(self) -> None:
        # Airflow 3.3's LocalExecutor._spawn_worker with another target; the keyword arguments
        # are _run_worker's (airflow/executors/local_executor.py, pinned in airflow/requirements.txt).
        p = multiprocessing.Process(
            target=_preload_then_run_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        p.start()
        assert p.pid is not None  # started
        self.workers[p.pid] = p
