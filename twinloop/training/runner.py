"""Run one training cycle step by step, resuming wherever a killed trainer left it.

Each step commits its results together with the next state, so the state on disk always
names the next thing to do:

* `collecting` / `cleaning`: nothing is committed until cleaning ends; start over.
* `training`: the cleaned items are recorded; train again (same items, same seed, same
  weights) and register the adapters with the move to `registered`.
* `registered`: the adapters are registered; make the shadow snapshot (once: its id is
  committed before staging) and stage it. Staging itself is the release controller's one
  atomic release write, so Shadow is either on the old snapshot or the new one — never
  half-staged.

A cycle that failed or was abandoned hands its new items back to `pending`, so the next
cycle learns them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.base import utcnow
from twinloop.db.models import Answer, Feedback, TrainingExample, TrainingRun, TrainingRunItem
from twinloop.db.session import SessionMaker
from twinloop.errors import TwinloopError
from twinloop.ingest import repository as ingest_repository
from twinloop.ingest.learning import fact_text
from twinloop.qa.corrections import CORRECTION, Correction
from twinloop.qa.schemas import QaReport
from twinloop.qa.suites import FEEDBACK, FORGETTING, GENERAL
from twinloop.registry.service import AdapterRegistry
from twinloop.releases import snapshots
from twinloop.releases.service import ReleaseController
from twinloop.training import cycles
from twinloop.training.cleaning.config import CleaningConfig
from twinloop.training.cleaning.examples import CandidateExample
from twinloop.training.cleaning.pipeline import clean
from twinloop.training.cycles import NEW, QUARANTINED, REPLAY, TrainingCycles
from twinloop.training.metrics import TrainerMetrics
from twinloop.training.replay import ReplayItem, domain_replay, replay_budget
from twinloop.training.schemas import CycleView

log = logging.getLogger(__name__)

ACTOR = "trainer"
PROGRESS_EVERY_S = 2.0
PENDING, ACCEPTED, RETIRED = "pending", "accepted", "retired"
QA_MADE_PREFIX = "qa-"

# (domain, step, total) as an adapter trains; called from the training thread.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainRequest:
    domain: str
    examples: Sequence[ReplayItem]  # new items and the domain's replay, trained with SFT
    out_dir: Path


@dataclass(frozen=True)
class TrainedAdapter:
    path: Path
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, Any]


class AdapterTrainer(Protocol):
    """Trains a cycle's adapters in one pass; blocking, so the runner calls it from a thread.

    Every adapter of the pass is guarded by the same `guard` (the base model's answers to the
    general prompts and to the QA suites' training-split questions, every domain's included),
    so each touched domain's own suite is part of what its adapter is kept close on.
    """

    def train(
        self,
        requests: Sequence[TrainRequest],
        guard: Sequence[ReplayItem],
        on_step: ProgressCallback,
    ) -> dict[str, TrainedAdapter]: ...

    def general_replay(self, extra_prompts: Sequence[str] = ()) -> list[ReplayItem]: ...


class QaGate(Protocol):
    """The QA dry run on Shadow (twinloop.qa.service.QaService)."""

    async def run(
        self, *, training_run_id: str | None = None, round_number: int | None = None
    ) -> QaReport: ...

    async def corrections(self, run_id: str, *, phrasings: int) -> list[Correction]: ...

    async def replay_questions(
        self, *, exclude: Sequence[str], only: Sequence[str] | None = None
    ) -> list[str]: ...


class FactSink(Protocol):
    """Where corrections become fact documents (twinloop.ingest.service.IngestService)."""

    async def add_facts(
        self, facts: Sequence[tuple[str, str, str]], *, actor: str
    ) -> str | None: ...


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
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cycles = cycles
        self._trainer = trainer
        self._registry = registry
        self._releases = releases
        self._metrics = metrics
        self._domains = tuple(domains)
        self._work_dir = work_dir
        self._replay_ratio = domain_replay_ratio
        self._max_attempts = max_attempts
        self._cleaning = cleaning or CleaningConfig()
        self._qa = qa
        self._facts = facts
        self._max_rounds = max_rounds
        self._phrasings = reinforcement_phrasings
        self._weak_factor = weak_spot_factor
        self._max_rejections = max_rejections

    async def run(self, cycle_id: str, on_progress: ProgressCallback | None = None) -> CycleView:
        """Drive a claimed cycle to a finished state; errors end it `failed`, never raise."""
        self._metrics.active_cycle.set(1)
        try:
            while True:
                view = await self._cycles.get(cycle_id)
                if view.state in cycles.FINISHED:
                    return view
                step = self._step_for(view.state)
                log.info("training cycle %s: %s", cycle_id, view.state)
                try:
                    await step(cycle_id, on_progress)
                except Exception as error:  # every failure is recorded on the cycle
                    message = error.message if isinstance(error, TwinloopError) else repr(error)
                    if not isinstance(error, TwinloopError):
                        log.exception("training cycle %s failed in %s", cycle_id, view.state)
                    await self._finish(cycle_id, cycles.FAILED, error=message)
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
        log.info("replay answers ready: %d in %.1f s", len(guard), time.perf_counter() - started)
        return len(guard)

    async def resume_interrupted(self, on_progress: ProgressCallback | None = None) -> list[str]:
        """Resume (or abandon, past `max_attempts`) the cycles a dead trainer left behind."""
        resumed = []
        for view in await self._cycles.interrupted():
            async with self._sessionmaker.begin() as session:
                run = await _run(session, view.id)
                run.attempts += 1
                run.owner = cycles.this_trainer()
                if run.state == cycles.CLEANING:
                    run.state = cycles.COLLECTING  # cleaning commits nothing until it ends
                too_many = run.attempts > self._max_attempts
            if too_many:
                await self._finish(
                    view.id,
                    cycles.ABANDONED,
                    error=f"interrupted in {view.state} {view.attempts} time(s); abandoned "
                    f"after {self._max_attempts} attempt(s)",
                )
                continue
            log.info("resuming training cycle %s from %s", view.id, view.state)
            await self.run(view.id, on_progress)
            resumed.append(view.id)
        return resumed

    def _step_for(self, state: str) -> Callable[[str, ProgressCallback | None], Awaitable[None]]:
        if state in (cycles.COLLECTING, cycles.CLEANING):
            return self._collect_and_clean
        if state == cycles.TRAINING:
            return self._train_and_register
        if state == cycles.REGISTERED:
            return self._stage
        if state == cycles.QA:
            return self._qa_round
        raise TwinloopError(f"a cycle in state {state!r} cannot be run; claim it first")

    # -- steps 1-2: collect and clean ---------------------------------------------------

    async def _collect_and_clean(self, cycle_id: str, _: ProgressCallback | None) -> None:
        started = time.perf_counter()
        await self._set_state(cycle_id, cycles.CLEANING)
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            pending = await _pending_candidates(session)
            result = await asyncio.to_thread(
                clean, [candidate for candidate, _ in pending], self._cleaning
            )
            rows = {candidate.id: row for candidate, row in pending}
            for kept in result.accepted:
                rows[kept.id].status, rows[kept.id].reject_reason = ACCEPTED, None
                session.add(_item(run.id, kept, NEW))
            for q in result.quarantined:
                rows[q.example.id].status, rows[q.example.id].reject_reason = QUARANTINED, q.reason
                session.add(_item(run.id, q.example, QUARANTINED, rule=q.rule, reason=q.reason))
            domains = sorted({kept.domain for kept in result.accepted})
            run.domains = domains
            run.item_counts = {"collected": len(pending), **result.counts}
            run.step_timings = {**run.step_timings, "clean": time.perf_counter() - started}
            run.state = cycles.TRAINING if domains else cycles.SKIPPED
            run.updated_at = utcnow()
            if not domains:
                run.finished_at = run.updated_at
                run.error = "nothing new to learn" if pending else "no pending items"
        self._count_cleaning(result.counts)
        self._metrics.step_seconds.labels("clean").observe(time.perf_counter() - started)
        if not domains:
            self._metrics.cycles.labels(cycles.SKIPPED).inc()

    def _count_cleaning(self, counts: dict[str, int]) -> None:
        self._metrics.items.labels("accepted").inc(counts.get("accepted", 0))
        for key, value in counts.items():
            if key.startswith("quarantine.") and value:
                self._metrics.items.labels(key.replace("quarantine.", "quarantined.")).inc(value)
            elif key.startswith("redacted.") and key != "redacted.examples" and value:
                self._metrics.redactions.labels(key.removeprefix("redacted.")).inc(value)

    # -- steps 3-5: mix, train, register ------------------------------------------------

    async def _train_and_register(
        self, cycle_id: str, on_progress: ProgressCallback | None
    ) -> None:
        started = time.perf_counter()
        async with self._sessionmaker() as session:
            new_items = await _live_items(session, cycle_id, NEW)
            by_domain: dict[str, list[ReplayItem]] = defaultdict(list)
            for item in new_items:
                by_domain[item.domain].append(
                    ReplayItem(item.question, item.answer, example_id=item.example_id)
                )
            this_cycle = {item.example_id for item in new_items}
            replay = {
                domain: await domain_replay(
                    session,
                    domain,
                    exclude=this_cycle,
                    limit=replay_budget(len(items), self._replay_ratio),
                )
                for domain, items in by_domain.items()
            }
        if not by_domain:
            await self._finish(cycle_id, cycles.SKIPPED, error="every item was deleted")
            return
        guard_started = time.perf_counter()
        taught = [i.question for items in by_domain.values() for i in items]
        extra = await self._qa.replay_questions(exclude=taught) if self._qa is not None else []
        guard = await asyncio.to_thread(self._trainer.general_replay, extra)
        sft, guard = await self._oversample_weak_spots(cycle_id, by_domain, guard, extra)
        replay_seconds = time.perf_counter() - guard_started
        requests = []
        for domain in sorted(by_domain):
            out_dir = self._work_dir / cycle_id / domain
            shutil.rmtree(out_dir, ignore_errors=True)
            examples = [*sft[domain], *replay[domain]]
            requests.append(TrainRequest(domain=domain, examples=examples, out_dir=out_dir))
        latest: dict[str, Any] = {}
        on_step = _step_reporter(latest, on_progress)
        writer = asyncio.create_task(self._persist_progress(cycle_id, latest))
        try:
            trained = await asyncio.to_thread(self._trainer.train, requests, guard, on_step)
        finally:
            writer.cancel()
        for request in requests:
            self._observe_training(request.domain, len(request.examples), trained[request.domain])
        train_seconds = time.perf_counter() - started - replay_seconds
        self._metrics.step_seconds.labels("replay").observe(replay_seconds)
        self._metrics.step_seconds.labels("train").observe(train_seconds)
        timings = {"replay": replay_seconds, "train": train_seconds}
        await self._register(cycle_id, by_domain, replay, trained, len(guard), timings)

    async def _oversample_weak_spots(
        self,
        cycle_id: str,
        by_domain: dict[str, list[ReplayItem]],
        guard: list[ReplayItem],
        extra: Sequence[str],
    ) -> tuple[dict[str, list[ReplayItem]], list[ReplayItem]]:
        """Weight what the last rejected cycle's QA found weak, `weak_spot_factor` times.

        Taught facts it did not learn (`feedback`): the new examples of those domains repeat
        in SFT. Skills it lost (any other category): those categories' training-split
        questions (and the general prompts, for `general` and `forgetting`) repeat in the KL
        guard. Bounded by the factor; recorded on the cycle as its `targets`, and logged.
        """
        async with self._sessionmaker() as session:
            rejected = await _last_rejected_before(session, cycle_id)
        weak = rejected.qa_rounds[-1].get("weak") if rejected and rejected.qa_rounds else None
        if rejected is None or not weak or self._weak_factor < 2 or self._qa is None:
            return by_domain, guard
        repeat = self._weak_factor - 1
        sft_domains = sorted(set(weak.get("feedback_domains", [])) & set(by_domain))
        lost = [c for c in weak.get("categories", []) if c != FEEDBACK]
        weighted = set(await self._qa.replay_questions(exclude=(), only=lost)) if lost else set()
        if {GENERAL, FORGETTING} & set(lost):
            suite_questions = set(extra)
            weighted |= {g.question for g in guard if g.question not in suite_questions}
        extra_guard = [g for g in guard if g.question in weighted] * repeat
        oversampled = {
            d: items + [i for i in items if i.example_id is not None] * repeat
            if d in sft_domains
            else items
            for d, items in by_domain.items()
        }
        targets = {
            "from_cycle": rejected.id,
            "categories": weak.get("categories", []),
            "factor": self._weak_factor,
            "sft_domains": sft_domains,
            "sft_repeated": sum(len(oversampled[d]) - len(by_domain[d]) for d in by_domain),
            "guard_categories": lost,
            "guard_repeated": len(extra_guard),
        }
        log.info("training cycle %s targets the weak spots of %s: %s", cycle_id,
                 targets["from_cycle"], targets)  # fmt: skip
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            run.targets = targets
        self._metrics.weak_spot_repeats.labels("sft").inc(targets["sft_repeated"])
        self._metrics.weak_spot_repeats.labels("guard").inc(len(extra_guard))
        return oversampled, [*guard, *extra_guard]

    def _observe_training(self, domain: str, examples: int, adapter: TrainedAdapter) -> None:
        self._metrics.loss.labels(domain).set(adapter.final_loss)
        if adapter.seconds > 0:
            rate = adapter.metrics.get("examples_seen", examples) / adapter.seconds
            self._metrics.examples_per_second.set(rate)

    async def _register(
        self,
        cycle_id: str,
        new: dict[str, list[ReplayItem]],
        replay: dict[str, list[ReplayItem]],
        trained: dict[str, TrainedAdapter],
        guard_size: int,
        timings: dict[str, float],
    ) -> None:
        started = time.perf_counter()
        await self._releases.refresh()  # the parent adapter is what Active serves now
        used = [i.example_id for items in (*new.values(), *replay.values()) for i in items]
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            deleted = await _deleted_among(session, [i for i in used if i])
            if deleted:
                abandon = f"item(s) {', '.join(sorted(deleted))} were deleted while training"
            else:
                abandon = ""
                active = self._releases.state.serving(self._releases.state.active_slot)
                for domain, adapter in sorted(trained.items()):
                    parent = active.adapters.get(domain)
                    version = await self._registry.register(
                        session,
                        source=adapter.path,
                        domain=domain,
                        parent_id=parent.id if parent else None,
                        training_run_id=cycle_id,
                        metrics={
                            **adapter.metrics,
                            "new_examples": len(new[domain]),
                            "replayed_examples": len(replay[domain]),
                            "general_replay": {"items": guard_size},
                        },
                    )
                    run.adapters = {**run.adapters, domain: version.id}
                    await _link_items(session, cycle_id, domain, new[domain], replay[domain],
                                      version.id)  # fmt: skip
                counts = Counter(run.item_counts)
                for domain in new:
                    counts[f"new.{domain}"] = len(new[domain])
                    counts[f"replay.{domain}"] = len(replay[domain])
                counts["general_replay"] = guard_size
                run.item_counts = dict(counts)
                run.step_timings = {
                    **run.step_timings,
                    **_of_round(
                        {**timings, "register": time.perf_counter() - started}, run.qa_rounds
                    ),
                }
                run.state, run.updated_at, run.progress = cycles.REGISTERED, utcnow(), {}
        if abandon:
            await self._finish(cycle_id, cycles.ABANDONED, error=abandon)
        else:
            self._metrics.step_seconds.labels("register").observe(time.perf_counter() - started)

    # -- steps 5-6: snapshot and stage --------------------------------------------------

    async def _stage(self, cycle_id: str, _: ProgressCallback | None) -> None:
        started = time.perf_counter()
        await self._releases.refresh()
        snapshot_id = await self._shadow_snapshot(cycle_id)
        state = self._releases.state
        if state.serving(state.shadow_slot).snapshot_id != snapshot_id:
            await self._releases.stage(
                snapshot_id, actor=ACTOR, reason=f"training cycle {cycle_id}"
            )
        seconds = time.perf_counter() - started
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            run.step_timings = {**run.step_timings, **_of_round({"stage": seconds}, run.qa_rounds)}
        self._metrics.step_seconds.labels("stage").observe(seconds)
        if self._qa is None:
            await self._finish(cycle_id, cycles.STAGED)
        else:
            await self._set_state(cycle_id, cycles.QA)

    # -- steps 7-8: QA dry run, corrections, another round --------------------------------

    async def _qa_round(self, cycle_id: str, _: ProgressCallback | None) -> None:
        """Gate the staged snapshot; a failure with rounds left retrains on corrections."""
        assert self._qa is not None
        started = time.perf_counter()
        view = await self._cycles.get(cycle_id)
        await self._check_shadow_serves(view)
        number = len(view.qa_rounds) + 1
        report = await self._qa.run(training_run_id=cycle_id, round_number=number)
        seconds = time.perf_counter() - started
        self._metrics.step_seconds.labels("qa").observe(seconds)
        entry = {
            "round": number,
            "qa_run_id": report.id,
            "snapshot_id": report.snapshot_id,
            "overall": report.overall,
            "passed": report.passed,
            "reasons": report.reasons,
        }
        if not report.passed:
            entry["weak"] = weak_spots(report)
        previous = view.qa_rounds[-1]["overall"] if view.qa_rounds else None
        outcome, why = cycles.TRAINING, None
        corrections: list[Correction] = []
        if report.passed:
            outcome = cycles.AWAITING_CANARY
        elif number >= self._max_rounds:
            outcome = cycles.REJECTED
            why = f"QA gate failed in round {number} of {self._max_rounds}: " + "; ".join(
                report.reasons
            )
        elif previous is not None and (report.overall or 0.0) <= previous:
            outcome = cycles.REJECTED
            why = (
                f"round {number} gained nothing (overall {report.overall} after {previous}): "
                + "; ".join(report.reasons)
            )
        else:
            made = await self._qa.corrections(report.id, phrasings=self._phrasings)
            corrections, facts = route_corrections(made, view.domains)
            if facts and self._facts is not None:
                await self._facts.add_facts(
                    [
                        (f"qa:{c.case_key}", c.domain, fact_text(c.question, c.answer))
                        for c in facts
                    ],
                    actor=ACTOR,
                )
            else:
                facts = []
            if not corrections and facts:
                outcome = cycles.QA  # the facts are live on Shadow at once: gate it again
            elif not corrections:
                outcome = cycles.REJECTED
                why = "QA gate failed and no training-split case failed to learn from: " + (
                    "; ".join(report.reasons)
                )
            entry["corrections"] = {
                "trained": len(corrections),
                "facts": len(facts),
                "dropped": sum(c not in corrections and c not in facts for c in made),
            }
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            run.qa_rounds = [*run.qa_rounds, entry]
            run.step_timings = {**run.step_timings, f"qa.{number}": seconds}
            if outcome in (cycles.TRAINING, cycles.QA):
                await _add_corrections(session, run, corrections, facts)
                run.state, run.updated_at = outcome, utcnow()
        if outcome not in (cycles.TRAINING, cycles.QA):
            await self._finish(cycle_id, outcome, error=why)

    async def _shadow_snapshot(self, cycle_id: str) -> str:
        """The cycle's snapshot: made once (its id committed), reused when resuming."""
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            if run.snapshot_id is not None:
                return run.snapshot_id
            state = self._releases.state
            parent = await snapshots.get_snapshot(
                session, state.serving(state.shadow_slot).snapshot_id
            )
            rag_versions = {
                domain: await ingest_repository.latest_rag_version(session, domain)
                for domain in self._domains
            }
            snapshot = await snapshots.create_snapshot(
                session,
                parent=parent,
                adapters=dict(run.adapters),
                domains=self._domains,
                actor=ACTOR,
                reason=f"training cycle {cycle_id}: new adapters for "
                + ", ".join(sorted(run.adapters)),
                rag_versions={d: v for d, v in rag_versions.items() if v},
            )
            run.snapshot_id = snapshot.id
            return snapshot.id

    async def _check_shadow_serves(self, view: CycleView) -> None:
        """QA must gate this cycle's adapters: Shadow may have moved on to a child snapshot
        (a document ingested since: same adapters, newer RAG), but not to other adapters."""
        await self._releases.refresh()
        state = self._releases.state
        serving = {d: ref.id for d, ref in state.serving(state.shadow_slot).adapters.items()}
        async with self._sessionmaker() as session:
            ours = await snapshots.get_snapshot(session, view.snapshot_id or "")
            expected = {d: a for d, a in ours.adapters.items() if a}
        if serving != expected:
            raise TwinloopError(
                f"Shadow no longer serves the adapters of cycle {view.id}'s snapshot "
                f"{view.snapshot_id} (someone staged another snapshot); it was not gated"
            )

    # -- bookkeeping --------------------------------------------------------------------

    async def _persist_progress(self, cycle_id: str, latest: dict[str, Any]) -> None:
        """Write the training step to the cycle now and then, for `GET /train/{id}`."""
        written = None
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            value = latest.get("value")
            if value is None or value == written:
                continue
            async with self._sessionmaker.begin() as session:
                run = await _run(session, cycle_id)
                run.progress, run.updated_at = value, utcnow()
            written = value

    async def _set_state(self, cycle_id: str, state: str) -> None:
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            run.state, run.updated_at = state, utcnow()

    async def _finish(self, cycle_id: str, state: str, *, error: str | None = None) -> None:
        async with self._sessionmaker.begin() as session:
            run = await _run(session, cycle_id)
            run.state, run.error = state, error
            run.updated_at = run.finished_at = utcnow()
            run.progress = {}
            if state in (cycles.FAILED, cycles.ABANDONED):
                await _hand_back(session, cycle_id)
            elif state == cycles.REJECTED:
                outcomes = await _hand_back_rejected(
                    session, cycle_id, error or "", self._max_rejections
                )
                for outcome, count in outcomes.items():
                    self._metrics.items.labels(outcome).inc(count)
        self._metrics.cycles.labels(state).inc()
        log.info("training cycle %s ended %s%s", cycle_id, state, f": {error}" if error else "")


