"""Queries for API keys. Flushes only."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import ApiKey, AuditEntry


async def by_hash(session: AsyncSession, key_sha256: str) -> ApiKey | None:
    found = await session.execute(select(ApiKey).where(ApiKey.key_sha256 == key_sha256))
    return found.scalars().first()


async def get(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def all_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, revoked ones too, newest first."""
    found = await session.execute(
        select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list(found.scalars())


async def add(session: AsyncSession, *records: ApiKey | AuditEntry) -> None:
    session.add_all(records)
    await session.flush()
