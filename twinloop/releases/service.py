"""Release controller: owns the pointer to the release in force.

Readers take `state` without a lock: it is one immutable object, replaced whole,
so a request that picked its target keeps it while a swap happens.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AuditEntry, Release, Snapshot
from twinloop.db.session import SessionMaker
from twinloop.releases import repository
from twinloop.releases.state import ReleaseState, SlotSnapshot, Target
from twinloop.settings import Slot

SYSTEM_ACTOR = "system"


class ReleaseController:
    def __init__(self, *, sessionmaker: SessionMaker, base_model_name: str) -> None:
        self._sessionmaker = sessionmaker
        self._base_model_name = base_model_name
        self._lock = asyncio.Lock()
        self._state: ReleaseState | None = None

    @property
    def state(self) -> ReleaseState:
        if self._state is None:
            raise RuntimeError("ReleaseController.load() has not run")
        return self._state

    async def load(self) -> ReleaseState:
        """Read the release in force, creating the first one (base model on both slots)."""
        async with self._lock, self._sessionmaker.begin() as session:
            release = await repository.latest_release(session)
            if release is None:
                release = await self._initial_release(session)
            self._state = await self._state_of(session, release)
            return self._state

    def target(self, domain: str, *, slot: Slot | None = None) -> Target:
        """The engine model to ask for `domain` on `slot` (the active slot by default)."""
        state = self.state
        chosen = slot or state.active_slot
        serving = state.serving(chosen)
        adapter = serving.adapters.get(domain)
        return Target(
            slot=chosen,
            snapshot_id=serving.snapshot_id,
            model=adapter or self._base_model_name,
            adapter=adapter,
        )

    async def _initial_release(self, session: AsyncSession) -> Release:
        snapshot = Snapshot(
            base_model=self._base_model_name,
            adapters={},
            rag_versions={},
            created_by=SYSTEM_ACTOR,
            reason="first start: the base model on both slots",
        )
        await repository.add(session, snapshot)
        release = Release(
            generation=1,
            active_slot=Slot.BLUE.value,
            blue_snapshot_id=snapshot.id,
            green_snapshot_id=snapshot.id,
            actor=SYSTEM_ACTOR,
            reason="first start",
        )
        audit = AuditEntry(
            actor=SYSTEM_ACTOR, action="release.init", target=snapshot.id, reason=release.reason
        )
        await repository.add(session, release, audit)
        return release

    async def _state_of(self, session: AsyncSession, release: Release) -> ReleaseState:
        slots: dict[Slot, SlotSnapshot] = {}
        for slot, snapshot_id in (
            (Slot.BLUE, release.blue_snapshot_id),
            (Slot.GREEN, release.green_snapshot_id),
        ):
            snapshot = await repository.get_snapshot(session, snapshot_id) if snapshot_id else None
            if snapshot is None:
                raise RuntimeError(f"release {release.generation} names no snapshot for {slot}")
            ids = [a for a in snapshot.adapters.values() if a]
            names = await repository.adapter_names(session, ids)
            slots[slot] = SlotSnapshot(
                snapshot_id=snapshot.id,
                base_model=snapshot.base_model,
                adapters={d: names[a] for d, a in snapshot.adapters.items() if a},
            )
        return ReleaseState(
            generation=release.generation, active_slot=Slot(release.active_slot), slots=slots
        )
