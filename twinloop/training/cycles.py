"""Training cycles as the gateway sees them: ask for one, read one, trace an adapter.

A cycle is a persisted state machine (its states: `twinloop.states.CycleState`). It moves

    queued → collecting → cleaning → training → registered → qa → awaiting_canary
                                        ↑                    │
                                        └── corrections ─────┘ (a failed round, rounds left)

and ends `awaiting_canary` (the QA gate passed; the gateway's canary takes it from there:
`canary`, then `promoted`, `rolled_back` (its items handed back) or `inconclusive`, see
`twinloop.canary.service`), `rejected` (the gate failed in the last round, or a round
gained nothing), `skipped` (nothing new to learn), `abandoned` (interrupted too often, or
an item it learned from was deleted mid-cycle) or `failed` (an error, recorded). A runner
without QA ends at `staged`. Each transition is committed with the work of the step before
it, so a trainer killed anywhere finds the cycle in a state it can resume from. The trainer
process drives it (`twinloop.training.runner`); this module is what the gateway needs
(request, read, lineage) and never trains.
"""

from __future__ import annotations

import os
import socket

import psutil

from twinloop.db.base import utcnow
from twinloop.db.models import (
    AuditEntry,
    MinedSignal,
    TrainingExample,
    TrainingRun,
    TrainingRunItem,
)
from twinloop.db.session import SessionMaker
from twinloop.errors import NotFoundError, TwinloopError
from twinloop.mining.schemas import MinedEvidence
from twinloop.registry import repository as registry_repository
from twinloop.registry.schemas import AdapterView
from twinloop.states import CycleState, ItemRole
from twinloop.training import repository
from twinloop.training.overrides import TrainingOverrides
from twinloop.training.schemas import CycleView, LineageItem, LineageView


class CycleInProgressError(TwinloopError):
    """A cycle is already queued or running; one at a time keeps items from being taken twice."""

    status_code = 409

    def __init__(self, cycle_id: str, state: str) -> None:
        super().__init__(
            f"training cycle {cycle_id} is already {state}; follow it at /train/{cycle_id}"
        )
        self.cycle_id = cycle_id


def this_trainer() -> str:
    """The owner tag a trainer writes on the cycles it works on: host, pid and the process's
    start time, so that a restarted container's trainer (PID 1 again, same hostname) does
    not take the dead one's cycles for its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def owner_alive(owner: str | None) -> bool:
    """Whether the trainer that tagged a cycle still runs (only knowable on this host)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    # A tag without a start time (written before it had one): the pid alone must do.
    return not started or started == _started(int(pid))


def _started(pid: int) -> str:
    try:
        return str(int(psutil.Process(pid).create_time()))
    except psutil.Error:
        return ""


class TrainingCycles:
    def __init__(self, *, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker

    async def request(
        self,
        *,
        trigger: str,
        actor: str,
        claim: bool = False,
        overrides: TrainingOverrides | None = None,
        reason: str = "",
    ) -> CycleView:
        """Queue a cycle (or, with `claim`, take it at once for this process to run).

        Refuses while another cycle is queued or in progress, so no item is collected twice.
        `overrides` (an admin's, validated by their model) are recorded on the cycle and, with
        `reason`, in the audit log: a cycle that trained otherwise than the settings say is
        always traceable to who asked and why.
        """
        chosen = overrides.set_fields() if overrides is not None else {}
        async with self._sessionmaker.begin() as session:
            running = await repository.unfinished_run(session)
            if running is not None and (
                running.state == CycleState.QUEUED or owner_alive(running.owner)
            ):
                raise CycleInProgressError(running.id, running.state)
            run = TrainingRun(
                state=CycleState.COLLECTING if claim else CycleState.QUEUED,
                trigger=trigger,
                requested_by=actor,
                owner=this_trainer() if claim else None,
                attempts=1 if claim else 0,
                updated_at=utcnow(),
                overrides=chosen,
            )
            await repository.add(session, run)
            if chosen:
                audit = AuditEntry(
                    actor=actor,
                    action="train.overrides",
                    target=run.id,
                    reason=reason or None,
                    details={"overrides": chosen},
                )
                await repository.add(session, audit)
            return CycleView.model_validate(run)

    async def get(self, cycle_id: str) -> CycleView:
        async with self._sessionmaker.begin() as session:
            run = await repository.find_run(session, cycle_id)
            if run is None:
                raise NotFoundError(f"training cycle {cycle_id} does not exist")
            return CycleView.model_validate(run)

    async def recent(self, limit: int = 20) -> list[CycleView]:
        async with self._sessionmaker.begin() as session:
            return [
                CycleView.model_validate(r) for r in await repository.recent_runs(session, limit)
            ]

    async def claim(self, cycle_id: str) -> bool:
        """Take a queued cycle for this process; False if someone else took it first."""
        async with self._sessionmaker.begin() as session:
            return await repository.claim_queued(session, cycle_id, this_trainer())

    async def next_queued(self) -> str | None:
        async with self._sessionmaker.begin() as session:
            return await repository.next_queued_id(session)

    async def interrupted(self) -> list[CycleView]:
        """Cycles in progress whose trainer is gone (killed, crashed, machine restarted)."""
        async with self._sessionmaker.begin() as session:
            runs = await repository.runs_in_progress(session)
            return [CycleView.model_validate(r) for r in runs if not owner_alive(r.owner)]

    async def pending_items(self) -> int:
        """Training examples waiting for a cycle (what the schedule counts)."""
        async with self._sessionmaker.begin() as session:
            return await repository.count_pending(session)

    async def lineage(self, adapter_id: str) -> LineageView:
        """What trained `adapter_id` (and which adapter it grew from, if it did), and what its
        cycle quarantined in that domain, with why."""
        async with self._sessionmaker.begin() as session:
            adapter = await registry_repository.get(session, adapter_id)
            if adapter is None:
                raise NotFoundError(f"adapter version {adapter_id} does not exist")
            run = (
                await repository.find_run(session, adapter.training_run_id)
                if adapter.training_run_id
                else None
            )
            trained = await repository.items_trained_by(session, adapter.id)
            quarantined = (
                await repository.items_of_role(
                    session, run.id, ItemRole.QUARANTINED, adapter.domain
                )
                if run is not None
                else []
            )
            grown_from = (
                await registry_repository.get(session, adapter.grown_from_id)
                if adapter.grown_from_id
                else None
            )
            return LineageView(
                adapter=AdapterView.model_validate(adapter),
                grown_from=AdapterView.model_validate(grown_from) if grown_from else None,
                cycle=CycleView.model_validate(run) if run is not None else None,
                trained_on=[_lineage_item(*row) for row in trained],
                quarantined=[_lineage_item(*row) for row in quarantined],
                general_replay=dict(adapter.metrics.get("general_replay", {})),
            )


def _lineage_item(
    item: TrainingRunItem,
    example: TrainingExample,
    feedback_id: str | None,
    mined: MinedSignal | None,
) -> LineageItem:
    return LineageItem(
        example_id=example.id,
        external_id=example.external_id,
        feedback_id=feedback_id,
        source=example.source,
        domain=item.domain,
        role=item.role,
        question=item.question,
        answer=item.answer,
        rejected_answer=example.rejected_answer,
        rule=item.rule,
        reason=item.reason,
        deleted=example.deleted_at is not None,
        mined=MinedEvidence.model_validate(mined) if mined is not None else None,
    )
