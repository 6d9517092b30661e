"""Queries for snapshots and releases. Flushes, never commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AdapterVersion, AuditEntry, Release, Snapshot


async def latest_release(session: AsyncSession) -> Release | None:
    result = await session.execute(select(Release).order_by(Release.generation.desc()).limit(1))
    return result.scalar_one_or_none()


async def get_snapshot(session: AsyncSession, snapshot_id: str) -> Snapshot | None:
    return await session.get(Snapshot, snapshot_id)


async def adapter_names(session: AsyncSession, adapter_ids: list[str]) -> dict[str, str]:
    """Map adapter version ids to the names engines serve them under."""
    if not adapter_ids:
        return {}
    result = await session.execute(
        select(AdapterVersion.id, AdapterVersion.name).where(AdapterVersion.id.in_(adapter_ids))
    )
    return {row.id: row.name for row in result}


async def add(session: AsyncSession, *records: Snapshot | Release | AuditEntry) -> None:
    session.add_all(records)
    await session.flush()
