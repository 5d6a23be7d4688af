"""The model API's errors, and the handlers that turn them into HTTP answers.

Every failure a client can cause is a 4xx whose body names the field and the rule it broke;
nothing a client sends can produce a 500 or a traceback::

    ModelApiError                   base of everything raised on purpose here
     ├── ClientError                the client must change its request (4xx)
     │    ├── InvalidInput          422: one or more fields break a rule
     │    ├── PayloadTooLarge       413: body over the configured limit
     │    ├── UnsupportedMediaType  415: a body that does not claim to be JSON
     │    └── LabelRefused          POST /feedback refused (docs/security.md, docs/api.md)
     │         ├── MissingApiKey          401: no X-API-Key header
     │         ├── InvalidApiKey          403: an X-API-Key that is not a producer's key
     │         ├── InvalidFeedbackToken   403: not a token we issued for this request id
     │         │    └── MissingFeedbackToken   403: a well-formed label without a token
     │         ├── FeedbackTokenExpired   410: a genuine token past its lifetime
     │         └── AlreadyLabelled        409: the first label for this id wins
     ├── LabelStoreUnavailable      503: "labelled" cannot be recorded (Redis); retry later
     ├── ModelNotReady              503: no champion loaded yet (nginx tries another replica)
     └── ModelLoadError             a version could not be fetched or does not fit the schema
          └── AliasNotFound         the registry has no such alias (e.g. no watch: no shadow)

Every answer uses the one error body of all driftloop services
(:mod:`driftloop_service.http_errors`)::

    {"error": "invalid_input",
     "message": "average_rooms: greater_than_equal: Input should be greater than or equal to 0.1",
     "detail": [{"field": "average_rooms", "rule": "greater_than_equal",
                 "message": "Input should be greater than or equal to 0.1"}]}
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from driftloop_contracts import API_KEY_HEADER
from driftloop_service import BODY, ApiError, FieldProblem, problems_from_errors

__all__ = [
    "BODY",
    "AliasNotFound",
    "AlreadyLabelled",
    "ClientDisconnected",
    "ClientError",
    "FeedbackTokenExpired",
    "FieldProblem",
    "InvalidApiKey",
    "InvalidFeedbackToken",
    "InvalidInput",
    "LabelRefused",
    "LabelStoreUnavailable",
    "MissingApiKey",
    "MissingFeedbackToken",
    "ModelApiError",
    "ModelLoadError",
    "ModelNotReady",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "problems_from_errors",
]


class ModelApiError(ApiError):
    """Base of every error the model API raises on purpose (answered in the shared shape)."""


class ClientError(ModelApiError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    status_code = 400
    code = "bad_request"


class InvalidInput(ClientError):
    """One or more fields break a rule (type, bound, presence, finiteness, size)."""

    status_code = 422
    code = "invalid_input"

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        problems = tuple(problems)
        super().__init__("; ".join(p.render() for p in problems) or "invalid input", problems)

    @classmethod
    def one(cls, field: str, rule: str, message: str) -> InvalidInput:
        return cls([FieldProblem(field, rule, message)])

    @classmethod
    def from_validation_error(cls, exc: ValidationError, prefix: str = "") -> InvalidInput:
        """Map pydantic's errors onto field problems (``rows.3.average_rooms`` style paths)."""
        return cls(problems_from_errors(exc.errors(include_url=False), prefix))


class PayloadTooLarge(ClientError):
    """The body is over ``max_body_bytes``."""

    status_code = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        rule = "max_bytes"
        text = f"the body must be at most {limit} bytes"
        super().__init__(f"{BODY}: {rule}: {text}", [FieldProblem(BODY, rule, text)])


class UnsupportedMediaType(ClientError):
    """A Content-Type that is not JSON (a missing one is accepted as JSON)."""

    status_code = 415
    code = "unsupported_media_type"

    def __init__(self, content_type: str) -> None:
        rule = "json_content_type"
        text = f"expected application/json, got {content_type[:80]!r}"
        super().__init__(
            f"Content-Type: {rule}: {text}", [FieldProblem("Content-Type", rule, text)]
        )


class ClientDisconnected(ClientError):
    """The client went away before sending its whole body: nothing was done with it."""

    code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("the client disconnected before the body was complete")


class LabelRefused(ClientError):
    """``POST /feedback`` refused a label; the code says why (counted by reason)."""

    #: The field at fault (a header name or ``feedback_token``) and the rule it broke.
    field = ""
    rule = ""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"{self.field}: {self.rule}: {message}", [FieldProblem(self.field, self.rule, message)]
        )


class MissingApiKey(LabelRefused):
    """No ``X-API-Key``: only label producers may send labels."""

    status_code = 401
    code = "missing_api_key"
    field = API_KEY_HEADER
    rule = "required"
    headers = {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'}

    def __init__(self) -> None:
        super().__init__("a label producer's API key is required")


class InvalidApiKey(LabelRefused):
    """An ``X-API-Key`` that is none of the configured producer keys."""

    status_code = 403
    code = "invalid_api_key"
    field = API_KEY_HEADER
    rule = "unknown_key"

    def __init__(self) -> None:
        super().__init__("not a label producer's API key")


class InvalidFeedbackToken(LabelRefused):
    """The token was not issued by us for this request id (forged, altered, another id's, or
    an id we never issued: without a prediction there is no token)."""

    status_code = 403
    code = "invalid_feedback_token"
    field = "feedback_token"
    rule = "signature"


class MissingFeedbackToken(InvalidFeedbackToken):
    """A well-formed label without a token: as unproven as a forged one (403)."""

    rule = "required"

    def __init__(self) -> None:
        super().__init__("send the feedback_token of the prediction's answer")


class FeedbackTokenExpired(LabelRefused):
    """A token we issued, older than ``feedback_token_ttl_seconds``."""

    status_code = 410
    code = "feedback_token_expired"
    field = "feedback_token"
    rule = "expired"


class AlreadyLabelled(LabelRefused):
    """This request id has a label already; the first one wins."""

    status_code = 409
    code = "already_labelled"
    field = "request_id"
    rule = "first_label_wins"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"{request_id} is labelled already; the first label stands")


class LabelStoreUnavailable(ModelApiError):
    """Redis, where "labelled" is recorded, did not answer: refusing beats double labels."""

    status_code = 503
    code = "label_store_unavailable"
    headers = {"Retry-After": "1"}

    def __init__(self, reason: str) -> None:
        super().__init__(f"the label store is unavailable ({reason}); retry later")


class ModelNotReady(ModelApiError):
    """No model is loaded yet; the replica is alive but not ready."""

    status_code = 503
    code = "model_not_ready"
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("no model is loaded yet; try again shortly")


class ModelLoadError(ModelApiError):
    """A model version could not be fetched, deserialised, or does not take our features."""

    code = "model_load_error"


class AliasNotFound(ModelLoadError):
    """The registry answered that the alias does not exist (not that it is unreachable)."""

    code = "alias_not_found"
