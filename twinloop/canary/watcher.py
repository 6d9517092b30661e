"""The gateway's canary loop: follow the running canary, decide on it, act.

Every `refresh_s` it reads which canary runs (one indexed query), so a canary started or
aborted through another gateway reaches this one's request path within that; every
`period_s` it evaluates. A canary request that fails in the engine wakes it at once
(`CanaryService.woken`), so a Shadow that breaks is judged on its failures as they come:
the users who meet a broken Shadow are bounded by the evidence the error-SLO test needs,
not by the period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from twinloop.canary.service import CanaryService

log = structlog.get_logger(__name__)


async def watch_canary(service: CanaryService, *, period_s: float, refresh_s: float) -> None:
    next_evaluation = time.monotonic() + period_s
    while True:
        wait_s = max(0.0, min(refresh_s, next_evaluation - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.woken.wait(), timeout=wait_s)
        try:
            if service.woken.is_set() or time.monotonic() >= next_evaluation:
                service.woken.clear()
                next_evaluation = time.monotonic() + period_s
                await service.evaluate()
            else:
                await service.load()
        except Exception as e:  # a bad round must not end the loop; the next one retries
            log.warning("canary evaluation failed", error=f"{type(e).__name__}: {e}")
