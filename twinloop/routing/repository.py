"""Queries for router rules versions. Flushes only."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import RouterRulesVersion


async def get(session: AsyncSession, version: int) -> RouterRulesVersion | None:
    return await session.get(RouterRulesVersion, version)


async def latest_version(session: AsyncSession) -> int:
    """The highest rules version recorded, 0 when there is none."""
    result = await session.execute(select(func.max(RouterRulesVersion.version)))
    return result.scalar_one_or_none() or 0


async def add(session: AsyncSession, *records: RouterRulesVersion) -> None:
    session.add_all(records)
    await session.flush()
