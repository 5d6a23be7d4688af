"""``python -m driftloop_drift_consumer``: one consumer instance with its HTTP endpoints.

OpenMP/BLAS are pinned to one thread before numpy loads: the statistics are small vectorised
operations and the machine is shared with the serving replicas (ARCHITECTURE.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main() -> None:
    from driftloop_contracts.logs import configure_logging
    from driftloop_service import serve, settings_or_exit

    from .app import create_app
    from .settings import DriftConsumerSettings

    settings = settings_or_exit(DriftConsumerSettings, "driftloop-drift-consumer")
    configure_logging(settings.log_format, settings.log_level)
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        graceful_shutdown_seconds=settings.graceful_shutdown_seconds,
        workers=1,
    )


if __name__ == "__main__":
    main()
