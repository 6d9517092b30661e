"""Queries for QA runs, the cases built from the database, and judge reliability. Flushes only."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer, Feedback, QaItem, QaRun, Release, TrainingExample
from twinloop.qa.suites import FEEDBACK, HELDOUT, QaCase, TaughtFact
from twinloop.states import ItemStatus

FINISHED = "finished"
CANDIDATE, BASELINE = "candidate", "baseline"


async def taught_facts(session: AsyncSession) -> list[TaughtFact]:
    """Undeleted, not quarantined examples that came with held-out paraphrases."""
    rows = await session.execute(
        select(TrainingExample)
        .where(
            TrainingExample.heldout.is_not(None),
            TrainingExample.deleted_at.is_(None),
            TrainingExample.status != ItemStatus.QUARANTINED,
        )
        .order_by(TrainingExample.created_at, TrainingExample.id)
    )
    facts = []
    for example in rows.scalars():
        heldout = example.heldout or {}
        paraphrases = tuple(str(p) for p in heldout.get("paraphrases", ()))
        if paraphrases:
            facts.append(
                TaughtFact(
                    example_id=example.id,
                    domain=example.domain,
                    question=example.question,
                    answer=example.answer,
                    paraphrases=paraphrases,
                    accept=tuple(str(a) for a in heldout.get("accept", ())),
                )
            )
    return facts


async def promoted_cases(session: AsyncSession) -> list[QaCase]:
    """Held-out taught cases that a snapshot passed before it became active.

    These join the forgetting category: what users were once promised must stay learned.
    Cases of items deleted since are left out (their lesson was withdrawn).
    """
    releases = await session.execute(select(Release))
    active_ids = {
        r.blue_snapshot_id if r.active_slot == "blue" else r.green_snapshot_id
        for r in releases.scalars()
    }
    active_ids.discard(None)
    if not active_ids:
        return []
    rows = await session.execute(
        select(QaItem)
        .join(QaRun, QaRun.id == QaItem.run_id)
        .where(
            QaRun.snapshot_id.in_(active_ids),
            QaRun.role == CANDIDATE,
            QaRun.passed.is_(True),
            QaItem.category == FEEDBACK,
            QaItem.split == HELDOUT,
            QaItem.label == "correct",
        )
    )
    items = list(rows.scalars())
    example_ids = {i.item_key.split("/")[1] for i in items}
    deleted = await session.execute(
        select(TrainingExample.id).where(
            TrainingExample.id.in_(example_ids), TrainingExample.deleted_at.is_not(None)
        )
    )
    gone = set(deleted.scalars())
    cases: dict[str, QaCase] = {}
    for item in items:
        if item.item_key.split("/")[1] in gone:
            continue
        cases.setdefault(
            item.item_key,
            QaCase(
                key=item.item_key,
                category=FEEDBACK,
                domain=item.domain,
                question=item.question,
                reference=item.expected,
                split=HELDOUT,
                accept=tuple(item.details.get("accept", ())),
            ),
        )
    return list(cases.values())


async def cached_baseline(
    session: AsyncSession, snapshot_id: str, suite_version: str
) -> QaRun | None:
    rows = await session.execute(
        select(QaRun)
        .where(
            QaRun.snapshot_id == snapshot_id,
            QaRun.suite_version == suite_version,
            QaRun.role == BASELINE,
            QaRun.status == FINISHED,
        )
        .order_by(QaRun.created_at.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def get_run(session: AsyncSession, run_id: str) -> QaRun | None:
    return await session.get(QaRun, run_id)


async def add_run(session: AsyncSession, run: QaRun, items: Sequence[QaItem]) -> None:
    """A run and its items (whose `run_id` it sets)."""
    session.add(run)
    await session.flush()
    for item in items:
        item.run_id = run.id
    session.add_all(items)
    await session.flush()


async def run_items(session: AsyncSession, run_id: str) -> list[QaItem]:
    rows = await session.execute(select(QaItem).where(QaItem.run_id == run_id))
    return list(rows.scalars())


async def latest_candidate(session: AsyncSession) -> QaRun | None:
    rows = await session.execute(
        select(QaRun).where(QaRun.role == CANDIDATE).order_by(QaRun.created_at.desc()).limit(1)
    )
    return rows.scalar_one_or_none()


async def latest_candidate_for(session: AsyncSession, snapshot_id: str) -> QaRun | None:
    rows = await session.execute(
        select(QaRun)
        .where(QaRun.role == CANDIDATE, QaRun.snapshot_id == snapshot_id)
        .order_by(QaRun.created_at.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def recent_candidates(session: AsyncSession, limit: int = 20) -> Sequence[QaRun]:
    rows = await session.execute(
        select(QaRun).where(QaRun.role == CANDIDATE).order_by(QaRun.created_at.desc()).limit(limit)
    )
    return rows.scalars().all()


async def rated_answers(session: AsyncSession, limit: int) -> list[tuple[Feedback, Answer]]:
    """The latest feedback on real (not preview) answers, for judge reliability."""
    if limit <= 0:
        return []
    rows = await session.execute(
        select(Feedback, Answer)
        .join(Answer, Answer.id == Feedback.answer_id)
        .where(Feedback.deleted_at.is_(None), Answer.is_preview.is_(False))
        .order_by(Feedback.created_at.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows.all()]
