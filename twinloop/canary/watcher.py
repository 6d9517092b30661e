"""The gateway's evaluation loop: every period, decide on the running canary and act.

Each evaluation also reads the running canary from the database, so a canary started or
ended through another gateway reaches this one's request path within a period.
"""

from __future__ import annotations

import asyncio

import structlog

from twinloop.canary.service import CanaryService

log = structlog.get_logger(__name__)


async def watch_canary(service: CanaryService, *, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        try:
            await service.evaluate()
        except Exception as e:  # a bad evaluation must not end the loop; the next one retries
            log.warning("canary evaluation failed", error=f"{type(e).__name__}: {e}")
