"""Entrypoint of the MLflow image: write the basic-auth app's config, then run the command.

MLflow's basic-auth app reads its settings from an ini file (``MLFLOW_AUTH_CONFIG_PATH``); its
``database_uri`` embeds the database password, which lives in ``.env`` and must not be baked
into the image or written in the compose file. So the file is written here, at container start,
from the environment, readable by the server's user only, and the command (``mlflow server
--app-name basic-auth ...``) is exec'd. The admin user comes from ``MLFLOW_AUTH_ADMIN_USERNAME``
and ``MLFLOW_AUTH_ADMIN_PASSWORD``, which MLflow reads itself.

Settings written (see mlflow/server/auth/basic_auth.ini for the full list):

* ``database_uri`` = ``MLFLOW_AUTH_DATABASE_URI`` (required when the config path is set);
* ``default_permission`` = ``READ``: a user without an explicit grant can read experiments
  and models but not change them, so the read-only service user needs no grants;
* ``authorization_function``: MLflow's HTTP basic auth.

Without ``MLFLOW_AUTH_CONFIG_PATH`` nothing is written (a plain ``mlflow server``).
"""

from __future__ import annotations

import configparser
import os
import sys

AUTH_SETTINGS = {
    "default_permission": "READ",
    "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    "grant_default_workspace_access": "false",
}


def write_auth_config(path: str, database_uri: str) -> None:
    """Write the ini MLflow's basic-auth app reads (mode 0600: it holds a password)."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {"database_uri": database_uri, **AUTH_SETTINGS}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        config.write(fh)


def main(argv: list[str]) -> None:
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if path:
        database_uri = os.environ.get("MLFLOW_AUTH_DATABASE_URI", "")
        if not database_uri:
            raise SystemExit("MLFLOW_AUTH_CONFIG_PATH is set but MLFLOW_AUTH_DATABASE_URI is not")
        write_auth_config(path, database_uri)
    if not argv:
        raise SystemExit("usage: auth_config.py COMMAND [ARGS...]")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
