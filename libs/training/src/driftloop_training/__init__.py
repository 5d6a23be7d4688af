"""driftloop's training package: data, model, scores, reference profiles and the MLflow registry.

Used by ``driftloop bootstrap`` (first champion) and by the Airflow retraining DAG (one
function per task in :mod:`driftloop_training.retrain`). Nothing here imports Airflow.

Entry points other packages call:

- :func:`driftloop_training.bootstrap.bootstrap` — register the first champion (idempotent).
- :func:`driftloop_training.registry.get_champion` / :func:`~driftloop_training.registry.load_model`
  / :func:`~driftloop_training.registry.load_profile` — the served model and its baseline.
"""

from .errors import DataError, PublishError, RegistryError, TrainingError
from .settings import TrainingSettings, load_training_settings

__all__ = [
    "DataError",
    "PublishError",
    "RegistryError",
    "TrainingError",
    "TrainingSettings",
    "load_training_settings",
]
