"""The QA dry run: ask Shadow (and, once per snapshot, Active) the suite, judge, gate, store.

A dry run has no side effects on production: it speaks to the slots' engines directly, so
no answer record, request metric or feedback attribution comes of it; its own records are
QA runs and items. It answers against the snapshots the slots served when it started
(`pinning`), so an ingest staged meanwhile does not fail it. How a slot is asked and
judged: `evaluation`; how verdicts become the report, its rows and metrics: `report`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.session import SessionMaker
from twinloop.engines.client import EngineClient
from twinloop.errors import NotFoundError, TwinloopError
from twinloop.inference.retrieval import DocumentSearch
from twinloop.qa import pinning, repository
from twinloop.qa.agreement import judge_agreement
from twinloop.qa.checks import CHECKS_VERSION
from twinloop.qa.corrections import Correction, corrections_from
from twinloop.qa.evaluation import Judged, SlotEvaluator
from twinloop.qa.gate import GateConfig
from twinloop.qa.judges import LlmJudge, ReferenceJudge, normalise
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.report import build_report, item_records, observe, report_of, run_record
from twinloop.qa.repository import BASELINE, CANDIDATE
from twinloop.qa.schemas import Agreement, QaReport, QaSummary
from twinloop.qa.suites import (
    QaCase,
    Suite,
    build_suite,
    load_shipped,
    screened_facts,
    taught_cases,
)
from twinloop.releases import snapshots
from twinloop.releases.service import ReleaseController
from twinloop.safety.screens import SafetyConfig
from twinloop.settings import QaSettings


class QaService:
    def __init__(
        self,
        *,
        engines: Mapping[str, EngineClient],
        releases: ReleaseController,
        sessionmaker: SessionMaker,
        knowledge: DocumentSearch | None,
        judge: ReferenceJudge,
        settings: QaSettings,
        domains: Sequence[str],
        default_domain: str,
        top_k: int,
        min_score: float,
        metrics: QaMetrics,
        llm_judge: LlmJudge | None = None,
        cleaning: CleaningConfig | None = None,
        safety: SafetyConfig | None = None,
    ) -> None:
        self._releases = releases
        self._cleaning = cleaning or CleaningConfig()
        self._sessionmaker = sessionmaker
        self._judge = judge
        self._settings = settings
        self._domains = list(domains)
        self._default_domain = default_domain
        self._metrics = metrics
        self._judge_name = "llm" if llm_judge is not None else "reference"
        t = judge.thresholds
        signature = (
            f"reference f1={t.f1} similarity={t.similarity} support={t.support} "
            f"checks={CHECKS_VERSION}"
        )
        if llm_judge is not None:
            signature += f"; llm {llm_judge.model}"
        self._judge_key = hashlib.sha256(signature.encode()).hexdigest()[:8]
        self._gate = GateConfig(
            min_overall=settings.min_overall,
            category_floor=settings.category_floor,
            max_regression=settings.max_regression,
            forgetting_tolerance=settings.forgetting_tolerance,
            confidence=settings.confidence,
            floors=MappingProxyType(dict(settings.category_floors)),
            tolerances=MappingProxyType(dict(settings.category_tolerances)),
        )
        self._evaluator = SlotEvaluator(
            engines=engines,
            releases=releases,
            knowledge=knowledge,
            judge=judge,
            llm_judge=llm_judge,
            settings=settings,
            top_k=top_k,
            min_score=min_score,
            safety=safety or SafetyConfig(),
        )

    async def _shipped(self) -> list[QaCase]:
        """The suite files' cases; read off the event loop (file I/O)."""
        return await asyncio.to_thread(
            load_shipped, self._settings.suite_dir, self._domains, self._default_domain
        )

    async def load_suite(self) -> Suite:
        shipped = await self._shipped()
        async with self._sessionmaker.begin() as session:
            facts = await repository.taught_facts(session)
            promoted = await repository.promoted_cases(session)
        taught = taught_cases(await asyncio.to_thread(screened_facts, facts, self._cleaning))
        suite = build_suite(shipped, taught, promoted)
        # Cached baselines are reused only when judged the same way as the candidate.
        return Suite(version=f"{suite.version}.{self._judge_key}", cases=suite.cases)

    async def run(
        self, *, training_run_id: str | None = None, round_number: int | None = None
    ) -> QaReport:
        """QA on the shadow slot now, gated against Active; stored and returned.

        Both slots are pinned at the start (`pinning`): the report is the pinned Shadow
        snapshot's, whatever Shadow serves by its end, unless its adapters were taken off.
        """
        started = time.perf_counter()
        await self._releases.refresh()
        state = self._releases.state
        shadow = pinning.pin(self._releases, state, state.shadow_slot, self._domains)
        active = pinning.pin(self._releases, state, state.active_slot, self._domains)
        suite = await self.load_suite()
        try:
            # Each slot's engine has its own cores: ask Active (when not cached) and Shadow
            # at the same time.
            async with asyncio.TaskGroup() as group:
                baseline_task = group.create_task(self._baseline(active, suite))
                shadow_task = group.create_task(
                    self._evaluator.evaluate(shadow.slot, shadow.targets, suite)
                )
            (baseline_run, baseline_labels), judged = baseline_task.result(), shadow_task.result()
            await pinning.check(self._releases, shadow)
            agreement = await self._agreement(suite)
        except* TwinloopError as failed:
            self._metrics.runs.labels("failed").inc()
            # An answer that failed because a pinned adapter was taken off the engine
            # mid-run is reported as that, not as the engine's "model not found".
            for pinned in (shadow, active):
                moved = await pinning.moved(self._releases, pinned)
                if moved is not None:
                    raise moved from failed.exceptions[0]
            raise failed.exceptions[0] from None
        report = build_report(
            suite,
            judged,
            baseline_labels,
            baseline_run,
            agreement,
            shadow.slot,
            shadow.targets,
            gate=self._gate,
            judge=self._judge_name,
        )
        report = report.model_copy(
            update={
                "training_run_id": training_run_id,
                "round": round_number,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        stored = await self._store(report, suite, judged, CANDIDATE)
        observe(self._metrics, stored)
        return stored

    async def get(self, run_id: str) -> QaReport:
        async with self._sessionmaker.begin() as session:
            run = await repository.get_run(session, run_id)
            if run is None:
                raise NotFoundError(f"QA run {run_id} does not exist")
            return report_of(run)

    async def recent(self, limit: int = 20) -> list[QaReport]:
        async with self._sessionmaker.begin() as session:
            return [report_of(r) for r in await repository.recent_candidates(session, limit)]

    async def summary(self) -> QaSummary | None:
        async with self._sessionmaker.begin() as session:
            run = await repository.latest_candidate(session)
            if run is None:
                return None
            report = report_of(run)
        return QaSummary(
            id=report.id,
            snapshot_id=report.snapshot_id,
            training_run_id=report.training_run_id,
            passed=report.passed,
            overall=report.overall,
            active_overall=report.active_overall,
            reasons=report.reasons,
            split_sizes={
                c.category: {"train": c.train, "heldout": c.heldout} for c in report.categories
            },
            category_scores={c.category: c.score for c in report.categories},
            judge_agreement=report.judge_agreement,
            created_at=report.created_at,
        )

    async def corrections(self, run_id: str, *, phrasings: int) -> list[Correction]:
        """Training examples from the failed training-split cases of candidate run `run_id`."""
        async with self._sessionmaker.begin() as session:
            run = await repository.get_run(session, run_id)
            if run is None:
                raise NotFoundError(f"QA run {run_id} does not exist")
            items = await repository.run_items(session, run_id)
            baseline = (
                await repository.run_items(session, run.baseline_run_id)
                if run.baseline_run_id
                else []
            )
        labels = {i.item_key: i.label for i in baseline}
        return corrections_from(items, labels, phrasings=phrasings)

    async def replay_questions(
        self, *, exclude: Sequence[str], only: Sequence[str] | None = None
    ) -> list[str]:
        """Training-split questions the trainer's KL guard may keep at the base model's answers.

        Never held-out ones (they decide promotion), never a category the base model is
        expected not to know (`qa.replay_exclude`: KL to its answers would fight the
        lesson), and never a question this cycle teaches. `only`: these categories' alone.
        """
        shipped = await self._shipped()
        taught = {normalise(q) for q in exclude}
        return [
            c.question
            for c in shipped
            if not c.gated
            and c.category not in self._settings.replay_exclude
            and (only is None or c.category in only)
            and normalise(c.question) not in taught
        ]

    async def snapshot_verdict(self, snapshot_id: str) -> QaReport | None:
        """The latest gated run on `snapshot_id`, or on the nearest ancestor serving the same
        adapters: a document ingested after a rejection makes a child snapshot that serves
        the rejected adapters all the same."""
        async with self._sessionmaker.begin() as session:
            async for snapshot in snapshots.same_adapter_lineage(session, snapshot_id):
                run = await repository.latest_candidate_for(session, snapshot.id)
                if run is not None:
                    return report_of(run)
        return None

    # -- the baseline -----------------------------------------------------------------

    async def _baseline(self, active: pinning.Pin, suite: Suite) -> tuple[QaReport, dict[str, str]]:
        """Active's labels for every case: computed once per snapshot and suite version."""
        async with self._sessionmaker.begin() as session:
            cached = await repository.cached_baseline(session, active.snapshot_id, suite.version)
            if cached is not None:
                items = await repository.run_items(session, cached.id)
                return report_of(cached), {i.item_key: i.label for i in items}
        started = time.perf_counter()
        judged = await self._evaluator.evaluate(active.slot, active.targets, suite)
        await pinning.check(self._releases, active)
        report = build_report(
            suite,
            judged,
            None,
            None,
            {},
            active.slot,
            active.targets,
            gate=self._gate,
            judge=self._judge_name,
        )
        report = report.model_copy(
            update={"seconds": round(time.perf_counter() - started, 2), "role": BASELINE}
        )
        stored = await self._store(report, suite, judged, BASELINE)
        return stored, {
            c.key: j.verdict.label.value for c, j in zip(suite.cases, judged, strict=True)
        }

    async def _agreement(self, suite: Suite) -> dict[str, Agreement]:
        async with self._sessionmaker.begin() as session:
            rated = await repository.rated_answers(session, self._settings.agreement_sample)
        return await asyncio.to_thread(judge_agreement, self._judge, suite, rated)

    async def _store(
        self, report: QaReport, suite: Suite, judged: Sequence[Judged], role: str
    ) -> QaReport:
        async with self._sessionmaker.begin() as session:
            run = run_record(report, suite, role)
            await repository.add_run(session, run, item_records(suite, judged))
            stored = report.model_copy(update={"id": run.id, "created_at": run.created_at})
            run.report = stored.model_dump(mode="json")
        return stored
