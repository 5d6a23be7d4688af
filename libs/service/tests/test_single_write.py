"""Each response leaves a real uvicorn server in one socket write (headers and body together),
so a replica killed mid-response leaves nginx nothing it cannot retry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from driftloop_service.single_write import SingleWriteHttpToolsProtocol, StepBufferedTransport

WRITES: list[bytes] = []


class RecordingTransport:
    """The real socket transport, with every write it is given recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordedSingleWrite(SingleWriteHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(RecordingTransport(transport))  # type: ignore[arg-type]


class RecordedStock(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(RecordingTransport(transport))  # type: ignore[arg-type]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: dict[str, float]) -> dict[str, float]:
        return {"prediction": sum(body.values())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> Any:
            yield b"first;"
            await asyncio.sleep(0)
            yield b"second"

        return StreamingResponse(parts(), media_type="text/plain")

    return app


@contextlib.asynccontextmanager
async def running(protocol: type[asyncio.Protocol]) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn server on an ephemeral port with ``protocol``, and a client for it."""
    WRITES.clear()
    config = uvicorn.Config(
        make_app(), host="127.0.0.1", port=0, http=protocol, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def predictions(protocol: type[asyncio.Protocol], calls: int) -> list[float]:
    async with running(protocol) as client:
        responses = [await client.post("/predict", json={"a": 1.0, "b": i}) for i in range(calls)]
    return [r.json()["prediction"] for r in responses]


async def test_every_response_is_one_write_with_headers_and_body() -> None:
    assert await predictions(RecordedSingleWrite, calls=5) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(WRITES) == 5, WRITES
    for i, write in enumerate(WRITES):
        assert write.startswith(b"HTTP/1.1 200 OK\r\n")
        assert write.endswith(b'{"prediction":%d.0}' % (i + 1))


async def test_stock_uvicorn_splits_them_so_this_test_can_fail() -> None:
    assert await predictions(RecordedStock, calls=1) == [1.0]
    assert len(WRITES) == 2
    assert WRITES[0].endswith(b"\r\n\r\n") and WRITES[1] == b'{"prediction":1.0}'


async def test_a_streamed_response_is_still_sent_as_it_is_produced() -> None:
    async with running(RecordedSingleWrite) as client:
        response = await client.get("/stream")
    assert response.text == "first;second"
    assert len(WRITES) >= 2
    assert b"".join(WRITES).endswith(b"0\r\n\r\n")


@pytest.mark.parametrize("method", ["close", "write_eof"])
async def test_held_bytes_are_sent_before_the_connection_ends(method: str) -> None:
    sent: list[bytes] = []
    calls: list[str] = []

    class Sink:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            calls.append("close")

        def write_eof(self) -> None:
            calls.append("write_eof")

    buffered = StepBufferedTransport(Sink(), asyncio.get_running_loop())  # type: ignore[arg-type]
    buffered.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    buffered.write(b"bad")
    getattr(buffered, method)()
    assert sent == [b"HTTP/1.1 400 Bad Request\r\n\r\nbad"] and calls == [method]
    await asyncio.sleep(0)  # the step's flush, now empty, sends nothing more
    assert len(sent) == 1
