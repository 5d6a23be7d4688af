"""Feedback tokens: proof that a label names a prediction we issued, and when.

Every prediction answer carries ``feedback_token``; ``POST /feedback`` must send it back with
the request id. A token is::

    v1.<issued_at>.<model_version, base64url>.<HMAC-SHA256, base64url>

    HMAC-SHA256(key, "driftloop-feedback-v1" NUL request_id NUL model_version NUL issued_at)

``issued_at`` is Unix seconds. The request id is not in the token (the label names it), so a
token only verifies together with the id it was issued for; NUL cannot occur in a request id
(``REQUEST_ID_PATTERN``), so the fields cannot be shifted into one another. Verification
checks the MAC first (constant time), then the age: a forged token is 403 whatever its age, a
genuine one past ``ttl_s`` is 410. An id we never issued cannot have a valid token, so "unknown
id" is a 403 here, never a 404.

Why the standard library and not itsdangerous: the token must bind three fields, one of which
(the request id) the label carries anyway; itsdangerous' ``TimestampSigner`` would repeat it in
every token (a 1,000-row batch answer carries 1,000 tokens) and derives its key again on every
call. ``hmac.digest`` is the one-shot HMAC of OpenSSL (about a microsecond per token) and
``hmac.compare_digest`` the constant-time comparison; the rest is the format above.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import FeedbackTokenExpired, InvalidFeedbackToken

__all__ = ["TOKEN_VERSION", "FeedbackTokens", "TokenClaims"]

TOKEN_VERSION = "v1"
_DOMAIN = b"driftloop-feedback-v1"
#: A token stamped further in the future than this is not ours (clocks of replicas differ by
#: far less).
MAX_CLOCK_SKEW_S = 300
#: Longest token accepted before any parsing (a real one is about 65 characters).
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says about its prediction."""

    request_id: str
    model_version: str
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FeedbackTokens:
    """Issues and verifies feedback tokens with one key (the same on every replica).

    Example::

        tokens = FeedbackTokens(b"a key of at least 32 bytes.......", ttl_s=86_400)
        token = tokens.issue("3f2c...", model_version="7")
        tokens.verify(token, "3f2c...")  # TokenClaims, or raises 403/410 errors
    """

    def __init__(self, key: bytes, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("the feedback-token key needs at least 32 bytes")
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, request_id: str, model_version: str, issued_at: int) -> bytes:
        message = b"\0".join(
            (_DOMAIN, request_id.encode(), model_version.encode(), str(issued_at).encode())
        )
        return hmac.digest(self._key, message, hashlib.sha256)

    def issue(self, request_id: str, model_version: str, issued_at: int | None = None) -> str:
        """The token for a prediction answered now (or at ``issued_at``, Unix seconds)."""
        at = int(self._clock()) if issued_at is None else issued_at
        mac = self._mac(request_id, model_version, at)
        return f"{TOKEN_VERSION}.{at}.{_b64(model_version.encode())}.{_b64(mac)}"

    def verify(self, token: str, request_id: str) -> TokenClaims:
        """The token's claims if we issued it for ``request_id`` and it is still valid.

        Raises :class:`InvalidFeedbackToken` (403) for anything we did not issue for this id,
        :class:`FeedbackTokenExpired` (410) for a genuine token older than ``ttl_s``.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidFeedbackToken("not a feedback token this API issued")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION or not parts[1].isdigit():
            raise InvalidFeedbackToken("not a feedback token this API issued")
        try:
            issued_at = int(parts[1])
            model_version = _unb64(parts[2]).decode("utf-8")
        except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
            raise InvalidFeedbackToken("not a feedback token this API issued") from None
        # Compared as issued, not as decoded: the last base64 character of a field carries
        # bits the decoder ignores, so another spelling of the same bytes (e.g. a final "B"
        # for "A") would otherwise pass; only the exact token we issued does (a CI run found
        # a one-character change accepted).
        if str(issued_at) != parts[1] or _b64(model_version.encode()) != parts[2]:
            raise InvalidFeedbackToken("not a feedback token this API issued")
        expected = _b64(self._mac(request_id, model_version, issued_at))
        if not hmac.compare_digest(parts[3].encode("ascii", "replace"), expected.encode()):
            raise InvalidFeedbackToken(
                "the token was not issued for this request_id (or not by this API)"
            )
        now = self._clock()
        if issued_at > now + MAX_CLOCK_SKEW_S:
            raise InvalidFeedbackToken("the token is stamped in the future")
        if now - issued_at > self.ttl_s:
            raise FeedbackTokenExpired(
                f"the token is older than {self.ttl_s} s; labels are accepted that long"
            )
        return TokenClaims(request_id, model_version, issued_at)
