"""Queries for snapshots and releases. Flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AdapterVersion, AuditEntry, Release, Snapshot


async def latest_release(session: AsyncSession) -> Release | None:
    result = await session.execute(select(Release).order_by(Release.generation.desc()).limit(1))
    return result.scalar_one_or_none()


async def latest_generation(session: AsyncSession) -> int:
    result = await session.execute(select(func.max(Release.generation)))
    return result.scalar_one_or_none() or 0


async def releases_newest_first(session: AsyncSession, limit: int = 200) -> Sequence[Release]:
    result = await session.execute(select(Release).order_by(Release.generation.desc()).limit(limit))
    return result.scalars().all()


async def get_snapshot(session: AsyncSession, snapshot_id: str) -> Snapshot | None:
    return await session.get(Snapshot, snapshot_id)


async def list_snapshots(session: AsyncSession, limit: int = 100) -> Sequence[Snapshot]:
    result = await session.execute(
        select(Snapshot).order_by(Snapshot.created_at.desc()).limit(limit)
    )
    return result.scalars().all()


async def adapters_by_id(session: AsyncSession, ids: list[str]) -> dict[str, AdapterVersion]:
    if not ids:
        return {}
    result = await session.execute(select(AdapterVersion).where(AdapterVersion.id.in_(ids)))
    return {row.id: row for row in result.scalars()}


async def tainted_adapters(session: AsyncSession) -> Sequence[AdapterVersion]:
    result = await session.execute(
        select(AdapterVersion)
        .where(AdapterVersion.tainted.is_(True))
        .order_by(AdapterVersion.created_at.desc())
    )
    return result.scalars().all()


async def add(session: AsyncSession, *records: Snapshot | Release | AuditEntry) -> None:
    session.add_all(records)
    await session.flush()
