"""The servers bench/gateway_overhead.py measures, each run in a child process by the harness.

- the stub engine: vLLM's OpenAI API with a fixed reply at once (raw asyncio + httptools,
  or aiohttp.web without httptools), so no generation is ever measured; asked to stream, it
  sends `STREAM_CHUNKS` chunks of one word each (each written on its own, as an engine
  writes tokens), usage when `stream_options.include_usage` asks, then `[DONE]`;
- the gateway: `api.app.create_app` under uvicorn, SQLite in a temporary folder, both
  slots on the stub;
- the bare proxies: a FastAPI app (no database) forwarding chat completions to the stub
  with httpx or aiohttp; a stream is relayed byte for byte (the least a Python proxy does).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import aiohttp
from fastapi import FastAPI, Request  # module level: the route's annotations must resolve

from bench.overhead_harness import (
    HOST,
    HTTP,
    LOOP,
    child_prologue,
    listen_and_report,
    new_loop,
    serve_asgi,
)
from twinloop.settings import EmbeddingSettings, EngineSettings, RagSettings, Settings

MODEL = "smollm2-135m-instruct"  # the gateway's default served name
ANSWER = "Paris."  # what the stub always answers
STREAM_CHUNKS = 64  # chunks in a streamed answer
# A streamed answer is prose (no digits: the output screen's slow path, which
# bench/safety_overhead.py measures, is text near digits).
_PROSE = ("the", "answer", "to", "your", "question", "is", "that", "refunds", "go", "back")
_STREAM = re.compile(rb'"stream"\s*:\s*true')
STUB_KIND = "raw asyncio + httptools" if HTTP == "httptools" else "aiohttp.web"


# -- the stub engine ------------------------------------------------------------------


def _http_response(status: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _stub_payloads() -> dict[tuple[str, str], dict[str, Any]]:
    created = int(time.time())
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    chat = {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }
    completion = {
        "id": "cmpl-stub",
        "object": "text_completion",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "text": f" {ANSWER}", "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }
    card = {"id": MODEL, "object": "model", "created": created, "owned_by": "vllm", "root": MODEL}
    return {
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/v1/completions"): completion,
        ("GET", "/health"): {},
        ("GET", "/v1/models"): {"object": "list", "data": [card]},
    }


def _stream_events(include_usage: bool) -> list[bytes]:
    """A streamed answer's server-sent events, as vLLM writes them."""
    created = int(time.time())
    events = []
    for i in range(STREAM_CHUNKS):
        last = i == STREAM_CHUNKS - 1
        chunk = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": ANSWER if last else f"{_PROSE[i % len(_PROSE)]} "},
                    "logprobs": None,
                    "finish_reason": "stop" if last else None,
                }
            ],
        }
        events.append(chunk)
    if include_usage:
        usage = {"prompt_tokens": 10, "completion_tokens": STREAM_CHUNKS, "total_tokens": 74}
        events.append({**events[0], "choices": [], "usage": usage})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def _chunked(events: list[bytes]) -> list[bytes]:
    """The events in HTTP/1.1 chunked transfer encoding, after the response head."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return [head, *(b"%x\r\n%s\r\n" % (len(e), e) for e in events), b"0\r\n\r\n"]


class _StubProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, pre-encoded replies; the request body is only searched for
    `"stream": true` (and `include_usage`)."""

    def __init__(
        self,
        replies: dict[tuple[bytes, bytes], bytes],
        not_found: bytes,
        streams: dict[bool, list[bytes]],
    ) -> None:
        import httptools

        self._replies = replies
        self._not_found = not_found
        self._streams = streams
        self._parser = httptools.HttpRequestParser(self)
        self._error = httptools.HttpParserError
        self._url = b""
        self._body = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._error:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0]
        body, self._url, self._body = self._body, b"", b""
        if self._transport is None:
            return
        if _STREAM.search(body):
            for part in self._streams[b"include_usage" in body]:
                self._transport.write(part)  # one write per event, as an engine sends tokens
        else:
            self._transport.write(
                self._replies.get((self._parser.get_method(), path), self._not_found)
            )
        if not self._parser.should_keep_alive():
            self._transport.close()


