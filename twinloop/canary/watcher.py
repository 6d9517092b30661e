"""The gateway's evaluation loop: every period, decide on the running canary and act.

A canary request that fails in the engine wakes the loop at once (`CanaryService.wake`),
so a Shadow that breaks is judged on its failures as they come, not a period later: the
users who meet a broken Shadow are bounded by the evidence the error-SLO test needs, not
by the period. Each evaluation also reads the running canary from the database, so a
canary started or ended through another gateway reaches this one within a period.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from twinloop.canary.service import CanaryService

log = structlog.get_logger(__name__)


async def watch_canary(service: CanaryService, *, period_s: float) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.woken.wait(), timeout=period_s)
        service.woken.clear()
        try:
            await service.evaluate()
        except Exception as e:  # a bad evaluation must not end the loop; the next one retries
            log.warning("canary evaluation failed", error=f"{type(e).__name__}: {e}")
