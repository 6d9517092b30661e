"""Queries for ingested documents and idempotency keys. Flushes, never commits."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Document, IdempotencyKey


async def live_document(session: AsyncSession, external_id: str) -> Document | None:
    """The current version of a document (not removed), in any domain."""
    result = await session.execute(
        select(Document).where(
            Document.external_id == external_id, Document.removed_in_version.is_(None)
        )
    )
    return result.scalars().first()


async def latest_rag_version(session: AsyncSession, domain: str) -> int:
    added = select(func.max(Document.added_in_version)).where(Document.domain == domain)
    removed = select(func.max(Document.removed_in_version)).where(Document.domain == domain)
    values = [(await session.execute(q)).scalar_one_or_none() or 0 for q in (added, removed)]
    return max(values)


async def idempotency_key(session: AsyncSession, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, key)


async def add(session: AsyncSession, *records: Document | IdempotencyKey) -> None:
    session.add_all(records)
    await session.flush()
