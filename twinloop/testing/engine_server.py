"""A handler written for `httpx.MockTransport` (`FakeEngine.handle`, or a test's own)
served over real HTTP on loopback, for the engine client's aiohttp connections.

The mock transport tests what the client does with replies; this serves the same replies
through a real socket, so the aiohttp side (pooling, streaming, timeouts, a closed stream
closing the connection) is tested against the real thing.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from aiohttp import web

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class ServedEngine:
    """What the server saw: the ports it listens on, connections opened, and the paths of
    streams whose client left before the end."""

    ports: list[int]
    aborted: list[str] = field(default_factory=list)
    _transports: set[int] = field(default_factory=set)

    @property
    def connections(self) -> int:
        """Connections that carried a request."""
        return len(self._transports)

    def url(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"


@asynccontextmanager
async def serve_over_http(handle: Handler, *, ports: int = 1) -> AsyncIterator[ServedEngine]:
    """Serve `handle` on `ports` free loopback ports until the block ends."""
    served = ServedEngine(ports=[])

    async def route(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        served._transports.add(id(request.transport))
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        mocked = httpx.Request(
            request.method,
            f"http://127.0.0.1:{port}{request.path_qs}",
            headers=list(request.headers.items()),
            content=body,
        )
        reply = handle(mocked)
        response = await reply if inspect.isawaitable(reply) else reply
        headers = {"Content-Type": response.headers.get("content-type", "application/json")}
        try:
            content = response.content
        except httpx.ResponseNotRead:
            return await _relay(request, response, headers, served)
        return web.Response(status=response.status_code, body=content, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sites = []
    for _ in range(ports):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sites.append(site)
        # aiohttp keeps the listening server (asyncio's or uvloop's) here.
        sockets: list[socket.socket] = getattr(site._server, "sockets", [])
        served.ports.append(sockets[0].getsockname()[1])
    try:
        yield served
    finally:
        await runner.cleanup()


async def _relay(
    request: web.Request,
    response: httpx.Response,
    headers: dict[str, str],
    served: ServedEngine,
) -> web.StreamResponse:
    """Write the handler's stream as it comes. The client leaving is recorded; the handler's
    stream failing drops the connection mid-body, as an engine that dies does."""
    stream = web.StreamResponse(status=response.status_code, headers=headers)
    await stream.prepare(request)
    parts = response.aiter_raw()
    while True:
        try:
            part = await anext(parts)
        except StopAsyncIteration:
            break
        except Exception:
            if request.transport is not None:
                request.transport.abort()
            raise
        try:
            await stream.write(part)
        except (ConnectionError, OSError):
            served.aborted.append(request.path)
            return stream
    await stream.write_eof()
    return stream
