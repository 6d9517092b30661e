"""The training queries on their own: what a cycle collects, replays and links.

(What a cycle hands back is `twinloop.items`'s: tests/unit/items.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import (
    AdapterVersion,
    Answer,
    Feedback,
    TrainingExample,
    TrainingRun,
    TrainingRunItem,
)
from twinloop.errors import NotFoundError
from twinloop.registry import repository as registry_repository
from twinloop.states import CycleState, ItemRole, ItemStatus
from twinloop.training import repository
from twinloop.training.replay import ReplayItem

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def _example(
    session: AsyncSession,
    question: str,
    *,
    minute: int,
    domain: str = "law",
    status: str = ItemStatus.ACCEPTED,
    deleted: bool = False,
    feedback_id: str | None = None,
) -> TrainingExample:
    example = TrainingExample(
        source="example",
        domain=domain,
        question=question,
        answer=f"answer to {question}",
        status=status,
        content_sha256=question,
        created_at=_at(minute),
        deleted_at=_at(minute + 1) if deleted else None,
        feedback_id=feedback_id,
    )
    session.add(example)
    await session.flush()
    return example


async def _run(
    session: AsyncSession, state: str = CycleState.COLLECTING, **fields: object
) -> TrainingRun:
    run = TrainingRun(state=state, trigger="cli", **fields)
    await repository.add(session, run)
    return run


async def _item(
    session: AsyncSession,
    run: TrainingRun,
    example: TrainingExample,
    role: str = ItemRole.NEW,
    adapter_id: str | None = None,
) -> TrainingRunItem:
    item = TrainingRunItem(
        run_id=run.id,
        example_id=example.id,
        domain=example.domain,
        role=role,
        question=example.question,
        answer=example.answer,
        adapter_version_id=adapter_id,
    )
    await repository.add(session, item)
    return item


async def _adapter(session: AsyncSession, name: str) -> AdapterVersion:
    adapter = AdapterVersion(
        domain="law", name=name, base_model="base", path=f"/adapters/{name}", sha256=name
    )
    session.add(adapter)
    await session.flush()
    return adapter


async def test_pending_examples_are_the_live_pending_ones_oldest_first_with_their_user(
    session: AsyncSession,
) -> None:
    answer = Answer(route="answer", question="q", answer="a", domain="law", slot="blue",
                    model="base", user_id="u1", latency_ms=1.0)  # fmt: skip
    session.add(answer)
    await session.flush()
    feedback = Feedback(external_id="f1", answer_id=answer.id, rating="down", content_sha256="x")
    session.add(feedback)
    await session.flush()
    from_feedback = await _example(
        session, "from feedback", minute=2, status=ItemStatus.PENDING, feedback_id=feedback.id
    )
    sent = await _example(session, "sent as an example", minute=1, status=ItemStatus.PENDING)
    await _example(session, "taken already", minute=0)
    await _example(session, "withdrawn", minute=0, status=ItemStatus.PENDING, deleted=True)

    pending = await repository.pending_examples(session)

    assert [(e.id, user) for e, user in pending] == [(sent.id, None), (from_feedback.id, "u1")]
    assert await repository.count_pending(session) == 2


async def test_domain_replay_is_newest_first_and_leaves_out_what_it_must_not_replay(
    session: AsyncSession,
) -> None:
    first, second = await _run(session), await _run(session)
    oldest = await _example(session, "oldest", minute=1)
    newer = await _example(session, "newer", minute=2)
    deleted = await _example(session, "deleted", minute=3, deleted=True)
    handed_back = await _example(session, "handed back", minute=4, status=ItemStatus.PENDING)
    other_domain = await _example(session, "other domain", minute=5, domain="fin")
    for example in (oldest, newer, deleted, handed_back, other_domain):
        await _item(session, first, example)
    await _item(session, second, newer)  # learned in two cycles: replayed once

    replay = await repository.domain_replay(session, "law", exclude=set(), limit=5)
    excluded = await repository.domain_replay(session, "law", exclude={newer.id}, limit=5)
    one = await repository.domain_replay(session, "law", exclude=set(), limit=1)

    assert [i.example_id for i in replay] == [newer.id, oldest.id]
    assert replay[0] == ReplayItem("newer", "answer to newer", example_id=newer.id)
    assert [i.example_id for i in excluded] == [oldest.id]
    assert [i.example_id for i in one] == [newer.id]
    assert await repository.domain_replay(session, "law", exclude=set(), limit=0) == []


async def test_live_items_and_deleted_among_tell_deleted_examples_apart(
    session: AsyncSession,
) -> None:
    run = await _run(session)
    kept = await _example(session, "kept", minute=1)
    withdrawn = await _example(session, "withdrawn", minute=0, deleted=True)
    for example in (kept, withdrawn):
        await _item(session, run, example)

    assert [i.example_id for i in await repository.live_items(session, run.id, ItemRole.NEW)] == [
        kept.id
    ]
    assert await repository.live_items(session, run.id, ItemRole.REPLAY) == []
    assert await repository.deleted_among(session, [kept.id, withdrawn.id]) == {withdrawn.id}
    assert await repository.deleted_among(session, []) == set()


async def test_link_items_records_the_lineage_and_taint_follows_it(session: AsyncSession) -> None:
    run = await _run(session)
    new = await _example(session, "new", minute=3)
    old = await _example(session, "old", minute=1)
    replayed_before = await _example(session, "replayed in round 1", minute=2)
    await _item(session, run, new)
    first_round = await _adapter(session, "law-1")
    await _item(session, run, replayed_before, ItemRole.REPLAY, adapter_id=first_round.id)
    adapter = await _adapter(session, "law-2")
    as_trained = [ReplayItem(new.question, new.answer, new.id)]
    replay = [
        ReplayItem(old.question, old.answer, old.id),
        ReplayItem(replayed_before.question, replayed_before.answer, replayed_before.id),
        ReplayItem("a general prompt", "the base model's answer"),  # not an example
    ]

    await repository.link_items(session, run.id, "law", as_trained, replay, adapter.id)

    rows = (
        await session.execute(select(TrainingRunItem).where(TrainingRunItem.run_id == run.id))
    ).scalars()
    assert sorted((r.question, r.role, r.adapter_version_id) for r in rows) == [
        ("new", ItemRole.NEW, adapter.id),
        ("old", ItemRole.REPLAY, adapter.id),
        ("replayed in round 1", ItemRole.REPLAY, adapter.id),
    ]
    trained = await repository.items_trained_by(session, adapter.id)
    assert [example.id for _, example, _, _ in trained] == [new.id, old.id, replayed_before.id]
    assert await repository.items_trained_by(session, first_round.id) == []

    tainted = await registry_repository.taint_adapters_of(session, [old.id], "old was deleted")

    assert tainted == [adapter.id]
    assert (adapter.tainted, adapter.tainted_reason) == (True, "old was deleted")
    assert await registry_repository.taint_adapters_of(session, [], "nothing") == []


async def test_last_rejected_before_is_the_latest_finished_cycle_only_if_it_was_rejected(
    session: AsyncSession,
) -> None:
    rejected = await _run(session, CycleState.REJECTED, created_at=_at(0), finished_at=_at(1))
    current = await _run(session, created_at=_at(10))

    assert await repository.last_rejected_before(session, current.id) == rejected

    await _run(session, CycleState.STAGED, created_at=_at(2), finished_at=_at(3))

    assert await repository.last_rejected_before(session, current.id) is None


async def test_a_queued_cycle_is_claimed_once(session: AsyncSession) -> None:
    run = await _run(session, CycleState.QUEUED)
    assert await repository.next_queued_id(session) == run.id

    assert await repository.claim_queued(session, run.id, "host:1")
    assert not await repository.claim_queued(session, run.id, "host:2")

    await session.refresh(run)
    assert (run.state, run.owner, run.attempts) == (CycleState.COLLECTING, "host:1", 1)
    assert await repository.next_queued_id(session) is None
    assert await repository.unfinished_run(session) == run
    assert await repository.runs_in_progress(session) == [run]


async def test_get_run_refuses_an_unknown_cycle(session: AsyncSession) -> None:
    assert await repository.find_run(session, "nope") is None
    with pytest.raises(NotFoundError, match="training cycle nope does not exist") as raised:
        await repository.get_run(session, "nope")
    assert raised.value.status_code == 404
