"""Cancel a request's work when its client goes away.

A response is computed to the end unless something watches the connection: cancelling the
engine call closes its upstream connection, and vLLM then aborts the generation.
`DisconnectWatch` watches for a block of a request's own task; `cancel_on_disconnect`
(a plain response's work) and `EventStreamResponse` (a stream) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from twinloop.errors import TwinloopError
from twinloop.metrics import Metrics

T = TypeVar("T")

WATCH_AFTER_S = 0.05
"""How long a request runs before its client is watched. What the watch is for, a
generation the client no longer waits for, takes far longer; a request answered within it
(a cached answer, a short one) pays a timer instead of a task (bench/gateway_overhead.py:
the watcher task was ~8% of a `/v1` request's gateway CPU). A client gone before the
watch starts is seen as soon as it does: its disconnect is already queued."""


class ClientDisconnectedError(TwinloopError):
    # 499 is nginx's "client closed request"; nobody reads it, but logs do.
    status_code = 499


class DisconnectWatch:
    """`with DisconnectWatch(receive):` the current task is cancelled once the client has
    left (watched from `WATCH_AFTER_S` on), as `asyncio.timeout` cancels at its deadline;
    that cancellation leaves the block as `ClientDisconnectedError`. No task of its own for
    the work, and none at all for a block done sooner. A class, not `@contextmanager`: it is
    entered on every answering request, and a generator, an event and a closure per
    request were ~5% of a cached answer's gateway CPU (bench/gateway_overhead.py)."""

    __slots__ = ("_gone", "_receive", "_task", "_timer", "_watcher")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._gone = False

    def __enter__(self) -> None:
        self._task = asyncio.current_task()
        if self._task is not None:  # not in a task: nothing to cancel, so nothing to watch
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(WATCH_AFTER_S, self._start_watching)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        # Ours only if the watcher cancelled and nobody else did too (a shutdown's cancel
        # must still reach the task).
        if kind is asyncio.CancelledError and self._gone:
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise ClientDisconnectedError("client disconnected; generation cancelled") from None

    def _start_watching(self) -> None:
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                assert self._task is not None
                self._task.cancel()
                return


async def cancel_on_disconnect(
    request: Request, work: Awaitable[T], *, route: str, metrics: Metrics
) -> T:
    """`work`'s result; cancelled, and `ClientDisconnectedError` raised, if the client leaves
    first (counted in `twinloop_client_disconnects_total`)."""
    try:
        with DisconnectWatch(request.receive):
            return await work
    except ClientDisconnectedError:
        metrics.client_disconnects.labels(route).inc()
        raise


class EventStreamResponse(StreamingResponse):
    """Server-sent events, ended when the client leaves (`DisconnectWatch`).

    Starlette's `StreamingResponse` watches the connection from a second task in an anyio
    task group for every stream, whose cancel scopes cost more than the watcher here
    (bench/gateway_overhead.py, streams). The body iterator is closed whatever ends the
    stream, so its `finally` runs now, not when it is collected.
    """

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with DisconnectWatch(receive):
                await self.stream_response(send)
        except ClientDisconnectedError:
            return  # nobody to send to; the body iterator saw the cancellation
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
