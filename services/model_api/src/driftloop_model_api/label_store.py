"""Where "this request id has a label" is recorded, so the first label wins on every replica.

One Redis key per labelled id, ``driftloop:labelled:<request_id>``, written with ``SET NX EX``
and holding the label's value: the first replica to set it accepts the label; a later attempt
(on any replica) with another value is refused with 409. The *same* label again is a retry and
accepted again (202): nginx re-sends a label whose replica died after recording it but before
answering (and perhaps before publishing it), and a producer retries a request that timed out.
The replay is published again; the drift consumer keeps one row per request (its join claim),
so a retry can never add a second label. The TTL is the token lifetime: once it lapses the
token has expired too, so the id still cannot be labelled again (410).

Redis is a dependency of accepting a label (unlike the prediction cache, which is bypassed):
without it a second label could not be told apart, so a Redis failure or a call over its
budget refuses the label with 503 and the producer retries. Predictions never touch this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

import structlog

from driftloop_contracts.redis_keys import LABEL_ACCEPTED_PREFIX

from .errors import LabelStoreUnavailable

log = structlog.get_logger(__name__)

KEY_PREFIX = LABEL_ACCEPTED_PREFIX


class LabelRedis(Protocol):
    """The slice of ``redis.asyncio.Redis`` used here (which returns awaitables, not
    coroutines)."""

    def set(
        self, name: str, value: str, *, ex: int | None = None, nx: bool = False
    ) -> Awaitable[object]: ...

    def get(self, name: str) -> Awaitable[object]: ...

    async def aclose(self) -> None: ...


class LabelStore:
    """Claims request ids for their first label (see the module docstring)."""

    def __init__(self, client: LabelRedis | None, *, ttl_s: int, timeout_s: float) -> None:
        self._client = client
        self._ttl = ttl_s
        self._timeout = timeout_s
        self.last_error: str | None = None

    async def claim(self, request_id: str, label: str) -> bool:
        """True if ``label`` is the id's label (recorded now, or the same one recorded before:
        a retry), False if the id has another label already.

        Raises :class:`LabelStoreUnavailable` when Redis is not configured or does not answer.
        """
        if self._client is None:
            raise LabelStoreUnavailable("no Redis configured: DRIFTLOOP_MODEL_API_REDIS_URL")
        key = KEY_PREFIX + request_id
        try:
            async with asyncio.timeout(self._timeout):
                created = await self._client.set(key, label, ex=self._ttl, nx=True)
                stored = None if created else await self._client.get(key)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("label_store_unavailable", error=self.last_error)
            raise LabelStoreUnavailable(type(exc).__name__) from None
        self.last_error = None
        if created:
            return True
        if isinstance(stored, bytes):
            stored = stored.decode("utf-8", "replace")
        return stored == label

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:  # closing a broken connection must not fail shutdown
                log.debug("label_store_close_failed", error=str(exc))


def label_redis_client(url: str | None, timeout_s: float) -> LabelRedis | None:
    """An asyncio Redis client for the label store (``None`` without a URL: labels get 503)."""
    if not url:
        return None
    from redis.asyncio import Redis

    client: LabelRedis = Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    return client
