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


class ClientDisconnectedError(TwinloopError):
    # 499 is nginx's "client closed request"; nobody reads it, but logs do.
    status_code = 499


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(
    request: Request, work: Awaitable[T], *, route: str, metrics: Metrics
) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    metrics.client_disconnects.labels(route).inc()
    raise ClientDisconnectedError("client disconnected; generation cancelled")
