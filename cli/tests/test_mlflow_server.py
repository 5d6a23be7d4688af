"""The MLflow launcher execs MLflow's own uvicorn command through ``serve``, where pyarrow is
refused, and MLflow's server app still imports and builds without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any, cast

import pytest

from driftloop_cli import mlflow_server


def test_mlflows_uvicorn_command_is_run_through_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("os.execvpe", lambda *a: seen.append(a))
    cmd = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "mlflow.server.fastapi_app:app"]
    run = cast(Callable[..., None], mlflow_server.exec_server)  # NoReturn, but not here
    run(cmd, extra_env={"X": "1"})
    program, argv, env = seen[0]
    assert program == sys.executable
    assert argv == [
        sys.executable,
        "-m",
        "driftloop_cli.mlflow_server",
        "--uvicorn",
        "--host",
        "127.0.0.1",
        "mlflow.server.fastapi_app:app",
    ]
    assert env["X"] == "1"
    other = ["gunicorn", "mlflow.server:app"]  # anything else is exec'd unchanged
    run(other)
    assert seen[1][1] == other


def test_the_server_app_builds_without_pyarrow() -> None:
    code = textwrap.dedent(
        """
        import sys
        from driftloop_contracts.unused_imports import refuse_imports
        refuse_imports("pyarrow", who="the MLflow server")
        from mlflow.server.fastapi_app import app
        import pandas
        print(type(app).__name__, "pyarrow" in sys.modules, pandas.DataFrame({"a": [1]}).shape)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.stdout.split() == ["FastAPI", "False", "(1,", "1)"], done.stdout + done.stderr
