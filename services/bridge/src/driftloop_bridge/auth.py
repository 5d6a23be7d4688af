"""Webhook authentication: a bearer token, plus Grafana's HMAC signature when configured.

Policy (refuse by default):

* Every webhook needs ``Authorization: Bearer <DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN>`` (Grafana's
  ``authorization_scheme``/``authorization_credentials``, Alertmanager's
  ``http_config.authorization``). With no token configured every request is refused, unless
  the explicit ``allow_unauthenticated`` flag is set.
* ``/webhooks/grafana`` additionally needs a valid HMAC when ``hmac_secret`` is set: hex
  HMAC-SHA256 of ``timestamp + ":" + raw body`` (or of the raw body alone when no timestamp
  header is configured) in the signature header, exactly as grafana/alerting ``http/hmac.go``
  signs it; the timestamp (Unix seconds) must be within ``max_skew`` of now, so a captured
  request cannot be replayed later.

Every comparison is constant-time (:func:`hmac.compare_digest` on bytes), and a failure says
which check failed without echoing any secret. Checks run on the raw body before it is parsed,
so a refused request has no other effect.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from .errors import AuthError
from .settings import BridgeSettings


@dataclass(frozen=True)
class HmacConfig:
    secret: SecretStr
    signature_header: str
    timestamp_header: str
    max_skew_seconds: float


@dataclass(frozen=True)
class AuthConfig:
    token: SecretStr | None
    allow_unauthenticated: bool = False
    hmac: HmacConfig | None = None

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> AuthConfig:
        hmac_cfg = None
        if settings.hmac_secret is not None and settings.hmac_secret.get_secret_value():
            hmac_cfg = HmacConfig(
                secret=settings.hmac_secret,
                signature_header=settings.hmac_signature_header,
                timestamp_header=settings.hmac_timestamp_header.strip(),
                max_skew_seconds=settings.hmac_max_skew_seconds,
            )
        return cls(
            token=settings.webhook_token,
            allow_unauthenticated=settings.allow_unauthenticated,
            hmac=hmac_cfg,
        )


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def verify_bearer(headers: Mapping[str, str], config: AuthConfig) -> None:
    """Raise :class:`AuthError` unless the request carries the configured bearer token."""
    if config.token is None:
        if config.allow_unauthenticated:
            return
        raise AuthError("no webhook token is configured; refusing every request")
    value = headers.get("authorization", "")
    scheme, _, credentials = value.strip().partition(" ")
    if not value:
        raise AuthError("missing Authorization header")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError("Authorization must use the Bearer scheme")
    if not _equal(credentials.strip(), config.token.get_secret_value()):
        raise AuthError("wrong bearer token")


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The signature Grafana sends: hex HMAC-SHA256 of ``[timestamp ":"] body``."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    if timestamp is not None:
        mac.update(timestamp.encode())
        mac.update(b":")
    mac.update(body)
    return mac.hexdigest()


def verify_hmac(headers: Mapping[str, str], body: bytes, config: HmacConfig, now: float) -> None:
    """Raise :class:`AuthError` unless the body carries a fresh, valid Grafana HMAC signature."""
    provided = headers.get(config.signature_header.lower(), "").strip().lower()
    if not provided:
        raise AuthError(f"missing {config.signature_header} header")
    timestamp: str | None = None
    if config.timestamp_header:
        timestamp = headers.get(config.timestamp_header.lower(), "").strip()
        if not timestamp:
            raise AuthError(f"missing {config.timestamp_header} header")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise AuthError(f"{config.timestamp_header} is not a Unix timestamp") from None
        if abs(now - sent_at) > config.max_skew_seconds:
            raise AuthError(
                f"stale or future timestamp (more than {config.max_skew_seconds:g}s from now)"
            )
    expected = sign(config.secret.get_secret_value(), body, timestamp)
    if not _equal(provided, expected):
        raise AuthError("bad HMAC signature")


def verify_request(
    *,
    headers: Mapping[str, str],
    body: bytes,
    config: AuthConfig,
    check_hmac: bool,
    clock: Callable[[], float],
) -> None:
    """All checks for one webhook request; the first failure raises :class:`AuthError`."""
    verify_bearer(headers, config)
    if check_hmac and config.hmac is not None:
        verify_hmac(headers, body, config.hmac, clock())
