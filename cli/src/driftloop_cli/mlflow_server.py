"""`mlflow server` as one process: the launcher becomes its uvicorn server instead of waiting.

`mlflow server` imports most of MLflow (about 260 MiB resident) only to build a uvicorn command,
then starts uvicorn as a child and waits beside it for the server's lifetime. Here the last step
of the launcher, starting that child, is replaced by ``os.execvpe`` of the same command with the
same environment: the same server with the same options, in one process (so the pid supervisord
watches is the server's own, and the launcher's memory is returned).

The hook is MLflow's private ``mlflow.server._exec_cmd`` (MLflow is pinned in
cli/pyproject.toml). Should a later MLflow stop calling it, the server still starts, as two
processes again; `driftloop status` shows the difference in its memory column.

    python -m driftloop_cli.mlflow_server --host ... --port ...   # the options of `mlflow server`
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import mlflow.server
from mlflow.cli import cli


def exec_server(cmd: list[str], *, extra_env: dict[str, str] | None = None, **_: Any) -> NoReturn:
    """Stand-in for ``_exec_cmd(cmd, extra_env=..., synchronous=False)``: become ``cmd``."""
    os.execvpe(cmd[0], cmd, {**os.environ, **(extra_env or {})})


def main() -> None:
    mlflow.server._exec_cmd = exec_server  # type: ignore[attr-defined]
    cli(["server", *sys.argv[1:]])


if __name__ == "__main__":
    main()
