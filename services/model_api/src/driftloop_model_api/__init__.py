"""driftloop's serving replica: validated predictions, non-blocking events, hot reload.

Imports are lazy so ``python -m driftloop_model_api`` can pin OpenMP threads before numpy and
scikit-learn load. (The nginx config in front of the replicas is rendered by the CLI,
:mod:`driftloop_cli.nginx_config`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import ModelApiSettings

__all__ = ["ModelApiSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ModelApiSettings":
        from .settings import ModelApiSettings

        return ModelApiSettings
    raise AttributeError(name)
