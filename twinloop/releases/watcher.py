"""Keeps one gateway in step with the others and with its engines.

Every gateway polls the release generation (one indexed `max()` query), so a
swap made through any gateway is taken by all within one poll interval, on
SQLite and PostgreSQL alike. Less often it checks that each engine still
serves its snapshot's adapters, and loads them again into an engine that
restarted.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from twinloop.errors import TwinloopError
from twinloop.releases.service import ReleaseController
from twinloop.settings import Slot

log = structlog.get_logger(__name__)


async def watch_releases(
    controller: ReleaseController,
    *,
    poll_s: float,
    reconcile_s: float,
) -> None:
    next_reconcile = 0.0
    while True:
        try:
            if await controller.refresh():
                log.info("release taken from the database", generation=controller.state.generation)
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + reconcile_s
                await reconcile_engines(controller)
        except Exception as e:  # a bad poll must not end the watcher; the next one retries
            log.warning("release watch failed", error=f"{type(e).__name__}: {e}")
        await asyncio.sleep(poll_s)


async def reconcile_engines(controller: ReleaseController) -> None:
    for slot in Slot:
        try:
            loaded = await controller.reconcile(slot)
        except TwinloopError as e:
            log.warning("engine reconcile failed", slot=slot.value, error=e.message)
            continue
        if loaded:
            log.info("adapters loaded again", slot=slot.value, adapters=loaded)
