"""Names shared by everything that talks to the MLflow model registry."""

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

MODEL_NAME = "california-housing"
CHAMPION_ALIAS = "champion"
#: During the watch after a promotion this alias names the previous champion: replicas load it
#: as a shadow (its predictions travel on the event, never to the client) and a rollback moves
#: ``champion`` back to it. Removed when the watch ends, either way.
SHADOW_ALIAS = "shadow"
#: Tag on a newly promoted version: when its watch ends (ISO 8601, UTC; written with
#: :func:`format_watch_until`, read with :func:`watch_until`). Past it replicas drop the shadow
#: even if the alias is still there, and no rollback is decided any more.
WATCH_UNTIL_TAG: Final = "driftloop.watch_until"
#: Default length of the watch after a promotion (``DRIFTLOOP_TRAINING_WATCH_SECONDS``).
DEFAULT_WATCH_SECONDS: Final = 1800.0
#: Model-version tags the drift consumer writes on both versions when a watch is decided
#: (``<prefix>.<name>``: ``outcome`` = ``rolled_back`` | ``kept``, ``champion``, ``shadow``, ``rows``,
#: ``champion_rmse_usd``, ``shadow_rmse_usd``, ``champion_mae_usd``, ``shadow_mae_usd``,
#: ``rmse_margin``, ``decided_at``, ``reason``).
WATCH_DECISION_TAG_PREFIX = "driftloop.rollback"
#: Artifact path (relative to the run) of a model version's reference profile.
PROFILE_ARTIFACT_PATH = "reference_profile.json"
#: Artifact sub-directory that holds the logged model inside a run.
MODEL_ARTIFACT_NAME = "model"
EXPERIMENT_NAME = "driftloop"
DAG_ID = "retrain_house_price"
#: MLflow metrics every registered model version's run carries (USD / unitless), written by
#: the training package; the drift consumer divides its online RMSE by the first one.
HOLDOUT_RMSE_METRIC = "holdout_rmse_usd"
HOLDOUT_MAE_METRIC = "holdout_mae_usd"
HOLDOUT_R2_METRIC = "holdout_r2"


class PromotionIgnored(StrEnum):
    """Why a ``ModelPromoted`` event was not acted on as announced (label ``reason`` of
    ``driftloop_model_events_ignored_total``). The event is only a hint: the alias decides."""

    #: It names a version the ``champion`` alias does not point at (forged, or overtaken).
    NOT_CHAMPION = "not_champion"
    #: It is for another registered model.
    OTHER_MODEL = "other_model"
    #: Stamped before this process started: the start-up load already read the alias.
    STALE = "stale"
    #: Not newer than an event already handled (a re-read after a rewind).
    REPLAYED = "replayed"


def format_watch_until(moment: datetime) -> str:
    """The :data:`WATCH_UNTIL_TAG` value for ``moment`` (an aware datetime)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def watch_until(tags: Mapping[str, str]) -> datetime | None:
    """When the watch of the version carrying ``tags`` ends; ``None`` if it has no readable
    :data:`WATCH_UNTIL_TAG` (then only the :data:`SHADOW_ALIAS` alias bounds the watch)."""
    raw = tags.get(WATCH_UNTIL_TAG)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
