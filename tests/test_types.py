"""The type checker passes: mypy, configured once in the root ``pyproject.toml`` ([tool.mypy]).

Running it here makes the README's unit-test command check types as well as CI: a change that
breaks a type fails with mypy's own report (file, line, error code). Two runs, because the DAG
lives in its own environment: the workspace (every member's package and tests, ``bench/``,
``tests/``) with the workspace venv, and ``airflow/dags`` against ``.venv-airflow``'s
Airflow. Both keep mypy's incremental cache under ``.mypy_cache/`` (gitignored): a cold run
takes ~30 s, a warm one a second or two.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "pyproject.toml"
#: The mypy installed in the same venv as the running interpreter (the dev group).
MYPY = Path(sys.executable).with_name("mypy")
AIRFLOW_PYTHON = REPO_ROOT / ".venv-airflow" / "bin" / "python"
DAGS = REPO_ROOT / "airflow" / "dags"


def mypy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert MYPY.exists(), f"{MYPY} is missing: run `uv sync` (dev group)"
    return subprocess.run(
        [str(MYPY), "--config-file", str(CONFIG), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_clean(result: subprocess.CompletedProcess[str], command: str) -> None:
    report = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise AssertionError(
            f"mypy found type errors:\n\n{report}\n\n(`{command}` shows the same; the "
            "strictness is in pyproject.toml [tool.mypy], explained in the README)"
        )


def test_workspace_type_checks() -> None:
    result = mypy(cwd=REPO_ROOT)  # the files to check come from [tool.mypy] files
    assert_clean(result, "uv run mypy")


def test_dag_type_checks_against_airflow() -> None:
    assert AIRFLOW_PYTHON.exists(), f"{AIRFLOW_PYTHON} is missing: run ./scripts/setup.sh"
    # From the DAG folder, as Airflow imports it: the module is `retrain`, not `airflow.dags.…`
    # (which would shadow the airflow package). Its own cache: another interpreter's site-packages.
    result = mypy(
        "--python-executable",
        str(AIRFLOW_PYTHON),
        "--cache-dir",
        str(REPO_ROOT / ".mypy_cache" / "airflow"),
        "retrain.py",
        cwd=DAGS,
    )
    assert_clean(
        result,
        "cd airflow/dags && ../../.venv/bin/mypy --config-file ../../pyproject.toml "
        "--python-executable ../../.venv-airflow/bin/python retrain.py",
    )
