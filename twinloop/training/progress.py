"""Where a training stands, written to its cycle now and then for `GET /train/{id}`.

The trainer reports each step from its thread; the latest report is kept in memory and a
task on the event loop writes it to the cycle's `progress` every `PROGRESS_EVERY_S`
seconds, only when it changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from twinloop.db.base import utcnow
from twinloop.db.session import SessionMaker
from twinloop.training import repository
from twinloop.training.protocols import ProgressCallback

PROGRESS_EVERY_S = 2.0


@asynccontextmanager
async def progress_written(
    sessionmaker: SessionMaker, cycle_id: str, on_progress: ProgressCallback | None
) -> AsyncIterator[ProgressCallback]:
    """A step reporter for the trainer that also calls `on_progress`; the cycle's progress
    is written while the block runs."""
    latest: dict[str, Any] = {}
    writer = asyncio.create_task(_persist_progress(sessionmaker, cycle_id, latest))
    try:
        yield _step_reporter(latest, on_progress)
    finally:
        writer.cancel()


async def _persist_progress(
    sessionmaker: SessionMaker, cycle_id: str, latest: dict[str, Any]
) -> None:
    written = None
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        value = latest.get("value")
        if value is None or value == written:
            continue
        async with sessionmaker.begin() as session:
            run = await repository.get_run(session, cycle_id)
            run.progress, run.updated_at = value, utcnow()
        written = value


def _step_reporter(
    latest: dict[str, Any], on_progress: ProgressCallback | None
) -> ProgressCallback:
    def report(domain: str, step: int, total: int) -> None:
        # Replaced whole, so the event loop never sees a half-updated dict.
        latest["value"] = {"domain": domain, "step": step, "total": total}
        if on_progress is not None:
            on_progress(domain, step, total)

    return report
