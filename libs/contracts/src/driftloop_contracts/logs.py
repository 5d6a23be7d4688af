"""One logging set-up for every service: JSON lines for machines, coloured console for people.

structlog and stdlib logging (uvicorn, aiokafka, mlflow) share one formatter, so a service's
log is one format whatever library wrote the line. Secrets never reach a log call: settings
hold them as ``SecretStr`` and nothing logs headers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

#: Libraries whose retry and reconnect loops would drown our own, contextual warnings
#: (aiokafka logs every reconnect attempt, ~10/s while the broker is down).
QUIET_LOGGERS: Mapping[str, int] = {
    "kafka": logging.WARNING,
    "mlflow": logging.WARNING,
    "httpx": logging.WARNING,
    "uvicorn.access": logging.WARNING,
    "urllib3": logging.ERROR,
    "aiokafka": logging.ERROR,
}


def configure_logging(
    fmt: LogFormat = "json",
    level: LogLevel = "info",
    *,
    quiet: Mapping[str, int] | None = None,
) -> None:
    """Install the shared formatter on the root logger; ``quiet`` overrides QUIET_LOGGERS."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, floor in {**QUIET_LOGGERS, **(quiet or {})}.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
