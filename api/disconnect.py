"""Cancel a request's work when its client goes away.

Starlette cancels a streaming response on disconnect by itself; a plain
response is computed to the end unless we watch. Cancelling the engine call
closes its upstream connection, and vLLM then aborts the generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

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


async def _watch(request: Request, task: asyncio.Task[object], gone: asyncio.Event) -> None:
    """Cancels `task` once the client has left (and says so in `gone`)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            task.cancel()
            return


async def cancel_on_disconnect(
    request: Request, work: Awaitable[T], *, route: str, metrics: Metrics
) -> T:
    """`work`'s result; cancelled, and `ClientDisconnectedError` raised, if the client leaves
    first. `work` runs in the request's own task, which a watcher started after
    `WATCH_AFTER_S` cancels on disconnect (as `asyncio.timeout` cancels on its deadline):
    no task of its own for the work, and none at all for a request answered sooner."""
    task = asyncio.current_task()
    if task is None:  # not in a task: nothing to cancel, so nothing to watch
        return await work
    gone = asyncio.Event()
    watcher: asyncio.Task[None] | None = None

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_watch(request, task, gone))

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        # Ours only if the watcher cancelled and nobody else did too (a shutdown's cancel
        # must still reach the task).
        if not gone.is_set() or task.uncancel() > 0:
            raise
        metrics.client_disconnects.labels(route).inc()
        raise ClientDisconnectedError("client disconnected; generation cancelled") from None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
