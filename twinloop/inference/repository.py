"""Queries for served answers. Flushes only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer


async def add(session: AsyncSession, *records: Answer) -> None:
    session.add_all(records)
    await session.flush()


async def safety_flags_since(
    session: AsyncSession, since: datetime, *, limit: int
) -> list[list[dict[str, Any]]]:
    """The safety flags of the latest `limit` answers since `since` that have any."""
    rows = await session.execute(
        select(Answer.safety_flags)
        .where(Answer.created_at >= since, Answer.safety_flags.is_not(None))
        .order_by(Answer.created_at.desc())
        .limit(limit)
    )
    return [flags for flags in rows.scalars() if flags]
