"""Helpers for per-service pydantic-settings classes.

Each service defines its own ``BaseSettings`` with an env prefix; :func:`load_settings` turns a
validation failure into one error that names the environment variable to fix.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class SettingsError(RuntimeError):
    """A required setting is missing or invalid; the message names the variable."""


def load_settings(cls: type[S], **overrides: Any) -> S:
    """``cls(**overrides)`` (values validated by pydantic, hence ``Any``), reading the
    environment; a validation failure becomes a :class:`SettingsError`."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{prefix}{field.upper()}: {err['msg']}")
        raise SettingsError(
            f"invalid configuration for {cls.__name__}: " + "; ".join(problems)
        ) from None
