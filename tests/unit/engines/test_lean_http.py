"""The lean engine client's own rules, against a raw HTTP server on loopback that answers
exactly the bytes each test gives it (tests/unit/engines/test_client_http.py runs the engine
client's shared scenarios on it and on aiohttp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from twinloop.engines import lean_http
from twinloop.engines.http import BrokenError, EngineTimeouts, NotSentError
from twinloop.engines.lean_http import LeanEngineHttp

JSON_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RawServer:
    def __init__(self, reply: Callable[[int], bytes]) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""
        self.hold: asyncio.Event | None = None  # set: requests wait for it before the reply

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                if self.hold is not None:
                    await self.hold.wait()
                writer.write(self.reply(len(self.requests)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def raw_server(reply: Callable[[int], bytes]) -> AsyncIterator[RawServer]:
    server = RawServer(reply)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        yield server
    finally:
        listening.close()


async def test_keep_alive_connections_are_reused_and_the_request_is_well_formed() -> None:
    async with raw_server(lambda _: JSON_REPLY) as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts())
        try:
            replies = [await http.send("POST", server.url, b'{"a":1}') for _ in range(3)]
        finally:
            await http.aclose()

    assert [(r.status, r.body, r.reason) for r in replies] == [(200, b"{}", "OK")] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 7\r\n" in first and first.endswith(b'\r\n\r\n{"a":1}')


async def test_a_connection_the_engine_closes_is_not_reused() -> None:
    closing = JSON_REPLY.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    async with raw_server(lambda _: closing) as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts())
        try:
            for _ in range(2):
                assert (await http.send("POST", server.url, b"{}")).status == 200
        finally:
            await http.aclose()
    assert server.connections == 2


async def test_a_connection_idle_past_the_keep_alive_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lean_http, "_KEEPALIVE_S", 0.05)
    async with raw_server(lambda _: JSON_REPLY) as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts())
        try:
            await http.send("POST", server.url, b"{}")
            await asyncio.sleep(0.1)  # the engine may be about to drop it
            await http.send("POST", server.url, b"{}")
        finally:
            await http.aclose()
    assert server.connections == 2


async def test_a_chunked_reply_is_read_whole_and_streamed_piece_by_piece() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\ndata: 1\r\n7\r\ndata: 2\r\n0\r\n\r\n"
    )
    async with raw_server(lambda _: chunked) as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts())
        try:
            whole = await http.send("POST", server.url, b"{}")
            async with http.stream(server.url, b"{}") as stream:
                pieces = [data async for data in stream.chunks()]
        finally:
            await http.aclose()
    assert whole.body == b"data: 1data: 2"
    assert b"".join(pieces) == b"data: 1data: 2"
    assert server.connections == 1  # read to the end: the stream's connection was kept


async def test_a_malformed_reply_is_a_broken_connection() -> None:
    async with raw_server(lambda _: b"NOT HTTP AT ALL\r\n\r\n") as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts())
        try:
            with pytest.raises(BrokenError, match="malformed"):
                await http.send("POST", server.url, b"{}")
        finally:
            await http.aclose()


async def test_no_free_connection_within_the_pool_timeout_is_not_sent() -> None:
    async with raw_server(lambda _: JSON_REPLY) as server:
        server.hold = asyncio.Event()
        http = LeanEngineHttp(timeouts=EngineTimeouts(pool_s=0.1), limit=1)
        try:
            first = asyncio.create_task(http.send("POST", server.url, b"{}"))
            await asyncio.sleep(0.05)
            with pytest.raises(NotSentError, match="no connection free"):
                await http.send("POST", server.url, b"{}")
            server.hold.set()
            assert (await first).status == 200
            assert (await http.send("POST", server.url, b"{}")).status == 200  # the turn is back
        finally:
            await http.aclose()
    assert len(server.requests) == 2


async def test_a_url_that_is_not_http_is_not_sent() -> None:
    http = LeanEngineHttp(timeouts=EngineTimeouts())
    with pytest.raises(NotSentError, match="not an http"):
        await http.send("GET", "ftp://engine/health", None)


async def test_a_stream_faster_than_its_reader_pauses_and_loses_nothing() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: past the high-water mark before the first read
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with raw_server(lambda _: reply) as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts(read_s=0.5))
        received = bytearray()
        try:
            async with http.stream(server.url, b"{}") as stream:
                await asyncio.sleep(0.2)  # the reader is behind
                async for data in stream.chunks():
                    received += data
                    await asyncio.sleep(0.001)
        finally:
            await http.aclose()
    assert bytes(received) == body


async def test_a_connection_paused_by_an_unread_reply_reads_again_when_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole reply arrives in one read, past the high-water mark: the reading pauses, the
    # exchange is complete, and the stream is left without reading it.
    monkeypatch.setattr(lean_http, "_HIGH_WATER", 1)
    async with raw_server(lambda _: JSON_REPLY) as server:
        http = LeanEngineHttp(timeouts=EngineTimeouts(read_s=5))
        try:
            async with http.stream(server.url, b"{}"):
                await asyncio.sleep(0.1)
            reply = await asyncio.wait_for(http.send("POST", server.url, b"{}"), timeout=2)
        finally:
            await http.aclose()
    assert reply.body == b"{}"
    assert server.connections == 1
