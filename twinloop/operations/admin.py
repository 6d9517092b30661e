"""What operators do to releases: look, make and stage snapshots, swap, roll back.

It reads every service (releases, routing, training, QA, the canary, answering's safety
layer), so it sits above all of them. New snapshots (`POST /snapshots`, router-rule
proposals) are derived inside `ReleaseController.change_shadow`, from the release in force
when they are staged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.canary.service import CanaryService
from twinloop.db.session import SessionMaker
from twinloop.engines.client import EngineClient
from twinloop.errors import TwinloopError
from twinloop.inference.service import AnswerService
from twinloop.operations.schemas import ArtifactsView, ReleaseStatus, SlotStatus, TaintedAdapter
from twinloop.qa.service import QaService
from twinloop.registry.delivery import EngineAdapters
from twinloop.releases import repository, snapshots
from twinloop.releases.errors import ReleaseConflictError
from twinloop.releases.schemas import (
    CreateSnapshotRequest,
    ProposalView,
    ProposeRulesRequest,
    ReleaseView,
    RollbackRequest,
    SnapshotView,
    SwapRequest,
)
from twinloop.releases.service import ReleaseController
from twinloop.releases.state import ReleaseState, SlotSnapshot
from twinloop.routing.service import RoutingService
from twinloop.settings import Slot
from twinloop.training.cycles import TrainingCycles


class ReleaseAdmin:
    def __init__(
        self,
        *,
        controller: ReleaseController,
        engines: Mapping[str, EngineClient],
        sessionmaker: SessionMaker,
        domains: Sequence[str],
        routing: RoutingService,
        training: TrainingCycles,
        qa: QaService | None = None,
        canary: CanaryService | None = None,
        adapters: EngineAdapters | None = None,
        answers: AnswerService | None = None,
    ) -> None:
        self._controller = controller
        self._engines = engines
        self._sessionmaker = sessionmaker
        self._domains = domains
        self._routing = routing
        self._training = training
        self._qa = qa
        self._canary = canary
        self._adapters = adapters
        self._answers = answers

    async def status(self) -> ReleaseStatus:
        state = self._controller.state
        slots = await asyncio.gather(*(self._slot_status(state, slot) for slot in Slot))
        async with self._sessionmaker.begin() as session:
            tainted = await repository.tainted_adapters(session)
        latest = await self._training.recent(limit=1)
        latest_qa = await self._qa.summary() if self._qa is not None else None
        canary = await self._canary.status() if self._canary is not None else None
        safety = await self._answers.safety_status() if self._answers is not None else None
        return ReleaseStatus(
            generation=state.generation,
            active_slot=state.active_slot.value,
            shadow_slot=state.shadow_slot.value,
            slots=list(slots),
            tainted_adapters=[
                TaintedAdapter(
                    id=a.id,
                    name=a.name,
                    domain=a.domain,
                    reason=a.tainted_reason,
                    serving_slots=[
                        slot.value for slot in Slot if a.id in _adapter_ids(state.serving(slot))
                    ],
                )
                for a in tainted
            ],
            latest_training_cycle=latest[0] if latest else None,
            latest_qa=latest_qa,
            canary=canary,
            artifacts=self._artifacts(),
            safety=safety,
            answer_cache=self._answers.cache_status() if self._answers is not None else None,
        )

    def _artifacts(self) -> ArtifactsView | None:
        if self._adapters is None:
            return None
        store = self._adapters.store
        return ArtifactsView(
            store=store.location, backend=store.kind, slots=self._adapters.describe()
        )

    async def list_snapshots(self, session: AsyncSession) -> list[SnapshotView]:
        rows = await repository.list_snapshots(session)
        return [SnapshotView.model_validate(row) for row in rows]

    async def create_and_stage(self, request: CreateSnapshotRequest, *, actor: str) -> SnapshotView:
        """Make a snapshot from the active one with the given adapters, and stage it to shadow.

        Its RAG versions are the newer of Active's and Shadow's per domain: documents an
        ingest has shown Shadow stay visible there.
        """
        reason = request.reason or "new snapshot"
        return await self._derive_and_stage(
            lambda state: state.serving(state.active_slot),
            actor=actor,
            reason=reason,
            snapshot_reason=reason,
            adapters=request.adapters,
            expected_generation=request.generation,
        )

    async def propose_router_rules(
        self, request: ProposeRulesRequest, *, actor: str
    ) -> ProposalView:
        """Test proposed rules; if they route no worse, stage them to Shadow in a new snapshot."""
        state = self._controller.state
        shadow = state.serving(state.shadow_slot)
        reason = request.reason or "router rules proposal"
        proposal = await self._routing.propose(
            request.rules,
            baseline_version=shadow.router_rules_version,
            actor=actor,
            reason=reason,
        )
        staged = await self._derive_and_stage(
            lambda state: state.serving(state.shadow_slot),
            actor=actor,
            reason=reason,
            snapshot_reason=f"{reason} (router rules version {proposal.version})",
            router_rules_version=proposal.version,
            expected_generation=request.generation,
        )
        return ProposalView(
            rules_version=proposal.version,
            accuracy=proposal.accuracy,
            baseline_rules_version=proposal.baseline_version,
            baseline_accuracy=proposal.baseline_accuracy,
            snapshot_id=staged.id,
        )

    async def _derive_and_stage(
        self,
        parent_of: Callable[[ReleaseState], SlotSnapshot],
        *,
        actor: str,
        reason: str,
        snapshot_reason: str,
        adapters: dict[str, str | None] | None = None,
        router_rules_version: int | None = None,
        expected_generation: int | None = None,
    ) -> SnapshotView:
        """A new snapshot from the slot `parent_of` picks, with the given changes, staged to
        the shadow slot. Derived under the release lock from the release in force (again
        from the winner's, when another process stages first and no generation was given)."""
        made: list[SnapshotView] = []

        async def derive(session: AsyncSession, state: ReleaseState) -> str:
            parent = await snapshots.get_snapshot(session, parent_of(state).snapshot_id)
            shadow = state.serving(state.shadow_slot)
            newer = {
                domain: version
                for domain, version in shadow.rag_versions.items()
                if domain in self._domains and version > parent.rag_versions.get(domain, 0)
            }
            snapshot = await snapshots.create_snapshot(
                session,
                parent=parent,
                adapters=adapters or {},
                domains=self._domains,
                actor=actor,
                reason=snapshot_reason,
                rag_versions=newer,
                router_rules_version=router_rules_version,
            )
            made.append(SnapshotView.model_validate(snapshot))
            return snapshot.id

        await self._controller.change_shadow(
            derive, actor=actor, reason=reason, expected_generation=expected_generation
        )
        return made[-1]

    async def stage(
        self, snapshot_id: str, *, actor: str, reason: str, expected_generation: int | None = None
    ) -> ReleaseView:
        started = time.perf_counter()
        state = await self._controller.stage(
            snapshot_id, actor=actor, reason=reason, expected_generation=expected_generation
        )
        return _view(state, started)

    async def swap(self, request: SwapRequest, *, actor: str) -> ReleaseView:
        started = time.perf_counter()
        if not request.force:
            await self._refuse_rejected()
        state = await self._controller.swap(
            actor=actor,
            reason=request.reason or "swap",
            expected_generation=request.generation,
        )
        return _view(state, started)

    async def rollback(self, request: RollbackRequest, *, actor: str) -> ReleaseView:
        started = time.perf_counter()
        state = await self._controller.rollback(
            actor=actor,
            reason=request.reason or "rollback",
            snapshot_id=request.snapshot_id,
            expected_generation=request.generation,
        )
        return _view(state, started)

    async def _refuse_rejected(self) -> None:
        """Never silently worse: a snapshot the QA gate rejected is not swapped in unasked."""
        if self._qa is None:
            return
        state = self._controller.state
        shadow = state.serving(state.shadow_slot).snapshot_id
        verdict = await self._qa.snapshot_verdict(shadow)
        if verdict is not None and verdict.passed is False:
            raise ReleaseConflictError(
                f"Shadow's snapshot {shadow} was rejected by QA run {verdict.id}: "
                + "; ".join(verdict.reasons)
                + ". Send `force: true` to swap it in anyway."
            )

    async def _slot_status(self, state: ReleaseState, slot: Slot) -> SlotStatus:
        serving = state.serving(slot)
        engine = self._engines[slot]
        try:
            models = await engine.list_models()
            healthy = True
        except TwinloopError:
            models, healthy = [], False
        return SlotStatus(
            slot=slot.value,
            role="active" if slot is state.active_slot else "shadow",
            snapshot_id=serving.snapshot_id,
            adapters={domain: ref.name for domain, ref in serving.adapters.items()},
            rag_versions=serving.rag_versions,
            router_rules_version=serving.router_rules_version,
            engine_healthy=healthy,
            engine_models=models,
            missing_adapters=sorted(serving.adapter_names - set(models)) if healthy else [],
            inflight=self._controller.inflight.count(slot.value),
        )


def _adapter_ids(serving: SlotSnapshot) -> set[str]:
    return {ref.id for ref in serving.adapters.values()}


def _view(state: ReleaseState, started: float) -> ReleaseView:
    return ReleaseView(
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        generation=state.generation,
        active_slot=state.active_slot.value,
        active_snapshot_id=state.serving(state.active_slot).snapshot_id,
        shadow_snapshot_id=state.serving(state.shadow_slot).snapshot_id,
    )
