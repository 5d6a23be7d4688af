"""Who may label what: the checks ``POST /feedback`` runs before a label is published.

In this order, each refusal with its own status (docs/api.md, "Feedback"):

1. ``X-API-Key`` is one of ``feedback_api_keys``: missing -> 401, unknown -> 403. Checked
   before the body is read, so an unauthenticated caller learns nothing about the body rules.
2. (the route parses the body: 422 naming the field)
3. ``feedback_token`` was issued by us for this ``request_id``: otherwise 403; genuine but
   older than ``feedback_token_ttl_seconds``: 410 (:mod:`.tokens`).
4. The id has no label yet: the first label is recorded in Redis (:mod:`.label_store`) and
   wins; a later one with another value is 409, the same one again is a retry (202).
   Redis down: 503, nothing published.

Every refusal is counted in ``driftloop_feedback_rejected_total{reason}`` by the route.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from .errors import (
    AlreadyLabelled,
    FeedbackTokenExpired,
    InvalidApiKey,
    InvalidFeedbackToken,
    InvalidInput,
    LabelStoreUnavailable,
    MissingApiKey,
)
from .label_store import LabelStore
from .tokens import FeedbackTokens, TokenClaims

#: Reasons counted from the start (at 0), so rates and alerts see every series.
REJECTION_REASONS: tuple[str, ...] = tuple(
    cls.code
    for cls in (
        MissingApiKey,
        InvalidApiKey,
        InvalidInput,
        InvalidFeedbackToken,
        FeedbackTokenExpired,
        AlreadyLabelled,
        LabelStoreUnavailable,
    )
)


def _digest(value: str) -> bytes:
    # Compare fixed-length digests, so neither a key's length nor its prefix leaks by timing.
    return hashlib.sha256(value.encode()).digest()


class LabelGate:
    """The producer-key, token and first-label checks (see the module docstring)."""

    def __init__(
        self,
        *,
        api_keys: Sequence[SecretStr],
        tokens: FeedbackTokens,
        store: LabelStore,
        replica_id: str,
    ) -> None:
        if not api_keys:
            raise ValueError("at least one feedback API key is required")
        self._keys = [_digest(k.get_secret_value()) for k in api_keys]
        self.tokens = tokens
        self.store = store
        self._replica_id = replica_id

    def authenticate(self, api_key: str | None) -> None:
        """Raise :class:`MissingApiKey` (401) or :class:`InvalidApiKey` (403) unless the
        caller holds a producer key."""
        if not api_key:
            raise MissingApiKey()
        sent = _digest(api_key)
        # Every key is compared (no early exit), each in constant time.
        if not sum(hmac.compare_digest(sent, key) for key in self._keys):
            raise InvalidApiKey()

    async def admit(self, request_id: str, token: str, actual: float) -> TokenClaims:
        """The token's claims once ``actual`` is recorded as this id's label (else raises)."""
        claims = self.tokens.verify(token, request_id)
        if not await self.store.claim(request_id, repr(float(actual))):
            raise AlreadyLabelled(request_id)
        return claims
