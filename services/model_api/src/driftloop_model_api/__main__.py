"""``python -m driftloop_model_api``: one uvicorn worker serving one replica.

OpenMP is pinned to one thread *before* numpy/scikit-learn load (and again with threadpoolctl
after): several serving processes each spawning a thread per core collapse throughput on a
small machine (see ARCHITECTURE.md, "Facts measured").
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main() -> None:
    import logging
    import sys

    import uvicorn
    from threadpoolctl import threadpool_limits

    from driftloop_contracts import SettingsError, load_settings
    from driftloop_contracts.logs import configure_logging

    from .app import create_app
    from .publisher import AbortedBatchFilter
    from .settings import ModelApiSettings

    try:
        settings = load_settings(ModelApiSettings)
    except SettingsError as exc:
        print(f"driftloop-model-api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_format, settings.log_level, quiet={"aiokafka": logging.CRITICAL})
    logging.getLogger("asyncio").addFilter(AbortedBatchFilter())
    threadpool_limits(limits=1)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,  # nginx keeps the access log (with upstream timing)
        log_config=None,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        timeout_keep_alive=75,  # longer than nginx's upstream keepalive_timeout
    )


if __name__ == "__main__":
    main()
