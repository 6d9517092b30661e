"""Background tasks that ask the canary what Active was asked: bounded, never awaited by users.

A mirrored question starts after the user's answer is stored and runs on its own task, so
the user's request neither waits for it nor sees its result. At most `limit` run at once;
a mirror beyond that is skipped and counted (`twinloop_canary_mirrors_total{outcome="busy"}`)
rather than queued, so a slow Shadow cannot make mirrors pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from twinloop.metrics import Metrics

log = structlog.get_logger(__name__)


class MirrorTasks:
    def __init__(self, *, limit: int, metrics: Metrics) -> None:
        self._limit = limit
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def spawn(self, mirror: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start `mirror()` in the background unless `limit` already run; True if started."""
        if len(self._tasks) >= self._limit:
            self._metrics.canary_mirrors.labels("busy").inc()
            return False
        task = asyncio.create_task(self._guarded(mirror), name="canary-mirror")
        self._tasks.add(task)  # a reference, so that the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return True

    async def wait(self) -> None:
        """Until every mirror started so far has ended (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _guarded(mirror: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await mirror()
        except Exception as e:  # a mirror's bug must not surface as an unretrieved task error
            log.warning("mirror failed", error=f"{type(e).__name__}: {e}")
