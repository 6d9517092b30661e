"""The engine client on connections of its own (each `HttpLibrary`: the lean client and
aiohttp) against a real HTTP server on loopback: the same replies the mock-transport tests
use, through a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from twinloop.engines.client import (
    EngineClient,
    EngineRejectedRequestError,
    EngineTimeouts,
    HttpLibrary,
)
from twinloop.errors import EngineResponseError, EngineTimeoutError, EngineUnavailableError
from twinloop.testing.engine import BASE_MODEL, FakeEngine
from twinloop.testing.engine_server import serve_over_http
from twinloop.testing.ports import free_port


@pytest.fixture(params=["lean", "aiohttp"])
def library(request: pytest.FixtureRequest) -> HttpLibrary:
    name: HttpLibrary = request.param
    return name


BODY = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _engine() -> FakeEngine:
    # FakeEngine tells slots apart by port; the port is only known once served.
    engine = FakeEngine(ports={})
    engine.ports = _AnyPort("blue")  # type: ignore[assignment]
    return engine


class _AnyPort(dict[int, str]):
    def __init__(self, slot: str) -> None:
        super().__init__()
        self._slot = slot

    def __getitem__(self, port: int) -> str:
        return self._slot


async def test_a_chat_completion_is_read_over_real_http(library: HttpLibrary) -> None:
    engine = _engine()
    async with serve_over_http(engine.handle) as served:
        client = EngineClient(name="blue", base_url=served.url(), library=library)
        try:
            result = await client.chat(BODY)
        finally:
            await client.aclose()

    assert (result.text, result.finish_reason) == (engine.reply, "stop")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 7)
    assert engine.calls("/v1/chat/completions")[0]["stream"] is False


async def test_a_stream_relays_every_chunk_its_finish_and_usage_and_keeps_the_connection(
    library: HttpLibrary,
) -> None:
    engine = _engine()
    engine.stream_pieces = ["Par", "is ", "is ", "the ", "capital."]
    async with serve_over_http(engine.handle) as served:
        client = EngineClient(name="blue", base_url=served.url(), library=library)
        try:
            for _ in range(3):
                chunks = [
                    chunk
                    async for chunk in client.stream_chat(
                        {**BODY, "stream_options": {"include_usage": True}}
                    )
                ]
        finally:
            await client.aclose()
        connections = served.connections

    content = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]
    assert content == engine.stream_pieces
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert connections == 1  # read to the end: each stream left the connection for the next


async def test_closing_a_stream_early_closes_the_engine_connection(library: HttpLibrary) -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        async def events() -> AsyncIterator[bytes]:
            for i in range(500):
                chunk = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(0.01)

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())

    async with serve_over_http(handle) as served:
        client = EngineClient(name="blue", base_url=served.url(), library=library)
        try:
            stream = client.stream_chat(BODY)
            first = await anext(stream)
            await stream.aclose()
            for _ in range(500):  # the server notices at its next write
                if served.aborted:
                    break
                await asyncio.sleep(0.01)
        finally:
            await client.aclose()

    assert first["choices"][0]["delta"]["content"] == "w0 "
    assert served.aborted == ["/v1/chat/completions"]


async def test_an_error_status_carries_the_engine_message(library: HttpLibrary) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "too long"}})

    async with serve_over_http(handle) as served:
        client = EngineClient(name="blue", base_url=served.url(), library=library)
        try:
            with pytest.raises(EngineRejectedRequestError, match="too long"):
                await client.chat(BODY)
            with pytest.raises(EngineRejectedRequestError, match="too long"):
                await anext(client.stream_chat(BODY))
        finally:
            await client.aclose()


async def test_a_reply_that_is_not_json_is_an_engine_response_error(library: HttpLibrary) -> None:
    async with serve_over_http(lambda _: httpx.Response(200, text="<html>")) as served:
        client = EngineClient(name="blue", base_url=served.url(), library=library)
        try:
            with pytest.raises(EngineResponseError, match="not JSON"):
                await client.chat(BODY)
        finally:
            await client.aclose()


async def test_a_refused_connection_is_retried_then_unavailable(library: HttpLibrary) -> None:
    client = EngineClient(
        name="blue", base_url=f"http://127.0.0.1:{free_port()}", retries=2, library=library
    )
    try:
        with pytest.raises(EngineUnavailableError, match="unreachable"):
            await client.chat(BODY)
        with pytest.raises(EngineUnavailableError, match="unreachable"):
            await anext(client.stream_chat(BODY))
        assert await client.health() is False
    finally:
        await client.aclose()


async def test_a_silent_engine_is_a_timeout_and_is_not_retried(library: HttpLibrary) -> None:
    attempts = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    async with serve_over_http(handle) as served:
        timeouts = EngineTimeouts(read_s=0.2)
        client = EngineClient(
            name="blue", base_url=served.url(), library=library, timeouts=timeouts
        )
        try:
            with pytest.raises(EngineTimeoutError):
                await client.chat(BODY)
        finally:
            await client.aclose()
    assert attempts == 1


async def test_a_stream_broken_after_the_first_bytes_is_raised_not_retried(
    library: HttpLibrary,
) -> None:
    attempts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1

        async def events() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"delta": {"content": "Pa"}}]}\n\n'
            raise ConnectionResetError("the engine died")

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())

    async with serve_over_http(handle) as served:
        client = EngineClient(name="blue", base_url=served.url(), library=library)
        chunks = []
        try:
            with pytest.raises(EngineUnavailableError, match="broke off"):
                async for chunk in client.stream_chat(BODY):
                    chunks.append(chunk)
        finally:
            await client.aclose()
    assert attempts == 1
    assert len(chunks) == 1


def test_the_lean_client_works_on_uvloop_too() -> None:
    """The gateway runs on uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")
    engine = _engine()
    engine.stream_pieces = ["Par", "is."]

    async def scenario() -> tuple[str, list[str]]:
        async with serve_over_http(engine.handle) as served:
            client = EngineClient(name="blue", base_url=served.url(), library="lean")
            try:
                result = await client.chat(BODY)
                pieces = [
                    c["choices"][0]["delta"]["content"]
                    async for c in client.stream_chat(BODY)
                    if c["choices"] and c["choices"][0]["delta"].get("content")
                ]
            finally:
                await client.aclose()
        return result.text, pieces

    text, pieces = uvloop.run(scenario())
    assert (text, pieces) == (engine.reply, ["Par", "is."])
