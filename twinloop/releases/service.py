"""Release controller: owns the pointer to the release in force, and changes it.

Readers take `state` without a lock: it is one immutable object, replaced whole,
so a request that picked its target keeps it while a swap happens. Writers
(stage, swap, rollback, refresh) hold one lock, write one database transaction,
then flip the pointer. The unique release generation makes two gateways that
change the release at once collide instead of both winning. A swap or rollback names
the generation it changes, so the loser of such a race is refused, never retried: a
retry would swap back.

Shadow changes that are derived from what Shadow serves (ingest's new RAG versions, the
trainer's adapters, an operator's new snapshot or router rules) all go through
`change_shadow`: the new snapshot is derived under the lock from the release as the
database has it, and derived again from the winner's release when another process wins
the race, so no change is staged over one it never saw. The lock is per process; across
processes the unique generation is what serialises them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AuditEntry, Release, Snapshot
from twinloop.db.session import SessionMaker
from twinloop.engines.client import EngineClient
from twinloop.errors import EngineUnavailableError, NotFoundError
from twinloop.metrics import Metrics
from twinloop.registry.delivery import EngineAdapters
from twinloop.releases import repository
from twinloop.releases.errors import ReleaseConflictError, StagingError
from twinloop.releases.history import rollback_target
from twinloop.releases.inflight import InflightRequests
from twinloop.releases.state import (
    AdapterRef,
    ExpectedGeneration,
    ReleaseState,
    SlotSnapshot,
    Target,
)
from twinloop.routing.service import DEFAULT_RULES_VERSION
from twinloop.settings import Slot

SYSTEM_ACTOR = "system"

# derive(session, state) -> the id of the snapshot Shadow should serve, given `state`: a
# snapshot it made in `session` (committed before staging), or Shadow's own when nothing
# is to change.
DeriveSnapshot = Callable[[AsyncSession, ReleaseState], Awaitable[str]]


class _StaleStateError(Exception):
    """The release in memory is behind the database; caught inside this module only."""


DRAIN_TIMEOUT_S = 30.0
# Attempts of a Shadow change without an expected generation: each one after a lost race
# derives again from the winner's release, so retrying is safe; three losses in a row mean
# something keeps changing the release, and the caller hears of it.
SHADOW_CHANGE_ATTEMPTS = 3


class ReleaseController:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        engines: Mapping[str, EngineClient],
        adapters: EngineAdapters,
        metrics: Metrics,
        base_model_name: str,
        verified_for_s: float = 10.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._engines = engines
        self._adapters = adapters
        self._metrics = metrics
        self._base_model_name = base_model_name
        self._lock = asyncio.Lock()
        self._state: ReleaseState | None = None
        self.inflight = InflightRequests()
        # slot -> (adapter names its engine listed, when). A swap trusts a listing this
        # recent instead of asking an engine that may be busy generating; the watcher
        # renews it every reconcile interval.
        self._verified: dict[Slot, tuple[frozenset[str], float]] = {}
        self._verified_for_s = verified_for_s

    @property
    def state(self) -> ReleaseState:
        if self._state is None:
            raise RuntimeError("ReleaseController.load() has not run")
        return self._state

    def target(
        self, domain: str, *, slot: Slot | None = None, state: ReleaseState | None = None
    ) -> Target:
        """The engine model to ask for `domain` on `slot` (the active slot by default), in
        `state` (the release in force by default; QA pins the one it started on)."""
        state = state or self.state
        chosen = slot or state.active_slot
        serving = state.serving(chosen)
        adapter = serving.adapters.get(domain)
        return Target(
            slot=chosen,
            snapshot_id=serving.snapshot_id,
            model=adapter.name if adapter else self._base_model_name,
            adapter=adapter.name if adapter else None,
            rag_version=serving.rag_versions.get(domain, 0),
        )

    # -- reading the release ------------------------------------------------------

    async def load(self) -> ReleaseState:
        """Read the release in force, creating the first one (base model on both slots).

        Gateway workers (or replicas) starting at once on a new database may all try to
        create it: the unique generation lets one win, and the others read its release.
        """
        try:
            return await self._load()
        except IntegrityError:
            return await self._load()

    async def _load(self) -> ReleaseState:
        async with self._lock, self._sessionmaker.begin() as session:
            release = await repository.latest_release(session)
            if release is None:
                release = await self._initial_release(session)
            state = await self._state_of(session, release)
        return self._set(state)

    async def current_generation(self) -> int:
        """The generation in force in the database (what `"latest"` means when a change arrives)."""
        async with self._sessionmaker.begin() as session:
            return await repository.latest_generation(session)

    async def refresh(self) -> bool:
        """Take a release another gateway made; True when the pointer moved."""
        async with self._sessionmaker.begin() as session:
            generation = await repository.latest_generation(session)
        if generation == self.state.generation:
            return False
        async with self._lock, self._sessionmaker.begin() as session:
            release = await repository.latest_release(session)
            if release is None or release.generation == self.state.generation:
                return False
            self._set(await self._state_of(session, release))
            return True

    # -- changing the release -----------------------------------------------------

    async def stage(
        self, snapshot_id: str, *, actor: str, reason: str, expected_generation: int | None = None
    ) -> ReleaseState:
        """Load `snapshot_id`'s adapters into the shadow slot and make it the shadow's snapshot.

        With `expected_generation` (an operator's), refused unless the release is still there.
        """

        async def change() -> ReleaseState:
            return await self._stage(snapshot_id, actor=actor, reason=reason)

        return await self._change(change, expected_generation=expected_generation)

    async def change_shadow(
        self,
        derive: DeriveSnapshot,
        *,
        actor: str,
        reason: str,
        expected_generation: int | None = None,
    ) -> ReleaseState:
        """Stage the snapshot `derive` makes from the release as the database has it.

        The one way a snapshot derived from Shadow's (or Active's) is staged. `derive` runs
        under the lock, after catching up with the database, on that state, in a transaction
        committed before staging; it returns Shadow's snapshot id when there is nothing to
        change (no release is written then). When another process writes a release before
        this one is written, we catch up and call `derive` again on the winner's state: a
        snapshot derived from a release that is no longer in force is never staged (it
        stays in the database, unserved).

        With `expected_generation` (an operator's) it is derived on that generation and
        staged there, or refused (409) — never derived again on a newer one.
        """
        attempts = 0

        async def change() -> ReleaseState:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self._metrics.shadow_changes.labels("rederived").inc()
            state = self.state
            async with self._sessionmaker.begin() as session:
                snapshot_id = await derive(session, state)
            if snapshot_id == state.serving(state.shadow_slot).snapshot_id:
                self._metrics.shadow_changes.labels("unchanged").inc()
                return state
            changed = await self._stage(snapshot_id, actor=actor, reason=reason)
            self._metrics.shadow_changes.labels("staged").inc()
            return changed

        try:
            return await self._change(
                change,
                expected_generation=expected_generation,
                catch_up=True,
                attempts=SHADOW_CHANGE_ATTEMPTS,
            )
        except ReleaseConflictError:
            self._metrics.shadow_changes.labels("refused").inc()
            raise

    async def swap(
        self, *, actor: str, reason: str, expected_generation: ExpectedGeneration
    ) -> ReleaseState:
        """Make the shadow slot active. Requests already running finish where they started.

        Refused unless the release is still at `expected_generation` (`"latest"`: the one
        in force now) when the swap is written: two operators pressing "swap" at once must
        not swap there and back.
        """
        expected = await self._resolve(expected_generation)

        async def change() -> ReleaseState:
            return await self._swap(actor=actor, reason=reason, action="release.swap")

        return await self._change(change, expected_generation=expected)

    async def rollback(
        self,
        *,
        actor: str,
        reason: str,
        expected_generation: ExpectedGeneration,
        snapshot_id: str | None = None,
    ) -> ReleaseState:
        """Make the previous active snapshot (or `snapshot_id`) active again.

        The previous one is found in the history (`history.py`), skipping snapshots a
        rollback left. A pointer flip when the shadow slot still holds it; otherwise it is
        staged first. Refused, as a swap is, unless the release is at `expected_generation`.
        """
        expected = await self._resolve(expected_generation)

        async def change() -> ReleaseState:
            state = self.state
            target = snapshot_id or await self._rollback_target()
            if state.serving(state.active_slot).snapshot_id == target:
                raise ReleaseConflictError(f"snapshot {target} is already active")
            if state.slot_holding(target) != state.shadow_slot:
                await self._stage(target, actor=actor, reason=f"rollback: {reason}")
            return await self._swap(actor=actor, reason=reason, action="release.rollback")

        return await self._change(change, expected_generation=expected)

    async def reconcile(self, slot: Slot) -> list[str]:
        """Load any of the slot's adapters its engine lacks (an engine that restarted).

        Returns the names loaded.
        """
        loaded = await self._ensure_loaded(slot, self.state.serving(slot))
        if loaded:
            self._metrics.engine_reconciles.labels(slot.value).inc(len(loaded))
        return loaded

    # -- internals ----------------------------------------------------------------

    async def _resolve(self, expected: ExpectedGeneration) -> int:
        # "latest" is read as the request arrives, before it waits for the lock: a change
        # that lands while it waits makes it refuse instead of acting on what it never saw.
        return expected if isinstance(expected, int) else await self.current_generation()

    async def _change(
        self,
        change: Callable[[], Awaitable[ReleaseState]],
        *,
        expected_generation: int | None,
        catch_up: bool = False,
        attempts: int = 2,
    ) -> ReleaseState:
        """Run `change` under the lock on the state in memory, without reading the database
        first (unless `catch_up`: a change derived from the state reads it, one query): the
        watcher keeps the state fresh, and a stale state is caught by the unique generation
        when the change is written.

        With `expected_generation` (always for swap and rollback, an operator's choice for
        staging) the change is made on that generation or not at all: a caller that knows a
        newer one than this gateway makes us catch up first; one that lost a race to another
        gateway is refused, never retried. Without it (ingest's and the trainer's staging,
        which means the same on any generation) we catch up and try again, `attempts` in all
        (a derived change derives again: `change_shadow`).
        """
        async with self._lock:
            behind = expected_generation not in (None, self.state.generation)
            if catch_up or behind:
                await self._catch_up()
            if expected_generation is not None:
                self._check_generation(expected_generation)
                try:
                    return await change()
                except _StaleStateError as e:
                    await self._catch_up()
                    raise ReleaseConflictError(
                        "another gateway changed the release at the same moment: it is at "
                        f"generation {self.state.generation}, not {expected_generation}; look "
                        "at /status again before changing it"
                    ) from e
            for _ in range(attempts):
                try:
                    return await change()
                except _StaleStateError:
                    await self._catch_up()
        raise ReleaseConflictError(
            "another gateway changed the release at the same moment; look at /status and try again"
        )

    def _check_generation(self, expected: int) -> None:
        if expected != self.state.generation:
            raise ReleaseConflictError(
                f"the release is at generation {self.state.generation}, not {expected}; "
                "look at /status again before changing it"
            )

    # Below, callers hold the lock and have caught up with the database.

    async def _stage(self, snapshot_id: str, *, actor: str, reason: str) -> ReleaseState:
        async with self._sessionmaker.begin() as session:
            snapshot = await repository.get_snapshot(session, snapshot_id)
            if snapshot is None:
                raise NotFoundError(f"snapshot {snapshot_id} does not exist")
            serving = await self._slot_snapshot(session, snapshot)
            await _refuse_tainted(session, serving, "staged")
        shadow = self.state.shadow_slot
        started = time.perf_counter()
        await self._ensure_loaded(shadow, serving)
        previous = self.state.serving(shadow)

        state = await self._commit(
            active=self.state.active_slot,
            slots={**self.state.slots, shadow: serving},
            actor=actor,
            reason=reason,
            action="release.stage",
            target=snapshot_id,
            started=started,
        )
        await self._unload_stale(shadow, previous, keep=serving)
        return state

    async def _swap(self, *, actor: str, reason: str, action: str) -> ReleaseState:
        started = time.perf_counter()
        shadow = self.state.shadow_slot
        serving = self.state.serving(shadow)
        # An adapter may have been tainted since it was staged.
        if serving.adapters:
            async with self._sessionmaker.begin() as session:
                await _refuse_tainted(session, serving, "made active")
        # Never make active an engine that is down or cannot serve its snapshot. The health
        # check is asked every time: a fresh adapter listing says nothing of a later crash.
        if not await self._engines[shadow].health():
            raise EngineUnavailableError(
                f"the {shadow} engine does not answer its health check; it is not made "
                "active and the release is unchanged"
            )
        await self._ensure_loaded(shadow, serving, trust_recent=True)

        return await self._commit(
            active=shadow,
            slots=self.state.slots,
            actor=actor,
            reason=reason,
            action=action,
            target=self.state.serving(shadow).snapshot_id,
            started=started,
        )

    async def _commit(
        self,
        *,
        active: Slot,
        slots: dict[Slot, SlotSnapshot],
        actor: str,
        reason: str,
        action: str,
        target: str,
        started: float,
    ) -> ReleaseState:
        """Write the next release and its audit entry in one transaction, then flip.

        The new state is built from what is already in memory: a rollback that is a
        pointer flip costs two statements and a commit, nothing more.
        """
        # No read first: the caller caught up, and a release another gateway wrote since
        # takes the same generation, which the unique constraint turns into a conflict.
        try:
            async with self._sessionmaker.begin() as session:
                release = Release(
                    generation=self.state.generation + 1,
                    active_slot=active.value,
                    blue_snapshot_id=slots[Slot.BLUE].snapshot_id,
                    green_snapshot_id=slots[Slot.GREEN].snapshot_id,
                    actor=actor,
                    reason=reason,
                )
                audit = AuditEntry(
                    actor=actor,
                    action=action,
                    target=target,
                    reason=reason,
                    details={
                        "generation": release.generation,
                        "active_slot": active.value,
                        **{slot.value: held.snapshot_id for slot, held in slots.items()},
                    },
                )
                await repository.add(session, release, audit)
        except IntegrityError as e:
            raise _StaleStateError from e
        kind = action.removeprefix("release.")
        self._metrics.release_changes.labels(kind).observe(time.perf_counter() - started)
        # Only a committed release moves the pointer.
        return self._set(
            ReleaseState(generation=release.generation, active_slot=active, slots=dict(slots))
        )

    async def _rollback_target(self) -> str:
        state = self.state
        async with self._sessionmaker.begin() as session:
            found = await rollback_target(
                session,
                generation=state.generation,
                active=state.serving(state.active_slot).snapshot_id,
            )
        if found.snapshot_id is not None:
            return found.snapshot_id
        message = "there is no earlier active snapshot to roll back to"
        if found.skipped:
            message += (
                f" (a rollback left {', '.join(found.skipped)}; name one as `snapshot_id` to "
                "make it active again)"
            )
        raise ReleaseConflictError(message)

    async def _catch_up(self) -> None:
        """Under the lock: take the newest release before changing it."""
        async with self._sessionmaker.begin() as session:
            release = await repository.latest_release(session)
            if release is not None and release.generation != self.state.generation:
                self._set(await self._state_of(session, release))

    async def _ensure_loaded(
        self, slot: Slot, serving: SlotSnapshot, *, trust_recent: bool = False
    ) -> list[str]:
        if not serving.adapters:
            return []
        names, at = self._verified.get(slot, (frozenset(), 0.0))
        fresh = time.monotonic() - at < self._verified_for_s
        if trust_recent and fresh and serving.adapter_names <= names:
            return []
        engine = self._engines[slot]
        present = set(await engine.list_models())
        loaded: list[str] = []
        for adapter in serving.adapters.values():
            if adapter.name in present:
                continue
            # A copy that hashes to the registered sha256 is put where the engine reads, right
            # before loading: a changed file never reaches an engine.
            path = await self._adapters.path_for(slot, adapter.sha256)
            await engine.load_adapter(adapter.name, path)
            loaded.append(adapter.name)
        if loaded:
            present = set(await engine.list_models())
        self._verified[slot] = (frozenset(present), time.monotonic())
        missing = serving.adapter_names - present
        if missing:
            raise StagingError(
                f"the {slot} engine does not list {', '.join(sorted(missing))} after loading"
            )
        return loaded

    async def _unload_stale(self, slot: Slot, previous: SlotSnapshot, keep: SlotSnapshot) -> None:
        stale = previous.adapter_names - keep.adapter_names
        if not stale:
            return
        # Requests that started before the change may still use the old adapters.
        if not await self.inflight.drained(slot.value, DRAIN_TIMEOUT_S):
            return  # left loaded; the next stage on this slot tries again
        self._verified.pop(slot, None)
        for name in sorted(stale):
            await self._engines[slot].unload_adapter(name)

    async def _state_of(self, session: AsyncSession, release: Release) -> ReleaseState:
        slots: dict[Slot, SlotSnapshot] = {}
        for slot, snapshot_id in (
            (Slot.BLUE, release.blue_snapshot_id),
            (Slot.GREEN, release.green_snapshot_id),
        ):
            snapshot = await repository.get_snapshot(session, snapshot_id) if snapshot_id else None
            if snapshot is None:
                raise RuntimeError(f"release {release.generation} names no snapshot for {slot}")
            slots[slot] = await self._slot_snapshot(session, snapshot)
        return ReleaseState(
            generation=release.generation, active_slot=Slot(release.active_slot), slots=slots
        )

    def _set(self, state: ReleaseState) -> ReleaseState:
        self._state = state
        self._metrics.release_generation.set(state.generation)
        for slot in Slot:
            self._metrics.active_slot.labels(slot.value).set(int(slot is state.active_slot))
        return state

    async def _slot_snapshot(self, session: AsyncSession, snapshot: Snapshot) -> SlotSnapshot:
        ids = [a for a in snapshot.adapters.values() if a]
        rows = await repository.adapters_by_id(session, ids)
        return SlotSnapshot(
            snapshot_id=snapshot.id,
            base_model=snapshot.base_model,
            adapters={
                domain: AdapterRef(
                    id=rows[a].id, name=rows[a].name, path=rows[a].path, sha256=rows[a].sha256
                )
                for domain, a in snapshot.adapters.items()
                if a
            },
            rag_versions=dict(snapshot.rag_versions),
            router_rules_version=snapshot.router_rules_version,
        )

    async def _initial_release(self, session: AsyncSession) -> Release:
        snapshot = Snapshot(
            base_model=self._base_model_name,
            adapters={},
            rag_versions={},
            router_rules_version=DEFAULT_RULES_VERSION,
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


async def _refuse_tainted(session: AsyncSession, serving: SlotSnapshot, done: str) -> None:
    """A snapshot serving an adapter that learned from deleted data is never staged or made
    active, whichever way it is reached (named, inherited, restaged, swapped, rolled back to)."""
    tainted = await repository.tainted_among(session, [a.id for a in serving.adapters.values()])
    if tainted:
        named = "; ".join(
            f"{a.name} for {a.domain} ({a.tainted_reason or 'tainted'})" for a in tainted
        )
        raise ReleaseConflictError(
            f"snapshot {serving.snapshot_id} serves tainted adapters, so it is not {done}: "
            f"{named}. Make a snapshot without them (POST /snapshots with the domain set to "
            "another adapter or null)"
        )
