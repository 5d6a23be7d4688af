"""driftloop's contracts: the one definition of features, events, topics, names, ports and
thresholds.

Everything here imports without Redis; the Redis-backed threshold store is
:mod:`driftloop_contracts.threshold_store` (extra ``driftloop-contracts[redis]``).
"""

from .events import (
    SCHEMA_VERSION,
    EventError,
    FeedbackEvent,
    MalformedEvent,
    ModelPromoted,
    PredictionEvent,
    UnknownSchemaVersion,
    decode_event,
    encode_key,
    utcnow,
)
from .features import (
    EXAMPLE_FEATURES,
    FEATURE_BY_NAME,
    FEATURE_NAMES,
    FEATURE_SPECS,
    PREDICTION_SERIES,
    SERIES_NAMES,
    SOURCE_TO_FEATURE,
    TARGET_NAME,
    TARGET_SCALE_USD,
    TARGET_SOURCE_COLUMN,
    FeatureSpec,
    HouseFeatures,
)
from .labelled_log import LABELLED_LOG_COLUMNS, part_file_name, partition_dir
from .ports import DEFAULT_BASE_PORT, DOCKER_BASE_PORT, HOST, TEST_BASE_PORT, PortPlan, StackUrls
from .profile import ReferenceProfile, SeriesProfile
from .registry import (
    CHAMPION_ALIAS,
    DAG_ID,
    EXPERIMENT_NAME,
    HOLDOUT_MAE_METRIC,
    HOLDOUT_R2_METRIC,
    HOLDOUT_RMSE_METRIC,
    MODEL_ARTIFACT_NAME,
    MODEL_NAME,
    PROFILE_ARTIFACT_PATH,
)
from .settings import SettingsError, load_settings
from .thresholds import (
    DEFAULT_THRESHOLDS,
    GLOBAL_STATISTICS,
    SERIES_STATISTICS,
    STATISTICS,
    THRESHOLDS_REDIS_KEY,
    ThresholdError,
    ThresholdRow,
    ThresholdSet,
)
from .topics import FEEDBACK_TOPIC, MODEL_EVENTS_TOPIC, PREDICTIONS_TOPIC, TOPICS, TopicSpec

__all__ = [
    "CHAMPION_ALIAS",
    "DAG_ID",
    "DEFAULT_BASE_PORT",
    "DEFAULT_THRESHOLDS",
    "DOCKER_BASE_PORT",
    "EXAMPLE_FEATURES",
    "EXPERIMENT_NAME",
    "FEATURE_BY_NAME",
    "FEATURE_NAMES",
    "FEATURE_SPECS",
    "FEEDBACK_TOPIC",
    "GLOBAL_STATISTICS",
    "HOLDOUT_MAE_METRIC",
    "HOLDOUT_R2_METRIC",
    "HOLDOUT_RMSE_METRIC",
    "HOST",
    "LABELLED_LOG_COLUMNS",
    "MODEL_ARTIFACT_NAME",
    "MODEL_EVENTS_TOPIC",
    "MODEL_NAME",
    "PREDICTIONS_TOPIC",
    "PREDICTION_SERIES",
    "PROFILE_ARTIFACT_PATH",
    "SCHEMA_VERSION",
    "SERIES_NAMES",
    "SERIES_STATISTICS",
    "SOURCE_TO_FEATURE",
    "STATISTICS",
    "TARGET_NAME",
    "TARGET_SCALE_USD",
    "TARGET_SOURCE_COLUMN",
    "TEST_BASE_PORT",
    "THRESHOLDS_REDIS_KEY",
    "TOPICS",
    "EventError",
    "FeatureSpec",
    "FeedbackEvent",
    "HouseFeatures",
    "MalformedEvent",
    "ModelPromoted",
    "PortPlan",
    "PredictionEvent",
    "ReferenceProfile",
    "SeriesProfile",
    "SettingsError",
    "StackUrls",
    "ThresholdError",
    "ThresholdRow",
    "ThresholdSet",
    "TopicSpec",
    "UnknownSchemaVersion",
    "decode_event",
    "encode_key",
    "load_settings",
    "part_file_name",
    "partition_dir",
    "utcnow",
]
