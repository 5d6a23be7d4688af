"""The label producers' side of ``POST /feedback``: header names and the API keys.

Labels steer retraining, so the model API accepts them only from producers holding an API key
(``X-API-Key``), and only for predictions it issued (the ``feedback_token`` of each answer;
see docs/security.md). The replicas and our own producers (locust, ``driftloop demo``, the
tests) read the keys from the same variable through :class:`FeedbackApiKeySettings`, so the
local default is defined once::

    DRIFTLOOP_MODEL_API_FEEDBACK_API_KEYS=key-of-producer-a,key-of-producer-b

Several keys (comma-separated) let producers rotate keys or hold one each; our own producers
send the first. The default is a local-stack-only key, documented in the README: replace it
wherever the API is reachable by anyone else.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "API_KEY_HEADER",
    "CORRELATION_ID_HEADER",
    "LOCAL_FEEDBACK_API_KEY",
    "REQUEST_ID_HEADER",
    "FeedbackApiKeySettings",
]

#: Header a label producer authenticates with on ``POST /feedback``.
API_KEY_HEADER = "X-API-Key"
#: The id we issued for a request (nginx's ``$request_id``, or the replica's own).
REQUEST_ID_HEADER = "X-Request-ID"
#: The client's own id for a request, echoed back (never used as the prediction's id).
CORRELATION_ID_HEADER = "X-Correlation-ID"
#: Local-stack default of the label producers' API key (README, "Local credentials").
LOCAL_FEEDBACK_API_KEY = "driftloop-local-feedback-api-key"


class FeedbackApiKeySettings(BaseSettings):
    """The API keys ``POST /feedback`` accepts (env ``DRIFTLOOP_MODEL_API_FEEDBACK_API_KEYS``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_MODEL_API_", extra="ignore")

    #: Comma-separated in the environment; at least one, each at least 16 characters.
    feedback_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(SecretStr(LOCAL_FEEDBACK_API_KEY),), min_length=1
    )

    @field_validator("feedback_api_keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("feedback_api_keys")
    @classmethod
    def _long_enough(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(key.get_secret_value()) < 16 for key in keys):
            raise ValueError("every feedback API key needs at least 16 characters")
        return keys

    @property
    def producer_key(self) -> str:
        """The key our own label producers send (the first one)."""
        return self.feedback_api_keys[0].get_secret_value()
