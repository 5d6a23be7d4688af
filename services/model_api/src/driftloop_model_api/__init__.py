"""driftloop's serving replica: validated predictions, non-blocking events, hot reload."""

from .app import create_app
from .settings import ModelApiSettings

__all__ = ["ModelApiSettings", "create_app"]
