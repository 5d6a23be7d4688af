"""Request ids are issued by us; a client's own id is only echoed, as a correlation id.

A prediction's id keys its event, its cache-free identity downstream and its feedback token,
so a client must not choose it (docs/security.md). nginx overwrites ``X-Request-ID`` with its
own ``$request_id`` (32 lowercase hex characters) on every request, and the replica accepts
only that shape; anything else (a client calling a replica directly with its own id, an id too
long or malformed) is ignored and the replica mints a fresh id of the same shape. nginx's id is
kept, rather than a replica-minted one, so a request nginx retries on another replica keeps its
id (the consumers dedupe by id).

The client's own id (``X-Correlation-ID``, or the ``X-Request-ID`` it sent, which nginx
forwards as ``X-Correlation-ID``) is echoed in ``X-Correlation-ID`` when it is 1-128 of
``[A-Za-z0-9._:-]``; otherwise it is dropped (never an error: it is only for the client).
"""

from __future__ import annotations

import re
import uuid

from fastapi import Request

from driftloop_contracts import CORRELATION_ID_HEADER, REQUEST_ID_HEADER

__all__ = ["CORRELATION_ID_PATTERN", "ISSUED_ID_PATTERN", "correlation_id", "issued_request_id"]

#: The shape of ids we issue: nginx's ``$request_id`` and ``uuid4().hex``.
ISSUED_ID_PATTERN = r"^[0-9a-f]{32}$"
#: A client's correlation id we echo: printable, header-safe, bounded.
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"

_ISSUED = re.compile(ISSUED_ID_PATTERN)
_CORRELATION = re.compile(CORRELATION_ID_PATTERN)


def issued_request_id(request: Request) -> str:
    """nginx's id for this request if it carries one, else a fresh one of the same shape."""
    value = request.headers.get(REQUEST_ID_HEADER)
    if value is not None and _ISSUED.match(value):
        return value
    return uuid.uuid4().hex


def correlation_id(request: Request, request_id: str) -> str | None:
    """The client's own id to echo, if it sent a well-formed one (never the issued id)."""
    value = request.headers.get(CORRELATION_ID_HEADER)
    if value is None:
        sent = request.headers.get(REQUEST_ID_HEADER)
        value = sent if sent != request_id else None
    if value is not None and _CORRELATION.match(value):
        return value
    return None
