"""Queries for served answers. Flushes only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer

# One statement object for every batch: its cache key is computed once, not per commit.
_INSERT_ANSWERS = insert(Answer)


def insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert answers' rows (`AnswerRecord.row`) in one statement; the caller commits. Core,
    not the ORM's unit of work: nothing is read back, and a batch is one executemany. Synchronous:
    the answer writer's thread calls it (`twinloop.inference.writer`)."""
    connection.execute(_INSERT_ANSWERS, rows)


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
