"""Queries for served answers. Flushes only."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer


async def add(session: AsyncSession, *records: Answer) -> None:
    session.add_all(records)
    await session.flush()
