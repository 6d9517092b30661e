"""What a rollback without a named snapshot goes back to, read from the release history.

The target is the newest snapshot that was active before the one in force, skipping any
that a rollback left: undoing goes back one activation at a time and never forward again,
so a second plain rollback after the first does not bring the bad snapshot back. Found by
query over the whole history (one indexed query per snapshot skipped), however many
releases staging has written since.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.releases import repository


@dataclass(frozen=True)
class RollbackTarget:
    snapshot_id: str | None
    # Earlier active snapshots passed over because a rollback left them, newest first.
    skipped: tuple[str, ...] = ()


async def rollback_target(session: AsyncSession, *, generation: int, active: str) -> RollbackTarget:
    """The snapshot a plain rollback from the release at `generation` (serving `active`) makes
    active again; `snapshot_id` None when there is none."""
    skipped: list[str] = []
    while True:
        found = await repository.newest_active_before(
            session, generation, excluding=[active, *skipped]
        )
        if found is None:
            return RollbackTarget(None, tuple(skipped))
        last_active, snapshot_id = found
        # The release after a snapshot's last active one is the change that left it.
        if not await repository.is_rollback(session, last_active + 1):
            return RollbackTarget(snapshot_id, tuple(skipped))
        skipped.append(snapshot_id)
