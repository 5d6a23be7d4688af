"""Bearer and Grafana-HMAC verification (refuse by default, constant-time, replay window).

The HMAC scheme is grafana/alerting ``http/hmac.go``: hex HMAC-SHA256 over
``<unix seconds> ":" <body>`` when a timestamp header is configured, else over the body.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from driftloop_bridge.auth import AuthConfig, HmacConfig, sign, verify_bearer, verify_request
from driftloop_bridge.errors import AuthError

BODY = b'{"alerts": []}'
NOW = 1_795_400_000.0


def _config(token: str | None = "s3cret", **kw) -> AuthConfig:
    return AuthConfig(token=SecretStr(token) if token else None, **kw)


def _hmac(timestamp_header: str = "X-Grafana-Alert-Timestamp") -> HmacConfig:
    return HmacConfig(
        secret=SecretStr("hmac-key"),
        signature_header="X-Grafana-Alert-Signature",
        timestamp_header=timestamp_header,
        max_skew_seconds=300,
    )


def test_sign_matches_grafanas_algorithm() -> None:
    expected = hmac.new(b"hmac-key", b"1795400000:" + BODY, hashlib.sha256).hexdigest()
    assert sign("hmac-key", BODY, "1795400000") == expected
    assert sign("hmac-key", BODY) == hmac.new(b"hmac-key", BODY, hashlib.sha256).hexdigest()


def test_valid_bearer_passes() -> None:
    verify_bearer({"authorization": "Bearer s3cret"}, _config())
    verify_bearer({"authorization": "bearer   s3cret "}, _config())


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing Authorization header"),
        ({"authorization": "Bearer wrong"}, "wrong bearer token"),
        ({"authorization": "Basic czNjcmV0"}, "Bearer scheme"),
        ({"authorization": "Bearer"}, "Bearer scheme"),
        ({"authorization": "Bearer s3cret-and-more"}, "wrong bearer token"),
        ({"authorization": "Bearer sécret"}, "wrong bearer token"),  # non-ASCII must not crash
    ],
)
def test_bad_bearer_is_refused(headers: dict[str, str], message: str) -> None:
    with pytest.raises(AuthError, match=message):
        verify_bearer(headers, _config())


def test_no_token_configured_refuses_everything() -> None:
    with pytest.raises(AuthError, match="no webhook token is configured"):
        verify_bearer({"authorization": "Bearer anything"}, _config(None))


def test_explicit_insecure_flag_accepts_without_token() -> None:
    verify_bearer({}, _config(None, allow_unauthenticated=True))


def _signed(ts: str, body: bytes = BODY, secret: str = "hmac-key") -> dict[str, str]:
    return {
        "authorization": "Bearer s3cret",
        "x-grafana-alert-timestamp": ts,
        "x-grafana-alert-signature": sign(secret, body, ts),
    }


def _verify(headers: dict[str, str], body: bytes = BODY, cfg: HmacConfig | None = None) -> None:
    verify_request(
        headers=headers,
        body=body,
        config=_config(hmac=cfg or _hmac()),
        check_hmac=True,
        clock=lambda: NOW,
    )


def test_valid_hmac_passes() -> None:
    _verify(_signed(str(int(NOW) - 10)))


def test_uppercase_hex_signature_passes() -> None:
    headers = _signed(str(int(NOW)))
    headers["x-grafana-alert-signature"] = headers["x-grafana-alert-signature"].upper()
    _verify(headers)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h.pop("x-grafana-alert-signature"), "missing X-Grafana-Alert-Signature"),
        (lambda h: h.pop("x-grafana-alert-timestamp"), "missing X-Grafana-Alert-Timestamp"),
        (lambda h: h.update({"x-grafana-alert-signature": "00" * 32}), "bad HMAC signature"),
        (lambda h: h.update({"x-grafana-alert-timestamp": "soon"}), "not a Unix timestamp"),
        (lambda h: h.update({"authorization": "Bearer nope"}), "wrong bearer token"),
    ],
)
def test_bad_hmac_is_refused(mutate, message: str) -> None:
    headers = _signed(str(int(NOW)))
    mutate(headers)
    with pytest.raises(AuthError, match=message):
        _verify(headers)


def test_signature_over_another_body_is_refused() -> None:
    with pytest.raises(AuthError, match="bad HMAC signature"):
        _verify(_signed(str(int(NOW))), body=b'{"alerts": [1]}')


def test_signature_with_another_secret_is_refused() -> None:
    with pytest.raises(AuthError, match="bad HMAC signature"):
        _verify(_signed(str(int(NOW)), secret="other-key"))


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_stale_or_future_timestamp_is_refused(offset: int) -> None:
    with pytest.raises(AuthError, match="stale or future timestamp"):
        _verify(_signed(str(int(NOW) + offset)))


def test_changing_the_timestamp_breaks_the_signature() -> None:
    headers = _signed(str(int(NOW) - 1000))  # stale, re-stamped by an attacker
    headers["x-grafana-alert-timestamp"] = str(int(NOW))
    with pytest.raises(AuthError, match="bad HMAC signature"):
        _verify(headers)


def test_body_only_signature_when_no_timestamp_header() -> None:
    headers = {
        "authorization": "Bearer s3cret",
        "x-grafana-alert-signature": sign("hmac-key", BODY),
    }
    _verify(headers, cfg=_hmac(timestamp_header=""))


def test_hmac_is_not_checked_for_alertmanager() -> None:
    verify_request(
        headers={"authorization": "Bearer s3cret"},
        body=BODY,
        config=_config(hmac=_hmac()),
        check_hmac=False,
        clock=lambda: NOW,
    )
