"""Cancel a request's work when its client goes away.

A response is computed to the end unless something watches the connection: cancelling the
engine call closes its upstream connection, and vLLM then aborts the generation.
`disconnect_cancels` watches for a block of a request's own task; `cancel_on_disconnect`
(a plain response's work) and `EventStreamResponse` (a stream) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Iterator
from contextlib import contextmanager
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


async def _watch(receive: Receive, task: asyncio.Task[object], gone: asyncio.Event) -> None:
    """Cancels `task` once the client has left (and says so in `gone`)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            task.cancel()
            return


@contextmanager
def disconnect_cancels(receive: Receive) -> Iterator[None]:
    """Inside the block, the current task is cancelled once the client has left (watched
    from `WATCH_AFTER_S` on), as `asyncio.timeout` cancels at its deadline; that
    cancellation leaves the block as `ClientDisconnectedError`. No task of its own for the
    work, and none at all for a block done sooner."""
    task = asyncio.current_task()
    if task is None:  # not in a task: nothing to cancel, so nothing to watch
        yield
        return
    gone = asyncio.Event()
    watcher: asyncio.Task[None] | None = None

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_watch(receive, task, gone))

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        yield
    except asyncio.CancelledError:
        # Ours only if the watcher cancelled and nobody else did too (a shutdown's cancel
        # must still reach the task).
        if not gone.is_set() or task.uncancel() > 0:
            raise
        raise ClientDisconnectedError("client disconnected; generation cancelled") from None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def cancel_on_disconnect(
    request: Request, work: Awaitable[T], *, route: str, metrics: Metrics
) -> T:
    """`work`'s result; cancelled, and `ClientDisconnectedError` raised, if the client leaves
    first (counted in `twinloop_client_disconnects_total`)."""
    try:
        with disconnect_cancels(request.receive):
            return await work
    except ClientDisconnectedError:
        metrics.client_disconnects.labels(route).inc()
        raise


class EventStreamResponse(StreamingResponse):
    """Server-sent events, ended when the client leaves (`disconnect_cancels`).

    Starlette's `StreamingResponse` watches the connection from a second task in an anyio
    task group for every stream, whose cancel scopes cost more than the watcher here
    (bench/gateway_overhead.py, streams). The body iterator is closed whatever ends the
    stream, so its `finally` runs now, not when it is collected.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterable[bytes]) -> None:
        super().__init__(content)
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with disconnect_cancels(receive):
                await self.stream_response(send)
        except ClientDisconnectedError:
            return  # nobody to send to; the body iterator saw the cancellation
        finally:
            close = getattr(self._content, "aclose", None)
            if close is not None:
                await close()
