"""Errors raised by the training package.

    TrainingError                 base of everything below
    ├── DataError                 input data is missing or malformed: retrying will not help
    ├── RegistryError             MLflow could not be reached or answered an error: transient
    └── PublishError              the ModelPromoted event was not acknowledged: transient

The DAG maps ``DataError`` to "fail now" and the transient families to "retry with backoff".
Too little labelled data is not an error: ``retrain.collect`` returns a *skipped* outcome.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Base class of the training package's errors."""


class DataError(TrainingError):
    """The base data or the labelled log is missing or does not have the expected layout."""


class RegistryError(TrainingError):
    """An MLflow tracking or registry call failed."""


class PublishError(TrainingError):
    """Publishing the ModelPromoted event failed."""
