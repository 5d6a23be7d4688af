#!/usr/bin/env python3
"""Refuse to start the Docker stack on the example secrets: run it before `docker compose up`.

docker-compose.yml requires every credential (``${VAR:?...}``), but that only catches a
*missing* value: a ``.env`` copied from ``.env.example`` would start the stack on passwords
that are public in this repository. This check reads the env file the way Compose does (the
shell environment overrides the file) and fails, naming each variable, when a secret is

* missing or empty,
* still equal to its ``.env.example`` placeholder,
* not URL-safe although the compose file embeds it in a URL (database and Redis URLs),
* shorter than the component accepts, or not in the format it needs (the Fernet key).

Which variables are secrets is defined once, by ``.env.example``: every variable in its
"Secrets" section. Which ones go into URLs comes from the compose file itself.

    python3 scripts/check_secrets.py --init     # write .env: .env.example with fresh secrets
    python3 scripts/check_secrets.py            # check .env (exit 1 and a list if not ready)

Standard library only, so it runs before any environment is set up.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The heading in .env.example under which every variable is a secret (until the next heading).
SECRETS_SECTION = "# --- Secrets"
_SECTION = re.compile(r"^# ---")
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
#: A compose value that puts a variable inside a URL (``scheme://user:${VAR...}@host``).
_IN_URL = re.compile(r"://[^\s@/]*\$\{([A-Za-z_][A-Za-z0-9_]*)")

#: Least length each component accepts (it refuses to start, or is weak, below it).
MIN_LENGTH: dict[str, int] = {
    "MINIO_ROOT_PASSWORD": 8,  # MinIO refuses shorter root passwords
    "MLFLOW_ADMIN_PASSWORD": 12,  # MLflow's password policy (create_user)
    "MLFLOW_TRACKING_PASSWORD": 12,
    "AIRFLOW_JWT_SECRET": 64,  # signs every Airflow API token
    "DRIFTLOOP_FEEDBACK_TOKEN_KEY": 32,  # the replicas refuse a shorter HMAC key
}
FERNET_KEYS = frozenset({"AIRFLOW_FERNET_KEY"})


@dataclass(frozen=True)
class Problem:
    variable: str
    reason: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.reason}"


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines as Compose's env file reads them (comments, blanks, quotes)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def secret_names(example_text: str) -> list[str]:
    """The variables of .env.example's "Secrets" section, in file order."""
    names: list[str] = []
    inside = False
    for raw in example_text.splitlines():
        line = raw.strip()
        if _SECTION.match(line):
            inside = line.startswith(SECRETS_SECTION)
            continue
        if inside and line and not line.startswith("#") and "=" in line:
            names.append(line.partition("=")[0].strip())
    return names


def url_variables(compose_text: str) -> set[str]:
    """Variables the compose file interpolates into a URL (they must be URL-safe)."""
    return set(_IN_URL.findall(compose_text))


def _is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def check(
    env: Mapping[str, str],
    example: Mapping[str, str],
    names: list[str],
    in_urls: set[str],
) -> list[Problem]:
    """Every problem with the secrets in ``env`` (empty when the stack may start)."""
    problems: list[Problem] = []
    for name in names:
        value = env.get(name)
        if value is None:
            problems.append(Problem(name, "missing"))
            continue
        if not value.strip():
            problems.append(Problem(name, "empty"))
            continue
        if value == example.get(name):
            problems.append(Problem(name, "still the .env.example placeholder (public)"))
            continue
        if name in in_urls and not _URL_SAFE.fullmatch(value):
            problems.append(Problem(name, "goes into a URL: use only letters, digits and - _ . ~"))
        least = MIN_LENGTH.get(name)
        if least and len(value) < least:
            problems.append(Problem(name, f"shorter than {least} characters"))
        if name in FERNET_KEYS and not _is_fernet_key(value):
            problems.append(Problem(name, "not a Fernet key (32 url-safe base64-encoded bytes)"))
    return problems


def effective_env(env_file: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """What Compose would interpolate: the env file, overridden by the shell environment."""
    values = parse_env(env_file.read_text()) if env_file.is_file() else {}
    return {**values, **environ}


def generate(name: str) -> str:
    """A fresh value that passes :func:`check` for ``name``."""
    if name in FERNET_KEYS:
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    # token_urlsafe's alphabet is URL-safe; n bytes give about 1.3 n characters.
    return secrets.token_urlsafe(max(32, MIN_LENGTH.get(name, 0)))


def init_env_file(example_text: str, names: list[str]) -> str:
    """.env.example's text with every secret replaced by a fresh value."""
    wanted = set(names)
    out = []
    for raw in example_text.splitlines():
        key, sep, _ = raw.partition("=")
        if sep and key.strip() in wanted and not raw.lstrip().startswith("#"):
            raw = f"{key.strip()}={generate(key.strip())}"
        out.append(raw)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-file", type=Path, default=REPO / ".env")
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--compose", type=Path, default=REPO / "docker-compose.yml")
    parser.add_argument(
        "--init",
        action="store_true",
        help="write --env-file from the example with fresh secrets (never overwrites)",
    )
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ

    example_text = args.example.read_text()
    names = secret_names(example_text)
    if not names:
        print(f"{args.example}: no '{SECRETS_SECTION}' section found", file=sys.stderr)
        return 2
    if args.init:
        if args.env_file.exists():
            print(f"{args.env_file} exists; not overwriting it", file=sys.stderr)
            return 1
        fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(init_env_file(example_text, names))
        print(f"wrote {args.env_file} with {len(names)} fresh secrets")

    if not args.env_file.is_file():
        print(f"{args.env_file} does not exist (create it with --init)", file=sys.stderr)
        return 1
    env = effective_env(args.env_file, environ)
    problems = check(env, parse_env(example_text), names, url_variables(args.compose.read_text()))
    if problems:
        print(f"refusing {args.env_file}: {len(problems)} secret(s) not ready", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.env_file}: all {len(names)} secrets set and not the examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
