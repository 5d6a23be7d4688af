"""Feedback tokens: issued for one request id, refused for anything else, expired after the TTL."""

from __future__ import annotations

import string

import pytest

from driftloop_model_api.errors import FeedbackTokenExpired, InvalidFeedbackToken
from driftloop_model_api.tokens import MAX_CLOCK_SKEW_S, FeedbackTokens, TokenClaims

KEY = b"k" * 32
RID = "0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tokens(clock: Clock, key: bytes = KEY, ttl_s: int = 3_600) -> FeedbackTokens:
    return FeedbackTokens(key, ttl_s, clock=clock)


def test_a_token_verifies_for_its_request_id_with_its_claims() -> None:
    clock = Clock()
    t = tokens(clock)
    token = t.issue(RID, "7")
    clock.now += 3_600  # still valid at exactly the TTL
    assert t.verify(token, RID) == TokenClaims(RID, "7", 1_800_000_000)


def test_a_token_is_bound_to_its_request_id() -> None:
    t = tokens(Clock())
    token = t.issue(RID, "7")
    with pytest.raises(InvalidFeedbackToken, match="not issued for this request_id"):
        t.verify(token, RID + "-0")
    with pytest.raises(InvalidFeedbackToken):
        t.verify(token, "never-issued-123")


def test_a_token_of_another_key_is_refused() -> None:
    clock = Clock()
    forged = tokens(clock, key=b"x" * 32).issue(RID, "7")
    with pytest.raises(InvalidFeedbackToken):
        tokens(clock).verify(forged, RID)


@pytest.mark.parametrize("part", [1, 2, 3], ids=["issued_at", "model_version", "mac"])
def test_any_altered_part_is_refused(part: int) -> None:
    clock = Clock()
    t = tokens(clock)
    parts = t.issue(RID, "7").split(".")
    replacement = {1: str(int(parts[1]) + 1), 2: "OA", 3: parts[3][:-2] + "AA"}[part]
    parts[part] = replacement
    with pytest.raises(InvalidFeedbackToken):
        t.verify(".".join(parts), RID)


def test_every_one_character_change_is_refused() -> None:
    """Every position, every base64url character: the last character of a base64 field carries
    bits a decoder ignores (a final "B" decodes like "A"), so comparing decoded bytes accepted
    some altered tokens (seen in CI: the integration test's one-character change was accepted
    about once in 20 runs). Only the exact token issued verifies."""
    alphabet = string.ascii_letters + string.digits + "-_"
    t = tokens(Clock())
    for version in ("7", "12", "123"):
        token = t.issue(RID, version)
        assert t.verify(token, RID).model_version == version
        for i, original in enumerate(token):
            for c in alphabet + "0.":
                if c == original:
                    continue
                altered = token[:i] + c + token[i + 1 :]
                with pytest.raises(InvalidFeedbackToken):
                    t.verify(altered, RID)


@pytest.mark.parametrize(
    "garbage",
    ["", "v1", "v2.1.Nw.abc", "v1.x.Nw.abc", "v1.1.Nw", "v1.1.!!.abc", "v1.1.Nw.a.b", "v1." * 100],
)
def test_malformed_tokens_are_refused_not_crashed(garbage: str) -> None:
    with pytest.raises(InvalidFeedbackToken):
        tokens(Clock()).verify(garbage, RID)


def test_an_expired_genuine_token_is_410_but_an_expired_forgery_is_403() -> None:
    clock = Clock()
    t = tokens(clock)
    token = t.issue(RID, "7")
    forged = tokens(clock, key=b"x" * 32).issue(RID, "7")
    clock.now += 3_601
    with pytest.raises(FeedbackTokenExpired) as expired:
        t.verify(token, RID)
    assert expired.value.status_code == 410
    with pytest.raises(InvalidFeedbackToken) as invalid:
        t.verify(forged, RID)
    assert invalid.value.status_code == 403


def test_a_token_from_the_future_is_refused() -> None:
    clock = Clock()
    t = tokens(clock)
    token = t.issue(RID, "7", issued_at=int(clock.now) + MAX_CLOCK_SKEW_S + 1)
    with pytest.raises(InvalidFeedbackToken, match="future"):
        t.verify(token, RID)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FeedbackTokens(b"short", 60)
