"""What every service's ``__main__`` does: load settings or exit naming the variable, serve.

Shutdown grace is a setting of each service (``graceful_shutdown_seconds``): uvicorn lets
in-flight requests finish for that long on SIGTERM, and the lifespan gives its background
tasks the same budget (:func:`stop_tasks`) before cancelling them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

from driftloop_contracts import SettingsError, load_settings

__all__ = ["serve", "settings_or_exit", "stop_tasks"]

S = TypeVar("S", bound=BaseSettings)


def settings_or_exit(cls: type[S], program: str) -> S:
    """Settings from the environment, or exit status 2 with one line naming the variable."""
    try:
        return load_settings(cls)
    except SettingsError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(
    app: Any, *, host: str, port: int, graceful_shutdown_seconds: float, **uvicorn_options: Any
) -> None:
    """Run ``app`` with uvicorn; logging stays ours (structlog), the access log nginx's."""
    import uvicorn

    options: dict[str, Any] = {"log_config": None, "access_log": False, **uvicorn_options}
    uvicorn.run(
        app,
        host=host,
        port=port,
        # uvicorn annotates it int, but only hands it to asyncio.wait_for(timeout=): a float works.
        timeout_graceful_shutdown=graceful_shutdown_seconds,  # type: ignore[arg-type]
        **options,
    )


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], grace_seconds: float) -> None:
    """Wait up to ``grace_seconds`` for tasks told to stop, then cancel the rest and reap all."""
    tasks = [t for t in tasks if t is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
    for task in pending:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
