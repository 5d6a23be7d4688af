"""``python -m driftloop_model_api``: one uvicorn worker serving one replica.

OpenMP is pinned to one thread *before* numpy/scikit-learn load (and again with threadpoolctl
after): several serving processes each spawning a thread per core collapse throughput on a
small machine (see ARCHITECTURE.md, "Facts measured").

pyarrow is kept out the same way (``driftloop_contracts.unused_imports``): a replica never uses
it, but pandas would import it via scikit-learn (28 MiB of RSS per replica).
"""

from __future__ import annotations

import os

from driftloop_contracts.unused_imports import refuse_imports

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
refuse_imports("pyarrow", who="a model replica")


def main() -> None:
    import logging

    from threadpoolctl import threadpool_limits

    from driftloop_contracts.logs import configure_logging
    from driftloop_service import serve, settings_or_exit
    from driftloop_service.single_write import SingleWriteHttpToolsProtocol

    from .app import create_app
    from .publisher import AbortedBatchFilter
    from .settings import ModelApiSettings

    settings = settings_or_exit(ModelApiSettings, "driftloop-model-api")
    configure_logging(settings.log_format, settings.log_level, quiet={"aiokafka": logging.CRITICAL})
    logging.getLogger("asyncio").addFilter(AbortedBatchFilter())
    threadpool_limits(limits=1)
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        graceful_shutdown_seconds=settings.graceful_shutdown_seconds,
        workers=1,
        loop="uvloop",
        # One write per response: a replica killed mid-response leaves nginx something to retry.
        http=SingleWriteHttpToolsProtocol,
        timeout_keep_alive=75,  # longer than nginx's upstream keepalive_timeout
    )


if __name__ == "__main__":
    main()