def _of_round(timings: dict[str, float], qa_rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Step timings of a correction round carry its number (`train.2`); the first's do not."""
    if not qa_rounds:
        return timings
    return {f"{step}.{len(qa_rounds) + 1}": seconds for step, seconds in timings.items()}


def _step_reporter(
    latest: dict[str, Any], on_progress: ProgressCallback | None
) -> ProgressCallback:
    def report(domain: str, step: int, total: int) -> None:
        # Replaced whole, so the event loop never sees a half-updated dict.
        latest["value"] = {"domain": domain, "step": step, "total": total}
        if on_progress is not None:
            on_progress(domain, step, total)

    return report


async def _run(session: AsyncSession, cycle_id: str) -> TrainingRun:
    run = await session.get(TrainingRun, cycle_id)
    if run is None:
        raise TwinloopError(f"training cycle {cycle_id} does not exist", status_code=404)
    return run


async def _pending_candidates(
    session: AsyncSession,
) -> list[tuple[CandidateExample, TrainingExample]]:
    """Every pending, undeleted example, with who sent it (the source the caps balance)."""
    rows = await session.execute(
        select(TrainingExample, Answer.user_id)
        .outerjoin(Feedback, Feedback.id == TrainingExample.feedback_id)
        .outerjoin(Answer, Answer.id == Feedback.answer_id)
        .where(TrainingExample.status == PENDING, TrainingExample.deleted_at.is_(None))
        .order_by(TrainingExample.created_at, TrainingExample.id)
    )
    out = []
    for example, user_id in rows.all():
        # Feedback is balanced per user; examples sent as such count as one source.
        source = "ingest-examples" if example.feedback_id is None else f"user:{user_id or '-'}"
        candidate = CandidateExample(
            id=example.id,
            domain=example.domain,
            question=example.question,
            answer=example.answer,
            source=source,
            category=f"{example.domain}/{example.source}",
        )
        out.append((candidate, example))
    return out


def _item(
    run_id: str,
    example: CandidateExample,
    role: str,
    *,
    rule: str | None = None,
    reason: str | None = None,
) -> TrainingRunItem:
    return TrainingRunItem(
        run_id=run_id,
        example_id=example.id,
        domain=example.domain,
        role=role,
        rule=rule,
        reason=reason,
        question=example.question,
        answer=example.answer,
    )


async def _live_items(session: AsyncSession, cycle_id: str, role: str) -> list[TrainingRunItem]:
    rows = await session.execute(
        select(TrainingRunItem)
        .join(TrainingExample, TrainingExample.id == TrainingRunItem.example_id)
        .where(
            TrainingRunItem.run_id == cycle_id,
            TrainingRunItem.role == role,
            TrainingExample.deleted_at.is_(None),
        )
        .order_by(TrainingExample.created_at, TrainingExample.id)
    )
    return list(rows.scalars())


async def _deleted_among(session: AsyncSession, example_ids: list[str]) -> set[str]:
    if not example_ids:
        return set()
    rows = await session.execute(
        select(TrainingExample.id).where(
            TrainingExample.id.in_(example_ids), TrainingExample.deleted_at.is_not(None)
        )
    )
    return set(rows.scalars())


async def _link_items(
    session: AsyncSession,
    cycle_id: str,
    domain: str,
    new: list[ReplayItem],
    replay: list[ReplayItem],
    adapter_id: str,
) -> None:
    """Record that `adapter_id` learned from these items (the lineage)."""
    new_ids = [i.example_id for i in new]
    rows = await session.execute(
        select(TrainingRunItem).where(
            TrainingRunItem.run_id == cycle_id, TrainingRunItem.example_id.in_(new_ids)
        )
    )
    for row in rows.scalars():
        row.adapter_version_id = adapter_id
    replay_ids = [i.example_id for i in replay if i.example_id is not None]
    earlier = await session.execute(
        select(TrainingRunItem).where(
            TrainingRunItem.run_id == cycle_id, TrainingRunItem.example_id.in_(replay_ids)
        )
    )
    existing = {row.example_id: row for row in earlier.scalars()}
    for item in replay:
        if item.example_id is None:
            continue
        if item.example_id in existing:  # replayed in an earlier round of this cycle
            existing[item.example_id].adapter_version_id = adapter_id
            continue
        session.add(
            TrainingRunItem(
                run_id=cycle_id,
                example_id=item.example_id,
                domain=domain,
                role=REPLAY,
                question=item.question,
                answer=item.answer,
                adapter_version_id=adapter_id,
            )
        )
    await session.flush()


def route_corrections(
    corrections: Sequence[Correction], trained_domains: Sequence[str]
) -> tuple[list[Correction], list[Correction]]:
    """Split QA-made corrections into (to train on, to add as fact documents).

    Every explicit correction becomes a fact document (live on Shadow at once). It is also
    trained on only in a domain this cycle trains anyway (it has user data), where it joins
    examples that adapter learns from: a domain with no user data keeps its adapter (or
    none), since adapters trained from a handful of corrections damaged `law` and `fin`
    before. Reinforcements (what Active knew and Shadow lost) train in those domains too;
    elsewhere they are dropped, as this cycle did not change that domain's weights.
    """
    trained = [c for c in corrections if c.domain in trained_domains]
    facts = [c for c in corrections if c.kind == CORRECTION]
    return trained, facts


def weak_spots(report: QaReport) -> dict[str, Any]:
    """What a failed QA round found weak: categories that regressed, fell below a floor or
    lost more cases than they gained, and the domains of the taught facts it missed."""
    categories = {*report.regressed, *report.below_floor}
    for c in report.categories:
        if c.comparison is not None and c.comparison.losses > c.comparison.gains:
            categories.add(c.category)
    feedback_domains = {
        f.domain for f in report.failures if f.category == FEEDBACK and f.domain is not None
    }
    if FEEDBACK not in categories:
        feedback_domains = set()
    return {"categories": sorted(categories), "feedback_domains": sorted(feedback_domains)}


async def _last_rejected_before(session: AsyncSession, cycle_id: str) -> TrainingRun | None:
    """The latest finished cycle before this one, if it was rejected."""
    this = await _run(session, cycle_id)
    row = await session.execute(
        select(TrainingRun)
        .where(
            TrainingRun.id != cycle_id,
            TrainingRun.finished_at.is_not(None),
            TrainingRun.created_at <= this.created_at,
        )
        .order_by(TrainingRun.finished_at.desc())
        .limit(1)
    )
    last = row.scalars().first()
    return last if last is not None and last.state == cycles.REJECTED else None


async def _add_corrections(
    session: AsyncSession,
    run: TrainingRun,
    corrections: Sequence[Correction],
    facts: Sequence[Correction] = (),
) -> None:
    """The next round's extra examples, accepted and recorded as the cycle's new items."""
    for correction in corrections:
        example = TrainingExample(
            source=correction.kind,
            domain=correction.domain,
            question=correction.question,
            answer=correction.answer,
            status=ACCEPTED,
            content_sha256=hashlib.sha256(
                f"{correction.question}\x1f{correction.answer}".encode()
            ).hexdigest(),
        )
        session.add(example)
        await session.flush()
        session.add(
            TrainingRunItem(
                run_id=run.id,
                example_id=example.id,
                domain=correction.domain,
                role=NEW,
                question=correction.question,
                answer=correction.answer,
            )
        )
    counts = Counter(run.item_counts)
    for correction in corrections:
        counts[f"{correction.kind}.round{len(run.qa_rounds)}"] += 1
    if facts and not corrections:
        counts[f"qa-fact.round{len(run.qa_rounds)}"] += len(facts)
    run.item_counts = dict(counts)
    if corrections:  # a retraining round; facts alone are live on Shadow already
        run.adapters, run.snapshot_id = {}, None
    run.progress = {}
    await session.flush()


async def _hand_back(session: AsyncSession, cycle_id: str) -> None:
    """A cycle that did not finish gives its new items back to the next one."""
    for example in await _accepted_new_examples(session, cycle_id, untrained_only=True):
        example.status = PENDING


async def _accepted_new_examples(
    session: AsyncSession, cycle_id: str, *, untrained_only: bool
) -> list[TrainingExample]:
    """The cycle's new items still accepted (`untrained_only`: no adapter learned them yet)."""
    query = (
        select(TrainingExample)
        .join(TrainingRunItem, TrainingRunItem.example_id == TrainingExample.id)
        .where(
            TrainingRunItem.run_id == cycle_id,
            TrainingRunItem.role == NEW,
            TrainingExample.status == ACCEPTED,
        )
    )
    if untrained_only:
        query = query.where(TrainingRunItem.adapter_version_id.is_(None))
    return list((await session.execute(query)).scalars())


async def _hand_back_rejected(
    session: AsyncSession, cycle_id: str, reasons: str, max_rejections: int
) -> Counter[str]:
    """A rejected cycle's user items go back to pending with the gate's reasons, to be
    learned again (with its weak spots oversampled); after `max_rejections` rejections an
    item is quarantined instead, so one unlearnable item cannot block every cycle. Its
    QA-made examples retire: the next cycle's QA makes its own from its own failures."""
    outcomes: Counter[str] = Counter()
    for example in await _accepted_new_examples(session, cycle_id, untrained_only=False):
        if example.source.startswith(QA_MADE_PREFIX):
            example.status = RETIRED
            outcomes[RETIRED] += 1
            continue
        example.rejections += 1
        if example.rejections >= max_rejections:
            example.status = QUARANTINED
            example.reject_reason = (
                f"rejected by the QA gate in {example.rejections} cycles; last: {reasons}"
            )
            outcomes["quarantined.rejections"] += 1
        else:
            example.status = PENDING
            example.reject_reason = f"cycle {cycle_id} rejected: {reasons}"
            outcomes["handed_back"] += 1
    return outcomes
