"""Queries for snapshots and releases. Flushes, never commits."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AdapterVersion, AuditEntry, Release, Snapshot
from twinloop.settings import Slot

ROLLBACK_ACTION = "release.rollback"

# The snapshot a release makes active, as SQL.
_ACTIVE_SNAPSHOT = case(
    (Release.active_slot == Slot.BLUE.value, Release.blue_snapshot_id),
    else_=Release.green_snapshot_id,
)


async def latest_release(session: AsyncSession) -> Release | None:
    result = await session.execute(select(Release).order_by(Release.generation.desc()).limit(1))
    return result.scalar_one_or_none()


async def latest_generation(session: AsyncSession) -> int:
    result = await session.execute(select(func.max(Release.generation)))
    return result.scalar_one_or_none() or 0


async def newest_active_before(
    session: AsyncSession, generation: int, *, excluding: Collection[str]
) -> tuple[int, str] | None:
    """The newest release before `generation` whose active snapshot is not in `excluding`:
    (its generation, that snapshot)."""
    result = await session.execute(
        select(Release.generation, _ACTIVE_SNAPSHOT)
        .where(Release.generation < generation, _ACTIVE_SNAPSHOT.not_in(excluding))
        .order_by(Release.generation.desc())
        .limit(1)
    )
    row = result.first()
    return (row[0], row[1]) if row is not None else None


async def is_rollback(session: AsyncSession, generation: int) -> bool:
    """Whether the release at `generation` was written by a rollback (its audit entry says)."""
    result = await session.execute(
        select(AuditEntry.id)
        .where(
            AuditEntry.action == ROLLBACK_ACTION,
            AuditEntry.details["generation"].as_integer() == generation,
        )
        .limit(1)
    )
    return result.first() is not None


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


async def tainted_among(session: AsyncSession, ids: Collection[str]) -> Sequence[AdapterVersion]:
    if not ids:
        return []
    result = await session.execute(
        select(AdapterVersion)
        .where(AdapterVersion.id.in_(ids), AdapterVersion.tainted.is_(True))
        .order_by(AdapterVersion.domain)
    )
    return result.scalars().all()


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
