"""Names shared by everything that talks to the MLflow model registry."""

from enum import StrEnum

MODEL_NAME = "california-housing"
CHAMPION_ALIAS = "champion"
#: During the watch after a promotion this alias names the previous champion: replicas load it
#: as a shadow (its predictions travel on the event, never to the client) and a rollback moves
#: ``champion`` back to it. Removed when the watch ends, either way.
SHADOW_ALIAS = "shadow"
#: Model-version tag on the new champion: when its post-promotion watch ends (ISO-8601 UTC).
#: Set at promotion with the ``shadow`` alias; once it has passed without a rollback the drift
#: consumer records ``kept`` and removes the alias.
WATCH_UNTIL_TAG = "driftloop.watch_until"
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
