"""The QA dry run: ask Shadow (and, once per snapshot, Active) the suite, judge, gate, store.

A dry run has no side effects on production: it speaks to the slots' engines directly, so
no answer record, request metric or feedback attribution comes of it; its own records are
QA runs and items. Each case is answered the way `/answer` would answer it on that slot
(the domain's adapter, retrieval at the snapshot's pinned RAG version) and, when retrieval
found something, once more without it, so the report can tell what retrieval contributes
from what the weights know.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from twinloop.db.base import utcnow
from twinloop.db.models import QaItem, QaRun, Snapshot
from twinloop.db.session import SessionMaker
from twinloop.engines.client import EngineClient
from twinloop.errors import NotFoundError, TwinloopError
from twinloop.inference.adapter_retry import chat_with_adapter_retry
from twinloop.inference.retrieval import DocumentSearch, relevant_contexts, with_contexts
from twinloop.qa import repository
from twinloop.qa.agreement import judge_agreement
from twinloop.qa.corrections import Correction, corrections_from
from twinloop.qa.gate import GateConfig, Pair, PairedTest, decide, scores_from
from twinloop.qa.judges import Label, LlmJudge, ReferenceJudge, Verdict, normalise
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.repository import BASELINE, CANDIDATE, FINISHED
from twinloop.qa.schemas import (
    Agreement,
    CategoryReport,
    FailedCase,
    PairedComparison,
    QaReport,
    QaSummary,
)
from twinloop.qa.suites import QaCase, Suite, build_suite, load_shipped, taught_cases
from twinloop.releases.service import ReleaseController
from twinloop.releases.state import Target
from twinloop.settings import QaSettings, Slot

MAX_FAILURES_REPORTED = 50


class QaError(TwinloopError):
    status_code = 409


@dataclass(frozen=True)
class Answered:
    answer: str
    contexts: list[str]
    answer_without: str | None  # asked again without retrieval; None when nothing was found
    latency_ms: float


@dataclass(frozen=True)
class Judged:
    answered: Answered
    verdict: Verdict
    without: Verdict  # the verdict without retrieval (the same one when nothing was found)


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
    ) -> None:
        self._engines = engines
        self._releases = releases
        self._sessionmaker = sessionmaker
        self._knowledge = knowledge
        self._judge = judge
        self._settings = settings
        self._domains = list(domains)
        self._default_domain = default_domain
        self._top_k = top_k
        self._min_score = min_score
        self._metrics = metrics
        self._llm_judge = llm_judge
        t = judge.thresholds
        signature = f"reference f1={t.f1} similarity={t.similarity} support={t.support}"
        if llm_judge is not None:
            signature += f"; llm {llm_judge.model}"
        self._judge_key = hashlib.sha256(signature.encode()).hexdigest()[:8]
        self._gate = GateConfig(
            min_overall=settings.min_overall,
            category_floor=settings.category_floor,
            max_regression=settings.max_regression,
            forgetting_tolerance=settings.forgetting_tolerance,
            confidence=settings.confidence,
        )

    async def _shipped(self) -> list[QaCase]:
        """The suite files' cases; read off the event loop (file I/O)."""
        return await asyncio.to_thread(
            load_shipped, self._settings.suite_dir, self._domains, self._default_domain
        )

    async def load_suite(self) -> Suite:
        shipped = await self._shipped()
        async with self._sessionmaker() as session:
            taught = taught_cases(await repository.taught_facts(session))
            promoted = await repository.promoted_cases(session)
        suite = build_suite(shipped, taught, promoted)
        # Cached baselines are reused only when judged the same way as the candidate.
        return Suite(version=f"{suite.version}.{self._judge_key}", cases=suite.cases)

    async def run(
        self, *, training_run_id: str | None = None, round_number: int | None = None
    ) -> QaReport:
        """QA on the shadow slot now, gated against Active; stored and returned."""
        started = time.perf_counter()
        await self._releases.refresh()
        state = self._releases.state
        shadow, active = state.shadow_slot, state.active_slot
        suite = await self.load_suite()
        targets = self._targets(shadow)
        try:
            # Each slot's engine has its own cores: ask Active (when not cached) and Shadow
            # at the same time.
            async with asyncio.TaskGroup() as group:
                baseline_task = group.create_task(self._baseline(active, suite))
                shadow_task = group.create_task(self._evaluate(shadow, targets, suite))
            (baseline_run, baseline_labels), judged = baseline_task.result(), shadow_task.result()
            await self._check_unchanged(shadow, targets)
            agreement = await self._agreement(suite)
        except* TwinloopError as failed:
            self._metrics.runs.labels("failed").inc()
            raise failed.exceptions[0] from None
        report = self._report(
            suite, judged, baseline_labels, baseline_run, agreement, shadow, targets
        )
        report = report.model_copy(
            update={
                "training_run_id": training_run_id,
                "round": round_number,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        stored = await self._store(report, suite, judged, CANDIDATE)
        self._observe(stored)
        return stored

    async def get(self, run_id: str) -> QaReport:
        async with self._sessionmaker() as session:
            run = await session.get(QaRun, run_id)
            if run is None:
                raise NotFoundError(f"QA run {run_id} does not exist")
            return _report_of(run)

    async def recent(self, limit: int = 20) -> list[QaReport]:
        async with self._sessionmaker() as session:
            return [_report_of(r) for r in await repository.recent_candidates(session, limit)]

    async def summary(self) -> QaSummary | None:
        async with self._sessionmaker() as session:
            run = await repository.latest_candidate(session)
            if run is None:
                return None
            report = _report_of(run)
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
        async with self._sessionmaker() as session:
            run = await session.get(QaRun, run_id)
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
        async with self._sessionmaker() as session:
            current = await session.get(Snapshot, snapshot_id)
            while current is not None:
                run = await repository.latest_candidate_for(session, current.id)
                if run is not None:
                    return _report_of(run)
                parent = (
                    await session.get(Snapshot, current.parent_id) if current.parent_id else None
                )
                if parent is None or _adapter_ids(parent) != _adapter_ids(current):
                    return None
                current = parent
        return None

    # -- asking ---------------------------------------------------------------------

    def _targets(self, slot: Slot) -> dict[str, Target]:
        return {d: self._releases.target(d, slot=slot) for d in self._domains}

    async def _check_unchanged(self, slot: Slot, targets: dict[str, Target]) -> None:
        await self._releases.refresh()
        now = self._releases.state.serving(slot).snapshot_id
        before = next(iter(targets.values())).snapshot_id
        if now != before:
            raise QaError(
                f"the {slot.value} slot changed from snapshot {before} to {now} during the QA "
                "run; its answers are not one snapshot's. Run QA again."
            )

    async def _evaluate(self, slot: Slot, targets: dict[str, Target], suite: Suite) -> list[Judged]:
        unique = {(c.domain, c.question) for c in suite.cases}
        gate = asyncio.Semaphore(self._settings.concurrency)

        async def ask(domain: str, question: str) -> tuple[tuple[str, str], Answered]:
            async with gate:
                return (domain, question), await self._ask(slot, domain, targets[domain], question)

        answered = dict(await asyncio.gather(*(ask(d, q) for d, q in sorted(unique))))
        cases = list(suite.cases)
        got = [answered[(c.domain, c.question)] for c in cases]
        verdicts = await asyncio.to_thread(
            self._judge.judge_many, cases, [a.answer for a in got], [a.contexts for a in got]
        )
        retried = [i for i, a in enumerate(got) if a.answer_without is not None]
        without = await asyncio.to_thread(
            self._judge.judge_many,
            [cases[i] for i in retried],
            [got[i].answer_without or "" for i in retried],
            [[] for _ in retried],
        )
        if self._llm_judge is not None:
            verdicts = await self._llm_verdicts(
                cases, [a.answer for a in got], [a.contexts for a in got], verdicts, gate
            )
            without = await self._llm_verdicts(
                [cases[i] for i in retried],
                [got[i].answer_without or "" for i in retried],
                [[] for _ in retried],
                without,
                gate,
            )
        without_of = dict(zip(retried, without, strict=True))
        return [
            Judged(answered=a, verdict=v, without=without_of.get(i, v))
            for i, (a, v) in enumerate(zip(got, verdicts, strict=True))
        ]

    async def _llm_verdicts(
        self,
        cases: Sequence[QaCase],
        answers: Sequence[str],
        contexts: Sequence[Sequence[str]],
        verdicts: Sequence[Verdict],
        gate: asyncio.Semaphore,
    ) -> list[Verdict]:
        judge = self._llm_judge
        assert judge is not None

        async def one(i: int) -> Verdict:
            async with gate:
                return await judge.judge(cases[i], answers[i], contexts[i], verdicts[i])

        return list(await asyncio.gather(*(one(i) for i in range(len(cases)))))

    async def _ask(self, slot: Slot, domain: str, target: Target, question: str) -> Answered:
        started = time.perf_counter()
        contexts = await relevant_contexts(
            self._knowledge,
            domain=domain,
            question=question,
            version=target.rag_version,
            top_k=self._top_k,
            min_score=self._min_score,
        )
        answer = await self._complete(slot, target, with_contexts(question, contexts))
        latency_ms = (time.perf_counter() - started) * 1000
        without = await self._complete(slot, target, question) if contexts else None
        return Answered(answer, [c.text for c in contexts], without, latency_ms)

    async def _complete(self, slot: Slot, target: Target, content: str) -> str:
        body = {
            "model": target.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self._settings.max_tokens,
            "temperature": 0.0,
        }
        result = await chat_with_adapter_retry(
            self._engines[slot], body, slot=slot, adapter=target.adapter, releases=self._releases
        )
        return result.text

    # -- the baseline -----------------------------------------------------------------

    async def _baseline(self, slot: Slot, suite: Suite) -> tuple[QaReport, dict[str, str]]:
        """Active's labels for every case: computed once per snapshot and suite version."""
        snapshot_id = self._releases.state.serving(slot).snapshot_id
        async with self._sessionmaker() as session:
            cached = await repository.cached_baseline(session, snapshot_id, suite.version)
            if cached is not None:
                items = await repository.run_items(session, cached.id)
                return _report_of(cached), {i.item_key: i.label for i in items}
        started = time.perf_counter()
        targets = self._targets(slot)
        judged = await self._evaluate(slot, targets, suite)
        await self._check_unchanged(slot, targets)
        report = self._report(suite, judged, None, None, {}, slot, targets)
        report = report.model_copy(
            update={"seconds": round(time.perf_counter() - started, 2), "role": BASELINE}
        )
        stored = await self._store(report, suite, judged, BASELINE)
        return stored, {
            c.key: j.verdict.label.value for c, j in zip(suite.cases, judged, strict=True)
        }

    async def _agreement(self, suite: Suite) -> dict[str, Agreement]:
        async with self._sessionmaker() as session:
            rated = await repository.rated_answers(session, self._settings.agreement_sample)
        return await asyncio.to_thread(judge_agreement, self._judge, suite, rated)

    # -- the report -------------------------------------------------------------------

    def _report(
        self,
        suite: Suite,
        judged: Sequence[Judged],
        baseline_labels: dict[str, str] | None,
        baseline: QaReport | None,
        agreement: dict[str, Agreement],
        slot: Slot,
        targets: dict[str, Target],
    ) -> QaReport:
        labels: dict[str, list[str]] = defaultdict(list)
        without: dict[str, list[str]] = defaultdict(list)
        active: dict[str, list[str]] = defaultdict(list)
        pairs: dict[str, list[Pair]] = defaultdict(list)
        train: dict[str, int] = defaultdict(int)
        failures: list[FailedCase] = []
        for case, result in zip(suite.cases, judged, strict=True):
            if not result.verdict.correct:
                failures.append(
                    FailedCase(
                        key=case.key,
                        category=case.category,
                        domain=case.domain,
                        split=case.split,
                        question=case.question,
                        expected=case.reference,
                        answer=result.answered.answer,
                        label=result.verdict.label.value,
                        reason=result.verdict.reason,
                    )
                )
            if not case.gated:
                train[case.category] += 1
                continue
            labels[case.category].append(result.verdict.label.value)
            without[case.category].append(result.without.label.value)
            baseline_label = (baseline_labels or {}).get(case.key)
            if baseline_label is not None:
                active[case.category].append(baseline_label)
            pairs[case.category].append(Pair(case.key, result.verdict.label.value, baseline_label))
        shadow_scores, without_scores = scores_from(labels), scores_from(without)
        active_scores = scores_from(active) if baseline_labels is not None else None
        decision = decide(pairs, self._gate) if baseline_labels is not None else None
        categories = []
        for category in suite.categories():
            score = shadow_scores.categories.get(category)
            bare = without_scores.categories.get(category)
            gate = decision.categories.get(category) if decision else None
            categories.append(
                CategoryReport(
                    category=category,
                    heldout=len(labels.get(category, [])),
                    train=train.get(category, 0),
                    score=_round(score),
                    active_score=_round(active_scores.categories.get(category))
                    if active_scores
                    else None,
                    hallucinations=labels.get(category, []).count(Label.HALLUCINATION.value),
                    without_retrieval=_round(bare),
                    retrieval_gain=_round(score - bare)
                    if score is not None and bare is not None
                    else None,
                    comparison=_comparison(gate.test) if gate else None,
                    floor=gate.floor if gate else None,
                )
            )
        snapshot_id = next(iter(targets.values())).snapshot_id
        return QaReport(
            id="",
            snapshot_id=snapshot_id,
            slot=slot.value,
            role=CANDIDATE,
            suite_version=suite.version,
            training_run_id=None,
            round=None,
            baseline_run_id=baseline.id if baseline else None,
            baseline_snapshot_id=baseline.snapshot_id if baseline else None,
            status=FINISHED,
            passed=decision.passed if decision else None,
            overall=_round(shadow_scores.overall),
            active_overall=_round(active_scores.overall) if active_scores else None,
            hallucination_rate=_round(shadow_scores.hallucination_rate),
            active_hallucination_rate=_round(active_scores.hallucination_rate)
            if active_scores
            else None,
            reasons=decision.reasons if decision else [],
            regressed=decision.regressed if decision else [],
            below_floor=decision.below_floor if decision else [],
            categories=categories,
            hallucination_comparison=_comparison(decision.hallucinations) if decision else None,
            judge="llm" if self._llm_judge is not None else "reference",
            judge_agreement=agreement,
            failures=failures[:MAX_FAILURES_REPORTED],
            seconds=0.0,
        )

    async def _store(
        self, report: QaReport, suite: Suite, judged: Sequence[Judged], role: str
    ) -> QaReport:
        async with self._sessionmaker.begin() as session:
            run = QaRun(
                snapshot_id=report.snapshot_id,
                slot=report.slot,
                role=role,
                suite_version=suite.version,
                training_run_id=report.training_run_id,
                round=report.round,
                baseline_run_id=report.baseline_run_id,
                status=FINISHED,
                overall_score=report.overall,
                category_scores={
                    c.category: c.score for c in report.categories if c.score is not None
                },
                passed=report.passed,
                finished_at=utcnow(),
            )
            session.add(run)
            await session.flush()
            for case, result in zip(suite.cases, judged, strict=True):
                session.add(
                    QaItem(
                        run_id=run.id,
                        item_key=case.key,
                        category=case.category,
                        domain=case.domain,
                        split=case.split,
                        question=case.question,
                        expected=case.reference,
                        answer=result.answered.answer,
                        label=result.verdict.label.value,
                        score=1.0 if result.verdict.correct else 0.0,
                        contexts=len(result.answered.contexts),
                        label_without_retrieval=result.without.label.value
                        if result.answered.answer_without is not None
                        else None,
                        details={
                            **result.verdict.details(),
                            "accept": list(case.accept),
                            "answer_without_retrieval": result.answered.answer_without,
                        },
                        latency_ms=result.answered.latency_ms,
                    )
                )
            stored = report.model_copy(update={"id": run.id, "created_at": run.created_at})
            run.report = stored.model_dump(mode="json")
        return stored

    def _observe(self, report: QaReport) -> None:
        m = self._metrics
        m.runs.labels("passed" if report.passed else "rejected").inc()
        m.gate_passed.set(1 if report.passed else 0)
        m.run_seconds.observe(report.seconds)
        for role, overall, rate in (
            ("candidate", report.overall, report.hallucination_rate),
            ("baseline", report.active_overall, report.active_hallucination_rate),
        ):
            if overall is not None:
                m.overall.labels(role).set(overall)
            if rate is not None:
                m.hallucination_rate.labels(role).set(rate)
        for c in report.categories:
            if c.score is not None:
                m.score.labels(c.category, "candidate").set(c.score)
            if c.active_score is not None:
                m.score.labels(c.category, "baseline").set(c.active_score)
            if c.comparison is not None:
                m.drop_bound.labels(c.category).set(c.comparison.drop_lower_bound)
                m.discordant.labels(c.category, "lost").set(c.comparison.losses)
                m.discordant.labels(c.category, "gained").set(c.comparison.gains)
        for category, agreement in report.judge_agreement.items():
            if agreement.rate is not None:
                m.judge_agreement.labels(category).set(agreement.rate)


def _adapter_ids(snapshot: Snapshot) -> dict[str, str]:
    return {domain: a for domain, a in snapshot.adapters.items() if a}


def _report_of(run: QaRun) -> QaReport:
    return QaReport.model_validate(run.report)


def _comparison(test: PairedTest | None) -> PairedComparison | None:
    if test is None:
        return None
    return PairedComparison(
        cases=test.cases,
        losses=test.losses,
        gains=test.gains,
        drop=round(test.drop, 4),
        drop_lower_bound=round(test.drop_lower_bound, 4),
        p_value=round(test.p_value, 6),
        tolerance=test.tolerance,
        confidence=test.confidence,
        regressed=test.regressed,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
