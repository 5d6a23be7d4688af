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
    import sys

    import uvicorn

    from driftloop_contracts import SettingsError, load_settings
    from driftloop_contracts.logs import configure_logging

    from .app import create_app
    from .settings import DriftConsumerSettings

    try:
        settings = load_settings(DriftConsumerSettings)
    except SettingsError as exc:
        print(f"driftloop-drift-consumer: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
