"""`mlflow server` as one process: the launcher becomes its uvicorn server instead of waiting.

`mlflow server` imports most of MLflow (about 260 MiB resident) only to build a uvicorn command,
then starts uvicorn as a child and waits beside it for the server's lifetime. Here the last step
of the launcher, starting that child, is replaced by ``os.execvpe`` of the same command with the
same environment: the same server with the same options, in one process (so the pid supervisord
watches is the server's own, and the launcher's memory is returned).

The exec'd server refuses pyarrow (``driftloop_contracts.unused_imports``; the same uvicorn
command, run by :func:`serve`). The hook is MLflow's private ``mlflow.server._exec_cmd``
(MLflow is pinned in cli/pyproject.toml). Should a later MLflow stop calling it, the server still starts, as two
processes again; `driftloop status` shows the difference in its memory column.

    python -m driftloop_cli.mlflow_server --host ... --port ...   # the options of `mlflow server`
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from driftloop_contracts.unused_imports import refuse_imports

#: The exec'd command's marker: run uvicorn here, with pyarrow refused (see :func:`serve`).
UVICORN = "--uvicorn"


def exec_server(cmd: list[str], *, extra_env: dict[str, str] | None = None, **_: Any) -> NoReturn:
    """Stand-in for ``_exec_cmd(cmd, extra_env=..., synchronous=False)``: become ``cmd``, the
    ``python -m uvicorn ...`` of MLflow run through :func:`serve`."""
    if cmd[1:3] == ["-m", "uvicorn"]:
        cmd = [cmd[0], "-m", "driftloop_cli.mlflow_server", UVICORN, *cmd[3:]]
    os.execvpe(cmd[0], cmd, {**os.environ, **(extra_env or {})})


def serve(uvicorn_args: list[str]) -> None:
    """uvicorn with MLflow's arguments, pyarrow refused first: the server reads no Parquet and
    pandas (which MLflow imports) runs without it, ~30 MiB less resident."""
    refuse_imports("pyarrow", who="the MLflow server")
    from uvicorn.main import main as uvicorn_main

    sys.argv = ["uvicorn", *uvicorn_args]
    uvicorn_main()


def main() -> None:
    if sys.argv[1:2] == [UVICORN]:
        serve(sys.argv[2:])
        return
    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = exec_server  # type: ignore[attr-defined]
    cli(["server", *sys.argv[1:]])


if __name__ == "__main__":
    main()
