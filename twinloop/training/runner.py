"""Run one training cycle step by step, resuming wherever a killed trainer left it.

The runner is the cycle's state machine: it reads the state on disk, runs the step that
state names (`twinloop.training.steps`) and loops until the cycle is finished. Each step
commits its results together with the next state, so the state on disk always names the
next thing to do:

* `collecting` / `cleaning`: nothing is committed until cleaning ends; start over.
* `training`: the cleaned items are recorded; train again (same items, same seed, same
  weights) and register the adapters with the move to `registered`.
* `registered`: the adapters are registered; make the shadow snapshot (once: its id is
  committed before staging) and stage it.
* `qa`: gate the staged snapshot; a failed round with rounds left goes back to `training`.

A cycle that failed or was abandoned hands its new items back to `pending`, so the next
cycle learns them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.session import SessionMaker
from twinloop.errors import TwinloopError
from twinloop.mining.service import MiningService
from twinloop.registry.service import AdapterRegistry
from twinloop.releases.service import ReleaseController
from twinloop.states import FINISHED, CycleState
from twinloop.training import repository
from twinloop.training.cycles import TrainingCycles, this_trainer
from twinloop.training.metrics import TrainerMetrics
from twinloop.training.protocols import AdapterTrainer, FactSink, ProgressCallback, QaGate
from twinloop.training.schemas import CycleView
from twinloop.training.steps.collect import collect_and_clean
from twinloop.training.steps.context import CycleContext, Step
from twinloop.training.steps.finish import finish
from twinloop.training.steps.qa_round import qa_round
from twinloop.training.steps.stage import stage
from twinloop.training.steps.train import train_and_register

log = structlog.get_logger(__name__)

STEPS: dict[str, Step] = {
    CycleState.COLLECTING: collect_and_clean,
    CycleState.CLEANING: collect_and_clean,
    CycleState.TRAINING: train_and_register,
    CycleState.REGISTERED: stage,
    CycleState.QA: qa_round,
}


class CycleRunner:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        cycles: TrainingCycles,
        trainer: AdapterTrainer,
        registry: AdapterRegistry,
        releases: ReleaseController,
        metrics: TrainerMetrics,
        domains: Sequence[str],
        work_dir: Path,
        domain_replay_ratio: float,
        max_attempts: int,
        cleaning: CleaningConfig | None = None,
        qa: QaGate | None = None,
        facts: FactSink | None = None,
        max_rounds: int = 1,
        reinforcement_phrasings: int = 3,
        weak_spot_factor: int = 2,
        max_rejections: int = 3,
        miner: MiningService | None = None,
        preference: bool = True,
        preference_heldout_fraction: float = 0.25,
        continual: bool = False,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cycles = cycles
        self._trainer = trainer
        self._releases = releases
        self._metrics = metrics
        self._qa = qa
        self._max_attempts = max_attempts
        self._ctx = CycleContext(
            sessionmaker=sessionmaker,
            trainer=trainer,
            registry=registry,
            releases=releases,
            metrics=metrics,
            domains=tuple(domains),
            work_dir=work_dir,
            replay_ratio=domain_replay_ratio,
            cleaning=cleaning or CleaningConfig(),
            qa=qa,
            facts=facts,
            max_rounds=max_rounds,
            phrasings=reinforcement_phrasings,
            weak_factor=weak_spot_factor,
            max_rejections=max_rejections,
            miner=miner,
            preference=preference,
            preference_heldout_fraction=preference_heldout_fraction,
            continual=continual,
        )

    async def run(self, cycle_id: str, on_progress: ProgressCallback | None = None) -> CycleView:
        """Drive a claimed cycle to a finished state; errors end it `failed`, never raise."""
        self._metrics.active_cycle.set(1)
        try:
            while True:
                view = await self._cycles.get(cycle_id)
                if view.state in FINISHED:
                    return view
                step = _step_for(view.state)
                log.info("training_cycle_step", cycle_id=cycle_id, state=view.state)
                try:
                    ending = await step(self._ctx, cycle_id, on_progress)
                    if ending is not None:
                        await finish(self._ctx, cycle_id, ending.state, error=ending.error)
                except Exception as error:  # every failure is recorded on the cycle
                    message = error.message if isinstance(error, TwinloopError) else repr(error)
                    if not isinstance(error, TwinloopError):
                        log.exception("training_cycle_failed", cycle_id=cycle_id, state=view.state)
                    await finish(self._ctx, cycle_id, CycleState.FAILED, error=message)
        finally:
            self._metrics.active_cycle.set(0)

    async def warm_replay(self) -> int:
        """Generate the base model's replay answers now, before any cycle needs them.

        On a fresh install they take minutes of CPU; a trainer that starts with the service
        has them cached by the time the first feedback is in. Returns the guard's size.
        """
        extra = await self._qa.replay_questions(exclude=()) if self._qa is not None else []
        started = time.perf_counter()
        guard = await asyncio.to_thread(self._trainer.general_replay, extra)
        log.info(
            "replay_answers_ready",
            items=len(guard),
            seconds=round(time.perf_counter() - started, 1),
        )
        return len(guard)

    async def resume_interrupted(self, on_progress: ProgressCallback | None = None) -> list[str]:
        """Resume (or abandon, past `max_attempts`) the cycles a dead trainer left behind."""
        resumed = []
        for view in await self._cycles.interrupted():
            async with self._sessionmaker.begin() as session:
                run = await repository.get_run(session, view.id)
                run.attempts += 1
                run.owner = this_trainer()
                if run.state == CycleState.CLEANING:
                    run.state = CycleState.COLLECTING  # cleaning commits nothing until it ends
                too_many = run.attempts > self._max_attempts
            if too_many:
                await finish(
                    self._ctx,
                    view.id,
                    CycleState.ABANDONED,
                    error=f"interrupted in {view.state} {view.attempts} time(s); abandoned "
                    f"after {self._max_attempts} attempt(s)",
                )
                continue
            log.info("training_cycle_resumed", cycle_id=view.id, state=view.state)
            await self.run(view.id, on_progress)
            resumed.append(view.id)
        return resumed


def _step_for(state: str) -> Step:
    step = STEPS.get(state)
    if step is None:
        raise TwinloopError(f"a cycle in state {state!r} cannot be run; claim it first")
    return step
