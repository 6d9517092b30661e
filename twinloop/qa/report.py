"""A QA run's report from its verdicts: scores per category, the gate's decision against
Active, failures; the rows it is stored as, and the metrics it sets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from twinloop.db.base import utcnow
from twinloop.db.models import QaItem, QaRun
from twinloop.qa.evaluation import Judged
from twinloop.qa.gate import GateConfig, GateDecision, Pair, PairedTest, Scores, decide, scores_from
from twinloop.qa.judges import Label
from twinloop.qa.metrics import QaMetrics
from twinloop.qa.repository import CANDIDATE, FINISHED
from twinloop.qa.schemas import (
    Agreement,
    CategoryReport,
    FailedCase,
    PairedComparison,
    QaReport,
)
from twinloop.qa.suites import Suite
from twinloop.releases.state import Target
from twinloop.settings import Slot

MAX_FAILURES_REPORTED = 50


@dataclass
class _Tally:
    """The labels of one run, per category: held-out ones (with and without retrieval, and
    Active's), the pairs the gate compares, how many training-split cases, the failures."""

    labels: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    without: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    active: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    pairs: dict[str, list[Pair]] = field(default_factory=lambda: defaultdict(list))
    train: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[FailedCase] = field(default_factory=list)


def build_report(
    suite: Suite,
    judged: Sequence[Judged],
    baseline_labels: dict[str, str] | None,
    baseline: QaReport | None,
    agreement: dict[str, Agreement],
    slot: Slot,
    targets: dict[str, Target],
    *,
    gate: GateConfig,
    judge: str,
) -> QaReport:
    """The report of `judged` (the suite's verdicts on `slot`); gated against Active when
    `baseline_labels` are given. Its id, timing and training cycle are the caller's."""
    tally = _tally(suite, judged, baseline_labels)
    shadow_scores, without_scores = scores_from(tally.labels), scores_from(tally.without)
    active_scores = scores_from(tally.active) if baseline_labels is not None else None
    decision = decide(tally.pairs, gate) if baseline_labels is not None else None
    return QaReport(
        id="",
        snapshot_id=next(iter(targets.values())).snapshot_id,
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
        categories=_categories(
            suite, tally, shadow_scores, without_scores, active_scores, decision
        ),
        hallucination_comparison=comparison(decision.hallucinations) if decision else None,
        judge=judge,
        judge_agreement=agreement,
        failures=tally.failures[:MAX_FAILURES_REPORTED],
        seconds=0.0,
    )


def _tally(
    suite: Suite, judged: Sequence[Judged], baseline_labels: dict[str, str] | None
) -> _Tally:
    tally = _Tally()
    for case, result in zip(suite.cases, judged, strict=True):
        if not result.verdict.correct:
            tally.failures.append(
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
            tally.train[case.category] += 1
            continue
        tally.labels[case.category].append(result.verdict.label.value)
        tally.without[case.category].append(result.without.label.value)
        baseline_label = (baseline_labels or {}).get(case.key)
        if baseline_label is not None:
            tally.active[case.category].append(baseline_label)
        tally.pairs[case.category].append(
            Pair(case.key, result.verdict.label.value, baseline_label)
        )
    return tally


def _categories(
    suite: Suite,
    tally: _Tally,
    shadow_scores: Scores,
    without_scores: Scores,
    active_scores: Scores | None,
    decision: GateDecision | None,
) -> list[CategoryReport]:
    categories = []
    for category in suite.categories():
        score = shadow_scores.categories.get(category)
        bare = without_scores.categories.get(category)
        gate = decision.categories.get(category) if decision else None
        categories.append(
            CategoryReport(
                category=category,
                heldout=len(tally.labels.get(category, [])),
                train=tally.train.get(category, 0),
                score=_round(score),
                active_score=_round(active_scores.categories.get(category))
                if active_scores
                else None,
                hallucinations=tally.labels.get(category, []).count(Label.HALLUCINATION.value),
                without_retrieval=_round(bare),
                retrieval_gain=_round(score - bare)
                if score is not None and bare is not None
                else None,
                comparison=comparison(gate.test) if gate else None,
                floor=gate.floor if gate else None,
            )
        )
    return categories


def report_of(run: QaRun) -> QaReport:
    return QaReport.model_validate(run.report)


def comparison(test: PairedTest | None) -> PairedComparison | None:
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


# -- stored as ----------------------------------------------------------------------------


def run_record(report: QaReport, suite: Suite, role: str) -> QaRun:
    """The run's row; its `report` is set once the row has an id."""
    return QaRun(
        snapshot_id=report.snapshot_id,
        slot=report.slot,
        role=role,
        suite_version=suite.version,
        training_run_id=report.training_run_id,
        round=report.round,
        baseline_run_id=report.baseline_run_id,
        status=FINISHED,
        overall_score=report.overall,
        category_scores={c.category: c.score for c in report.categories if c.score is not None},
        passed=report.passed,
        finished_at=utcnow(),
    )


def item_records(suite: Suite, judged: Sequence[Judged]) -> list[QaItem]:
    """One row per case, with its answer, label and what the judge based it on."""
    return [
        QaItem(
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
                "check": case.check.value,
                "reject": list(case.reject),
                "answer_without_retrieval": result.answered.answer_without,
            },
            latency_ms=result.answered.latency_ms,
        )
        for case, result in zip(suite.cases, judged, strict=True)
    ]


# -- metrics ------------------------------------------------------------------------------


def observe(m: QaMetrics, report: QaReport) -> None:
    """A candidate run's report as the QA metrics (gate, scores, paired tests, agreement)."""
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
