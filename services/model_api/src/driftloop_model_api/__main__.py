"""``python -m driftloop_model_api``: one uvicorn worker serving one replica.

OpenMP is pinned to one thread *before* numpy/scikit-learn load (and again with threadpoolctl
after): several serving processes each spawning a thread per core collapse throughput on a
small machine (see ARCHITECTURE.md, "Facts measured").

pyarrow is kept out the same way: scikit-learn imports pandas, and pandas imports pyarrow when
it is installed (the workspace installs it for the drift consumer's Parquet log). A replica
reads no Parquet and builds no Arrow-backed frame, and both run without pyarrow, so its import
(28 MiB of RSS per replica, docs/performance.md "Memory at rest") is refused by a finder on
``sys.meta_path``. Not ``sys.modules["pyarrow"] = None``: scikit-learn takes any entry there
for the module and fails on ``None``.
"""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


class _RefusePyarrow(MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == "pyarrow" or fullname.startswith("pyarrow."):
            raise ModuleNotFoundError(f"{fullname} is not loaded in a replica", name=fullname)


sys.meta_path.insert(0, _RefusePyarrow())


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
