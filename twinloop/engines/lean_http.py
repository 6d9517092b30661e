"""`LeanEngineHttp`: HTTP/1.1 to engines on asyncio protocols and httptools' response parser.

Why a client of our own: speaking to an engine is one kind of exchange, over and over (POST
a JSON body, read a JSON body or a stream of server-sent events), and a general client's
per-request machinery (aiohttp's request and response objects, its trace hooks, cookie
jar, header multidicts, timer contexts) was the gateway's largest single CPU cost in
`bench/gateway_overhead.py` (~19% of its CPU per request, py-spy). Measured on a 2-core
box against the bench's stub engine at 8 concurrent requests: `EngineClient.chat` on this
client 57-65 us of CPU per request, on aiohttp 153-159 us; a bare FastAPI proxy on it
(row proxy-lean) 309 us against 440 us on aiohttp (proxy-aiohttp), 1.47x the requests a
second (1.13x at one connection, 1.08x the events of a relayed stream). This client does
only what that exchange needs:

- keep-alive connections per origin, reused newest first; one idle longer than
  `_KEEPALIVE_S` (below uvicorn's 5 s, vLLM's server) is closed rather than reused, like
  aiohttp's `keepalive_timeout`;
- at most `limit` requests in flight; waiting longer than `pool_s` for a turn is
  `NotSentError`, like a refused connection;
- responses with a Content-Length or chunked (httptools decodes both);
- the read timeout bounds the silence between bytes (`EngineTimeouts.read_s`), checked by
  one timer per exchange that is re-armed only when it fires, not on every packet;
- a stream's bytes as they arrive, reading paused while more than `_HIGH_WATER` bytes wait
  for the relay; leaving a stream before its end closes the connection, which makes vLLM
  abort the generation;
- `https://` engines through the default TLS context.

Not handled, because engines never need it: proxies, redirects, cookies, request
streaming, `Expect: 100-continue`, HTTP/2. Failures map to the three errors of
`twinloop.engines.http` exactly as the aiohttp implementation maps them: nothing sent
(refused, unresolvable, no connection in time) is `NotSentError`; a timeout is `SlowError`;
a connection that failed once the request was written is `BrokenError`, never retried.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

from twinloop.engines.http import (
    BrokenError,
    ByteStream,
    EngineTimeouts,
    NotSentError,
    Reply,
    SlowError,
)

_KEEPALIVE_S = 4.0
_MAX_IDLE_PER_ORIGIN = 64
_HIGH_WATER = 256 * 1024  # bytes of a stream waiting for its reader before reading pauses


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port
    host_header: str
    path: str  # path and query, as the request line carries it


@lru_cache(maxsize=512)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotSentError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target((parts.scheme, parts.hostname, port), parts.netloc, path)


class _Exchange:
    """One response as it arrives: status, then body bytes, then its end (or an error)."""

    __slots__ = (
        "_connection",
        "_data",
        "_size",
        "_waiter",
        "complete",
        "error",
        "reason",
        "status",
    )

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.reason = ""
        self._data: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.error: Exception | None = None

    # -- fed by the connection -------------------------------------------------------

    def headers_done(self, status: int) -> None:
        self.status = status
        self._wake()

    def body(self, data: bytes) -> None:
        self._data.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER:
            self._connection.pause()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: Exception) -> None:
        if not self.complete and self.error is None:
            self.error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller ----------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def headers(self) -> None:
        while not self.status and self.error is None:
            await self._wait()
        if self.error is not None and not self.status:
            raise self.error

    async def readany(self) -> bytes:
        """What has arrived since the last call, in one piece; b"" at the end."""
        while not self._data and not self.complete and self.error is None:
            await self._wait()
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"".join(self._data)
            self._data.clear()
            self._size = 0
            self._connection.resume()
            return data
        if self.error is not None:
            raise self.error
        return b""

    async def read(self) -> bytes:
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the `on_*` methods as it parses."""

    def __init__(self, read_s: float) -> None:
        self._read_s = read_s
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._exchange: _Exchange | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._paused = False
        self.lost = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's does not subclass asyncio's classes.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._broken(BrokenError(f"engine sent a malformed response: {e}"))

    def eof_received(self) -> bool | None:
        return None  # closes the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_timer()
        if self._exchange is not None:
            reason = f": {exc}" if exc else ""
            self._exchange.fail(BrokenError(f"engine closed the connection{reason}"))

    # -- httptools callbacks ---------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        if self._exchange is not None:
            self._exchange.reason = status.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._exchange is not None:
            self._exchange.headers_done(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self._exchange is not None:
            self._exchange.body(body)

    def on_message_complete(self) -> None:
        self._stop_timer()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.finish()
        if not self._parser.should_keep_alive():
            self.close()

    # -- used by the pool --------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return not self.lost and self._exchange is None and self._transport is not None

    def start(self, request: bytes) -> _Exchange:
        assert self._transport is not None
        exchange = self._exchange = _Exchange(self)
        self._last_data = self._loop.time()
        self._timer = self._loop.call_at(self._last_data + self._read_s, self._check_silence)
        self._transport.write(request)
        return exchange

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        self.lost = True
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()

    def _check_silence(self) -> None:
        now = self._loop.time()
        if self._paused:  # the reader is behind, not the engine
            self._timer = self._loop.call_at(now + self._read_s, self._check_silence)
            return
        due = self._last_data + self._read_s
        if now < due:  # data came since the timer was set: wait on from the last of it
            self._timer = self._loop.call_at(due, self._check_silence)
            return
        self._timer = None
        self._broken(SlowError(f"engine sent nothing for {self._read_s:g} s"))

    def _broken(self, error: Exception) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.fail(error)
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _LeanStream:
    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange
        self.status = exchange.status

    async def read(self) -> bytes:
        return await self._exchange.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self._exchange.readany():
            yield data


class LeanEngineHttp:
    """Keep-alive connections per engine origin, made on first use (module docstring)."""

    def __init__(self, *, timeouts: EngineTimeouts, limit: int = 256) -> None:
        self._timeouts = timeouts
        self._slots: asyncio.Semaphore | None = None
        self._limit = limit
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout_s: float | None = None
    ) -> Reply:
        if timeout_s is None:
            return await self._send(method, url, body)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._send(method, url, body)
        except TimeoutError as e:
            raise SlowError(f"no reply within {timeout_s:g} s") from e

    async def _send(self, method: str, url: str, body: bytes | None) -> Reply:
        target = _target(url)
        await self._take_slot()
        try:
            connection = await self._connection(target)
            exchange = connection.start(_request(method, target, body))
            try:
                await exchange.headers()
                data = await exchange.read()
            except BaseException:
                self._discard(connection)
                raise
            self._release(target, connection)
            return Reply(exchange.status, data, exchange.reason)
        finally:
            self._give_slot()

    @asynccontextmanager
    async def stream(self, url: str, body: bytes) -> AsyncIterator[ByteStream]:
        target = _target(url)
        await self._take_slot()
        try:
            connection = await self._connection(target)
            exchange = connection.start(_request("POST", target, body))
            try:
                await exchange.headers()
                yield _LeanStream(exchange)
            except BaseException:
                self._discard(connection)
                raise
            if exchange.complete:
                self._release(target, connection)  # read to the end: kept for reuse
            else:
                self._discard(connection)  # closing it is what makes the engine stop generating
        finally:
            self._give_slot()

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    # -- the pool --------------------------------------------------------------------

    async def _take_slot(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns without suspending
            return
        try:
            async with asyncio.timeout(self._timeouts.pool_s):
                await self._slots.acquire()
        except TimeoutError as e:
            raise NotSentError(f"no connection free within {self._timeouts.pool_s:g} s") from e

    def _give_slot(self) -> None:
        assert self._slots is not None
        self._slots.release()

    async def _connection(self, target: _Target) -> _Connection:
        idle = self._idle.get(target.origin)
        if idle:
            oldest_usable = asyncio.get_running_loop().time() - _KEEPALIVE_S
            while idle:
                connection = idle.pop()
                if connection.reusable and connection.idle_since >= oldest_usable:
                    return connection
                self._discard(connection)
        return await self._connect(target)

    async def _connect(self, target: _Target) -> _Connection:
        scheme, host, port = target.origin
        loop = asyncio.get_running_loop()
        read_s = self._timeouts.read_s
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(self._timeouts.connect_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(read_s), host, port, ssl=tls
                )
        except TimeoutError as e:
            raise NotSentError(f"no connection to {host}:{port} within the timeout") from e
        except OSError as e:  # refused, unreachable, unresolvable, TLS handshake failed
            raise NotSentError(f"cannot connect to {host}:{port}: {e}") from e
        self._open.add(connection)
        return connection

    def _release(self, target: _Target, connection: _Connection) -> None:
        if not connection.reusable:
            self._discard(connection)
            return
        idle = self._idle.setdefault(target.origin, deque())
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            self._discard(connection)
            return
        # A reply that ended past the high-water mark, left unread, paused the reading.
        connection.resume()
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


def _request(method: str, target: _Target, body: bytes | None) -> bytes:
    head = f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"
    if body is None and method == "GET":
        return f"{head}\r\n".encode("latin-1")
    payload = body or b""
    head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode("latin-1") + payload
