"""The streamed relay on the gateway's real engine connections (aiohttp), the engine served
over real HTTP: what the client reads is what the engine sent, and a client that leaves
closes the engine's connection (vLLM then aborts the generation)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from twinloop.inference.schemas import ChatCompletionRequest
from twinloop.runtime import Runtime
from twinloop.settings import SafetySettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.engine_server import ServedEngine, serve_over_http
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter

CHAT = "/v1/chat/completions"
PIECES = ["The ", "capital ", "of ", "France ", "is ", "Paris", "."]


@asynccontextmanager
async def _gateway(
    settings: Settings, handle: Any, engine: FakeEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, ServedEngine]]:
    from api.app import create_app

    async with serve_over_http(handle, ports=2) as served:
        blue, green = served.ports
        engine.ports = {blue: "blue", green: "green"}
        engines = settings.engines.model_copy(update={"blue_port": blue, "green_port": green})
        app: FastAPI = create_app(
            settings.model_copy(update={"engines": engines}),
            router=FakeRouter(),
            knowledge=FakeKnowledge(),
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client, app.state.runtime, served


def _events(body: str) -> list[dict[str, Any]]:
    lines = [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def test_a_relayed_stream_carries_the_engines_chunks_finish_and_usage(
    settings: Settings,
) -> None:
    engine = FakeEngine(ports={}, stream_pieces=PIECES)
    unscreened = settings.model_copy(update={"safety": SafetySettings(output="off")})
    body = {"model": "law", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Capital of France?"}]}  # fmt: skip
    async with _gateway(unscreened, engine.handle, engine) as (client, _, _served):
        response = await client.post(CHAT, json=body)
        plain = await client.post(CHAT, json={**body, "stream_options": None})

    assert response.status_code == 200, response.text
    events = _events(response.text)
    content = [e["choices"][0]["delta"]["content"] for e in events if e["choices"]]
    assert content == PIECES  # chunk for chunk
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["usage"]["completion_tokens"] == len(PIECES)
    assert {e["id"] for e in events} == {events[0]["id"]} and events[0]["model"] == "law"
    assert all("usage" not in e for e in _events(plain.text))  # not asked for: not relayed


async def test_a_screened_stream_reads_the_same_text(settings: Settings) -> None:
    engine = FakeEngine(ports={}, stream_pieces=PIECES)
    body = {"model": "law", "stream": True, "messages": [{"role": "user", "content": "Q?"}]}
    async with _gateway(settings, engine.handle, engine) as (client, _, _served):
        response = await client.post(CHAT, json=body)

    events = _events(response.text)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == "".join(PIECES)


async def test_a_client_that_leaves_closes_the_engine_connection(settings: Settings) -> None:
    engine = FakeEngine(ports={})

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path != CHAT:
            return await engine.handle(request)

        async def events() -> AsyncIterator[bytes]:
            for i in range(1000):
                chunk = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(0.01)

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())

    request = ChatCompletionRequest(
        model="law", stream=True, messages=[{"role": "user", "content": "Q?"}]
    )
    async with _gateway(settings, handle, engine) as (_, runtime, served):
        stream = await runtime.answers.stream_chat(request)
        got = ""
        async for batch in stream:
            got += "".join(c["choices"][0]["delta"].get("content") or "" for c in batch)
            if got:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(500):  # the engine notices at its next write
            if served.aborted:
                break
            await asyncio.sleep(0.01)
        await runtime.answers.wait_for_stores()

    assert got.startswith("w0 ")
    assert served.aborted == [CHAT]
