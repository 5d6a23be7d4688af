"""The bridge's exceptions, one family per kind of failure.

    BridgeError
     ├── AuthError              credentials missing or wrong          -> 401, nothing else happens
     ├── PayloadError           body is not a valid webhook payload   -> 422 naming the problem
     ├── BodyTooLarge           body exceeds the configured limit     -> 413
     ├── RulesError             routing rules file unreadable/invalid -> start-up fails
     ├── StoreUnavailable       Redis unreachable                     -> 503 (the sender retries)
     └── TriggerError           Airflow could not create the run
          ├── TriggerUnavailable  transient (down, 5xx, timeout, auth) -> queued and retried
          └── TriggerRejected     permanent (the request itself is bad) -> dead-lettered at once

Lower-layer errors (redis, urllib3, the Airflow client) are wrapped at the call site, so
routes and the retry worker only ever see these.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class AuthError(BridgeError):
    """The request did not prove it came from a configured sender."""


class PayloadError(BridgeError):
    """The body is not a payload of the expected format; ``problems`` name each field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class BodyTooLarge(BridgeError):
    """The body is larger than ``DRIFTLOOP_BRIDGE_MAX_BODY_BYTES``."""


class RulesError(BridgeError):
    """The routing rules file cannot be read or does not validate."""


class StoreUnavailable(BridgeError):
    """Redis could not be reached; nothing was decided."""


class TriggerError(BridgeError):
    """Airflow did not create the DAG run."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TriggerUnavailable(TriggerError):
    """A failure worth retrying: Airflow down, 5xx, timeout, token trouble, DAG not parsed yet."""


class TriggerRejected(TriggerError):
    """Airflow refused the request itself (400/422): retrying the same request cannot help."""
