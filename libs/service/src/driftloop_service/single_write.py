"""uvicorn's httptools protocol, sending each response in one ``write``.

Why: uvicorn writes a response's status line and headers at ``http.response.start`` and its
body at ``http.response.body``, two ``write`` calls. A replica SIGKILLed between them leaves
nginx holding headers whose body never comes; nginx has already begun the response, so it
cannot retry on another replica (``proxy_next_upstream``) and the client gets a truncated
response. Held until the end of the event-loop step, both writes go out as one: a kill then
leaves either the whole response or nothing, and nothing is retried.

Starlette sends start and body in one task step (no await in between suspends), so holding
to the end of the step costs one ``call_soon`` per response and no latency. A streamed
response is still sent as it is produced, one step's writes at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["SingleWriteHttpToolsProtocol", "StepBufferedTransport"]


class StepBufferedTransport:
    """A transport whose writes within one event-loop step reach the socket as one write.

    Everything else (flow control, ``get_extra_info``, reading) is the wrapped transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what this step wrote, as one write (a no-op once closed or already sent)."""
        if not self._held:
            return
        data = b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SingleWriteHttpToolsProtocol(HttpToolsProtocol):
    """Pass as uvicorn's ``http=``: the httptools protocol over :class:`StepBufferedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        buffered = StepBufferedTransport(transport, asyncio.get_running_loop())
        super().connection_made(buffered)  # type: ignore[arg-type]