def serve_stub(conn: Connection, parent_pid: int) -> None:
    child_prologue(parent_pid)
    sock = listen_and_report(conn)
    payloads = _stub_payloads()
    if HTTP != "httptools":
        _serve_stub_aiohttp(sock, payloads)
        return
    replies = {
        (method.encode(), path.encode()): _http_response("200 OK", payload)
        for (method, path), payload in payloads.items()
    }
    not_found = _http_response("404 Not Found", {"error": "not found"})
    streams = {usage: _chunked(_stream_events(usage)) for usage in (False, True)}
    loop = new_loop()
    loop.run_until_complete(
        loop.create_server(lambda: _StubProtocol(replies, not_found, streams), sock=sock)
    )
    loop.run_forever()


def _serve_stub_aiohttp(
    sock: socket.socket, payloads: dict[tuple[str, str], dict[str, Any]]
) -> None:
    from aiohttp import web

    app = web.Application()
    streams = {usage: _stream_events(usage) for usage in (False, True)}
    for (method, path), payload in payloads.items():
        body = json.dumps(payload).encode()

        async def reply(
            request: web.Request, body: bytes = body
        ) -> web.Response | web.StreamResponse:
            sent = await request.read()
            if not _STREAM.search(sent):
                return web.Response(body=body, content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for event in streams[b"include_usage" in sent]:
                await response.write(event)
            await response.write_eof()
            return response

        app.router.add_route(method, path, reply)
    web.run_app(app, sock=sock, print=None, handle_signals=False, access_log=None)


# -- the gateway ----------------------------------------------------------------------


def gateway_settings(
    data_dir: Path,
    stub_port: int,
    chroma_port: int,
    database_url: str | None = None,
    embedding_backend: str = "auto",
) -> Settings:
    """The measured gateway's settings: both slots on the stub, its own Chroma server,
    SQLite in `data_dir` unless `database_url` says otherwise, the embedding model on
    `embedding_backend` (`embeddings.backend`)."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        # The gateway does not start without an admin token; the bench calls no admin route.
        admin_token=secrets.token_urlsafe(32),
        log_level="WARNING",
        engines=EngineSettings(blue_port=stub_port, green_port=stub_port, external=True),
        rag=RagSettings(chroma_port=chroma_port),
        # The embedding model's ONNX graph outlives the run's data directory: exported once
        # per machine, not at every start (bench/embeddings.py uses the same folder).
        embeddings=EmbeddingSettings(
            backend=embedding_backend,
            onnx_dir=Path(tempfile.gettempdir()) / "twinloop-bench-onnx",
        ),
    )


def serve_gateway(
    conn: Connection,
    parent_pid: int,
    stub_port: int,
    data_dir: str,
    chroma_port: int,
    database_url: str | None = None,
    workers: int = 1,
    embedding_backend: str = "auto",
) -> None:
    child_prologue(parent_pid)
    sock = listen_and_report(conn)
    from api.app import create_app
    from twinloop.db.migrate import upgrade

    settings = gateway_settings(
        Path(data_dir), stub_port, chroma_port, database_url, embedding_backend
    )
    upgrade(settings.sqlalchemy_url)
    if workers == 1:
        serve_asgi(create_app(settings), sock)
    else:
        _serve_workers(settings, workers, sock)


def _serve_workers(settings: Settings, workers: int, sock: socket.socket) -> None:
    """As `twinloop serve` runs them: uvicorn's supervisor, each worker building the gateway
    from the environment, metrics in multi-process mode."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    metrics = settings.data_dir / "prometheus-multiproc"
    metrics.mkdir(parents=True, exist_ok=True)
    assert settings.admin_token is not None and settings.database_url is not None
    os.environ.update(
        {
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "TWINLOOP_DATA_DIR": str(settings.data_dir),
            "TWINLOOP_DATABASE_URL": settings.database_url,
            "TWINLOOP_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
            "TWINLOOP_LOG_LEVEL": settings.log_level,
            "TWINLOOP_ENGINES__EXTERNAL": "true",
            "TWINLOOP_ENGINES__BLUE_PORT": str(settings.engines.blue_port),
            "TWINLOOP_ENGINES__GREEN_PORT": str(settings.engines.green_port),
            "TWINLOOP_RAG__CHROMA_PORT": str(settings.rag.chroma_port),
            "TWINLOOP_EMBEDDINGS__ONNX_DIR": str(settings.onnx_dir),
            "TWINLOOP_EMBEDDINGS__BACKEND": settings.embeddings.backend,
            "TWINLOOP_GATEWAY__WORKERS": str(workers),
        }
    )
    config = uvicorn.Config(
        "api.app:create_app", factory=True, workers=workers, loop=LOOP, http=HTTP,
        access_log=False, log_level="warning",
    )  # fmt: skip
    # multiprocessing gave this child a /dev/null stdin whose descriptor its own children do
    # not get; uvicorn hands the descriptor on when it has one.
    sys.stdin = None  # type: ignore[assignment]
    Multiprocess(config, sockets=[sock]).run()


# -- the bare proxies -----------------------------------------------------------------

Forward = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def serve_proxy(conn: Connection, parent_pid: int, stub_port: int, library: str) -> None:
    child_prologue(parent_pid)
    sock = listen_and_report(conn)
    serve_asgi(_proxy_app(f"http://{HOST}:{stub_port}", library), sock)


def _proxy_app(upstream: str, library: str) -> Any:
    """Per call, what the gateway's engine client does: JSON out, JSON back, a dict returned.
    A stream is relayed as the bytes come, nothing parsed. Every library with the stdlib's
    json, as aiohttp's `json=` does, so the rows differ by the HTTP alone."""
    import httpx
    from fastapi.responses import StreamingResponse

    url = f"{upstream}/v1/chat/completions"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if library == "httpx":
            # The same limits and timeouts as twinloop.runtime's engine client.
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            timeouts = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=10.0)
            async with httpx.AsyncClient(limits=limits, timeout=timeouts) as client:

                async def forward_httpx(body: dict[str, Any]) -> dict[str, Any]:
                    response = await client.post(url, json=body)
                    response.raise_for_status()
                    result: dict[str, Any] = response.json()
                    return result

                async def stream_httpx(body: dict[str, Any]) -> AsyncIterator[bytes]:
                    request = client.build_request("POST", url, json=body)
                    response = await client.send(request, stream=True)
                    try:
                        async for data in response.aiter_raw():
                            yield data
                    finally:
                        await response.aclose()

                app.state.forward = forward_httpx
                app.state.stream = stream_httpx
                yield
        elif library == "lean":
            from twinloop.engines.http import EngineTimeouts
            from twinloop.engines.lean_http import LeanEngineHttp

            # The gateway's default engine connections (twinloop/engines/lean_http.py).
            lean = LeanEngineHttp(timeouts=EngineTimeouts())

            async def forward_lean(body: dict[str, Any]) -> dict[str, Any]:
                reply = await lean.send("POST", url, json.dumps(body).encode())
                if reply.status >= 400:
                    raise RuntimeError(f"stub answered {reply.status}")
                result: dict[str, Any] = json.loads(reply.body)
                return result

            async def stream_lean(body: dict[str, Any]) -> AsyncIterator[bytes]:
                async with lean.stream(url, json.dumps(body).encode()) as stream:
                    async for data in stream.chunks():
                        yield data

            app.state.forward = forward_lean
            app.state.stream = stream_lean
            try:
                yield
            finally:
                await lean.aclose()
        else:
            connector = aiohttp.TCPConnector(limit=256)
            timeout = aiohttp.ClientTimeout(sock_connect=5.0, sock_read=300.0)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def forward_aiohttp(body: dict[str, Any]) -> dict[str, Any]:
                    async with session.post(url, json=body) as response:
                        response.raise_for_status()
                        result: dict[str, Any] = await response.json()
                        return result

                async def stream_aiohttp(body: dict[str, Any]) -> AsyncIterator[bytes]:
                    async with session.post(url, json=body) as response:
                        async for data in response.content.iter_any():
                            yield data

                app.state.forward = forward_aiohttp
                app.state.stream = stream_aiohttp
                yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> dict[str, Any] | StreamingResponse:
        body = await request.json()
        if body.get("stream"):
            return StreamingResponse(request.app.state.stream(body), media_type="text/event-stream")
        forward: Forward = request.app.state.forward
        return await forward(body)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
