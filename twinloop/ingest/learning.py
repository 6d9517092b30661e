"""Feedback and examples from /ingest: screened, stored, turned into training examples.

Nothing here trains: examples pass the screen at the door (`screening.py`: stored redacted,
quarantined at once when a rule stops them) and wait as `pending` until a training cycle
cleans them (quarantine with a reason, or accept). A thumbs-down with a correction
becomes a preference pair: chosen = the correction, rejected = the served answer.
A thumbs-up makes the served answer an example. Deleting an item marks it and
what it became as deleted, so no later training set uses it, and taints every adapter that
already learned from it (shown in /status; a tainted adapter cannot enter a new snapshot).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.base import utcnow
from twinloop.db.models import Answer, Feedback, TrainingExample
from twinloop.ingest import repository
from twinloop.ingest.schemas import ExampleItem, FeedbackItem, ItemResult
from twinloop.ingest.screening import IngestScreen
from twinloop.registry import repository as registry
from twinloop.states import ItemStatus


def _sha(*parts: str | None) -> str:
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()


def example_sha256(
    domain: str,
    question: str,
    answer: str,
    *,
    heldout_json: str = "",
    rejected_answer: str | None = None,
) -> str:
    """`TrainingExample.content_sha256`: what the example teaches, and nothing else.

    `apply_example` compares it to tell a resent example `unchanged` from `updated`, so
    an example sent as before must hash as before: domain, question, answer and held-out
    cases (their JSON as sent), and the rejected answer joins only for a preference pair.
    """
    parts = [domain, question, answer, heldout_json]
    if rejected_answer is not None:
        parts.append(rejected_answer)
    return _sha(*parts)


def _result(item: FeedbackItem | ExampleItem, status: str, **extra: object) -> ItemResult:
    return ItemResult.model_validate({"id": item.id, "type": item.type, "status": status, **extra})


async def apply_feedback(
    session: AsyncSession, item: FeedbackItem, screen: IngestScreen
) -> ItemResult:
    feedback = await repository.feedback_by_external_id(session, item.id)
    if item.deleted:
        if feedback is None or feedback.deleted_at is not None:
            return _result(item, "not_found", detail="no feedback with this id")
        feedback.deleted_at = utcnow()
        for example in await repository.live_examples_of(session, feedback.id):
            example.deleted_at = feedback.deleted_at
        tainted = await registry.taint_adapters_of(
            session,
            await repository.example_ids_of(session, feedback.id),
            f"trained on feedback {item.id!r}, since deleted",
        )
        return _result(item, "deleted", tainted_adapters=tainted)
    if item.answer_id is None or item.rating is None:
        return _result(item, "rejected", detail="feedback needs `answer_id` and `rating`")
    answer = await repository.answer(session, item.answer_id)
    if answer is None:
        return _result(item, "rejected", detail=f"unknown answer_id {item.answer_id!r}")
    if answer.is_preview:
        return _result(
            item, "rejected", detail="that answer was an operator preview, not a user's answer"
        )
    sha = _sha(item.answer_id, item.rating, item.correction, item.comment, _heldout_text(item))
    if feedback is not None and feedback.content_sha256 == sha and feedback.deleted_at is None:
        examples = await repository.live_examples_of(session, feedback.id)
        return _result(item, "unchanged", training_example_id=_first_id(examples))
    status = "added" if feedback is None else "updated"
    if feedback is None:
        feedback = Feedback(external_id=item.id, answer_id=answer.id, rating=item.rating,
                            content_sha256=sha)  # fmt: skip
    feedback.answer_id, feedback.rating = answer.id, item.rating
    feedback.correction, feedback.comment = item.correction, await screen.stored(item.comment)
    feedback.content_sha256, feedback.deleted_at = sha, None
    await repository.add(session, feedback)
    # The feedback's content changed: what it taught before is withdrawn (kept for lineage).
    for old in await repository.live_examples_of(session, feedback.id):
        old.deleted_at = utcnow()
    taught = _example_from(feedback, answer, item)
    if taught is None:
        feedback.correction = await screen.stored(feedback.correction)
        return _result(item, status, domain=answer.domain)
    screened = await screen.example(taught)
    if taught.source == "correction" and not screen.config.keep_raw_pii:
        feedback.correction = taught.answer  # the correction, as redacted
    taught.rejected_answer = await screen.stored(taught.rejected_answer)
    await repository.add(session, taught)
    if screened.rule is not None:
        status, extra = "quarantined", {"detail": _quarantined(screened.rule)}
    else:
        extra = {}
    return _result(item, status, domain=answer.domain, training_example_id=taught.id, **extra)


def _quarantined(rule: str) -> str:
    return (
        f"stored but quarantined by the screen ({rule}): it will not be trained on or become "
        "a fact document"
    )


def _example_from(feedback: Feedback, answer: Answer, item: FeedbackItem) -> TrainingExample | None:
    correction = (feedback.correction or "").strip()
    if correction:
        rejected = answer.answer if feedback.rating == "down" else None
        source, text = "correction", correction
    elif feedback.rating == "up":
        rejected, source, text = None, "upvote", answer.answer
    else:
        return None  # a thumbs-down alone says what is wrong, not what is right
    # Held-out paraphrases test a correction; an upvote keeps what was already answered.
    heldout = source == "correction"
    return TrainingExample(
        source=source,
        feedback_id=feedback.id,
        domain=answer.domain,
        question=answer.question,
        answer=text,
        rejected_answer=rejected,
        heldout=_heldout(item) if heldout else None,
        status=ItemStatus.PENDING,
        content_sha256=example_sha256(
            answer.domain,
            answer.question,
            text,
            heldout_json=_heldout_text(item) if heldout else "",
            rejected_answer=rejected,
        ),
    )


async def apply_example(
    session: AsyncSession, item: ExampleItem, domains: Sequence[str], screen: IngestScreen
) -> ItemResult:
    example = await repository.example_by_external_id(session, item.id)
    if item.deleted:
        if example is None or example.deleted_at is not None:
            return _result(item, "not_found", detail="no example with this id")
        example.deleted_at = utcnow()
        tainted = await registry.taint_adapters_of(
            session, [example.id], f"trained on example {item.id!r}, since deleted"
        )
        return _result(item, "deleted", domain=example.domain, tainted_adapters=tainted)
    if not (item.domain and item.question and item.question.strip() and item.answer
            and item.answer.strip()):  # fmt: skip
        return _result(item, "rejected", detail="an example needs `domain`, `question`, `answer`")
    if item.domain not in domains:
        known = ", ".join(domains)
        return _result(item, "rejected", detail=f"unknown domain {item.domain!r}; known: {known}")
    sha = example_sha256(item.domain, item.question, item.answer, heldout_json=_heldout_text(item))
    if example is not None and example.content_sha256 == sha and example.deleted_at is None:
        return _result(item, "unchanged", domain=item.domain, training_example_id=example.id)
    status = "added" if example is None else "updated"
    if example is None:
        example = TrainingExample(
            external_id=item.id,
            source="example",
            content_sha256=sha,
            domain=item.domain,
            question=item.question,
            answer=item.answer,
        )
    example.domain, example.question, example.answer = item.domain, item.question, item.answer
    example.content_sha256, example.deleted_at = sha, None
    example.status, example.reject_reason = ItemStatus.PENDING, None
    example.heldout = _heldout(item)
    screened = await screen.example(example)
    await repository.add(session, example)
    if screened.rule is not None:
        return _result(
            item,
            "quarantined",
            domain=item.domain,
            training_example_id=example.id,
            detail=_quarantined(screened.rule),
        )
    return _result(item, status, domain=item.domain, training_example_id=example.id)


async def correction_fact(
    session: AsyncSession, feedback_external_id: str, screen: IngestScreen
) -> Fact | None:
    """The fact a live correction teaches, as a short document for its domain's RAG.

    None when there is no live correction, or the screen quarantined what it teaches; the
    text is the redacted question and correction, however they are stored.
    """
    row = await repository.live_correction(session, feedback_external_id)
    if row is None:
        return None
    feedback, answer = row
    correction = (feedback.correction or "").strip()
    if not correction:
        return None
    taught = await repository.live_examples_of(session, feedback.id)
    if any(example.status == ItemStatus.QUARANTINED for example in taught):
        return None
    screened = await screen.fact(answer.question, correction)
    if screened is None:
        return None
    return Fact(domain=answer.domain, text=fact_text(*screened))


@dataclass(frozen=True)
class Fact:
    domain: str
    text: str


def fact_text(question: str, answer: str) -> str:
    """A taught fact as a document: the question and its answer, so either finds it."""
    return f"{question.strip()}\n{answer.strip()}"


def _heldout(item: FeedbackItem | ExampleItem) -> dict[str, object] | None:
    return item.heldout.model_dump() if item.heldout is not None else None


def _heldout_text(item: FeedbackItem | ExampleItem) -> str:
    return item.heldout.model_dump_json() if item.heldout is not None else ""


def _first_id(examples: list[TrainingExample]) -> str | None:
    return examples[0].id if examples else None
