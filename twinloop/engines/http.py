"""The HTTP under the engine client: its interface, aiohttp's and httpx's implementations.

`EngineClient` speaks vLLM's API through `EngineHttp`: send a body and read the whole
reply, or open a stream and read its bytes as they come. The gateway's default is neither
implementation here but `twinloop.engines.lean_http.LeanEngineHttp`, which does only what
an engine exchange needs (its docstring has the figures). Here:

- `AiohttpEngineHttp` (`engines.http_client = "aiohttp"`). Measured side by side as bare
  FastAPI proxies in front of a stub engine (`bench/gateway_overhead.py`, rows
  proxy-aiohttp and proxy-httpx), aiohttp costs about a third of httpx's CPU per request
  (0.28-0.46 ms against 0.86-1.1 ms on a loaded 2-core box) and at 8 connections forwards
  3-4x the requests a second (1,700-2,300 against 460-540); a stream's bytes come with one
  read per network packet where httpx goes through h11's event machinery. A GPU replica
  serving thousands of tokens a second puts the gateway past the few hundred requests a
  second where that matters.
- `HttpxEngineHttp`, over an `httpx.AsyncClient`: unit tests put `httpx.MockTransport`
  (`twinloop.testing.engine.FakeEngine`) under it, and `engines.http_client = "httpx"`
  selects it in production.

Each turns its library's failures into the three this boundary distinguishes:
`NotSentError` (the request never reached the engine: safe to retry), `SlowError` (a
timeout) and `BrokenError` (the connection failed once the engine had the request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class EngineTimeouts:
    connect_s: float = 5.0
    # Long generations stream for minutes; this bounds the silence between bytes.
    read_s: float = 300.0
    write_s: float = 30.0
    pool_s: float = 10.0

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s
        )

    def to_aiohttp(self) -> aiohttp.ClientTimeout:
        # aiohttp's `connect` covers the wait for a pooled connection and the connect itself.
        return aiohttp.ClientTimeout(
            total=None,
            connect=self.pool_s + self.connect_s,
            sock_connect=self.connect_s,
            sock_read=self.read_s,
        )


class NotSentError(Exception):
    """The request did not reach the engine (refused, no connection in time)."""


class SlowError(Exception):
    """The engine did not answer, or stopped sending, within the timeout."""


class BrokenError(Exception):
    """The connection failed after the request was sent."""


@dataclass(frozen=True)
class Reply:
    """A whole reply: status, body bytes, the reason phrase."""

    status: int
    body: bytes
    reason: str


class ByteStream(Protocol):
    """A streamed reply: its status, then its body's bytes as they arrive."""

    status: int

    async def read(self) -> bytes:
        """The whole body (an error reply's)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes, as they arrive; ends with the body."""
        ...


class EngineHttp(Protocol):
    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout_s: float | None = None
    ) -> Reply: ...

    def stream(self, url: str, body: bytes) -> AbstractAsyncContextManager[ByteStream]:
        """POST `body` and read the reply as it comes. Leaving the block before the body
        ended closes the connection: vLLM aborts a generation whose client is gone."""
        ...

    async def aclose(self) -> None: ...


# -- aiohttp ----------------------------------------------------------------------------

# Refused, unresolvable, or no pooled connection in time: nothing reached the engine.
_AIOHTTP_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class AiohttpEngineHttp:
    """Keep-alive connections in one `aiohttp.ClientSession`, made on first use (a session
    belongs to the event loop that makes it)."""

    def __init__(
        self, *, timeouts: EngineTimeouts, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._timeouts = timeouts
        self._session = session
        self._owns_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=256,
                # Below uvicorn's 5 s keep-alive (vLLM's server): a connection the engine is
                # about to drop is not reused.
                keepalive_timeout=4.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeouts.to_aiohttp(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout_s: float | None = None
    ) -> Reply:
        options: dict[str, Any] = {"headers": JSON_HEADERS} if body else {}
        if timeout_s is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        with _aiohttp_errors():
            async with self._client().request(method, url, data=body, **options) as response:
                return Reply(response.status, await response.read(), response.reason or "")

    @asynccontextmanager
    async def stream(self, url: str, body: bytes) -> AsyncIterator[ByteStream]:
        with _aiohttp_errors():
            response = await self._client().post(url, data=body, headers=JSON_HEADERS)
        stream = _AiohttpStream(response)
        try:
            yield stream
        finally:
            if response.content.at_eof():
                response.release()  # read to the end: the connection is kept for reuse
            else:
                response.close()  # closing it is what makes the engine stop generating

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    async def read(self) -> bytes:
        with _aiohttp_errors():
            return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            # Whatever has arrived, in one piece: events that came together are relayed
            # together.
            with _aiohttp_errors():
                data = await content.readany()
            if not data:
                return
            yield data


@contextmanager
def _aiohttp_errors() -> Iterator[None]:
    try:
        yield
    except _AIOHTTP_NOT_SENT as e:
        raise NotSentError(str(e) or type(e).__name__) from e
    except (aiohttp.ServerTimeoutError, TimeoutError) as e:
        raise SlowError(str(e) or type(e).__name__) from e
    except aiohttp.ClientError as e:
        raise BrokenError(str(e) or type(e).__name__) from e


# -- httpx ------------------------------------------------------------------------------

_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class HttpxEngineHttp:
    """Over an `httpx.AsyncClient` (closed by whoever made it unless this made it)."""

    def __init__(
        self, *, timeouts: EngineTimeouts, client: httpx.AsyncClient | None = None
    ) -> None:
        self._owns_client = client is None
        self._http = client or httpx.AsyncClient(
            timeout=timeouts.to_httpx(),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout_s: float | None = None
    ) -> Reply:
        with _httpx_errors():
            response = await self._http.request(
                method,
                url,
                content=body,
                headers=JSON_HEADERS if body else None,
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        return Reply(response.status_code, response.content, response.reason_phrase)

    @asynccontextmanager
    async def stream(self, url: str, body: bytes) -> AsyncIterator[ByteStream]:
        request = self._http.build_request("POST", url, content=body, headers=JSON_HEADERS)
        with _httpx_errors():
            response = await self._http.send(request, stream=True)
        try:
            yield _HttpxStream(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()


class _HttpxStream:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    async def read(self) -> bytes:
        with _httpx_errors():
            return await self._response.aread()

    async def chunks(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for data in self._response.aiter_bytes():
                yield data


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except _HTTPX_NOT_SENT as e:
        raise NotSentError(str(e) or type(e).__name__) from e
    except httpx.TimeoutException as e:
        raise SlowError(str(e) or type(e).__name__) from e
    except httpx.TransportError as e:
        raise BrokenError(str(e) or type(e).__name__) from e
