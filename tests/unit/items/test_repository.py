"""The query the hand-back rules work on: a cycle's new items, still accepted."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tests.unit.items import rows
from twinloop.items import repository
from twinloop.states import ItemRole, ItemStatus


async def test_accepted_new_examples_leave_out_replay_and_what_is_no_longer_accepted(
    session: AsyncSession,
) -> None:
    run, earlier = await rows.cycle(session), await rows.cycle(session)
    adapter = await rows.adapter(session, "law-1")
    trained = await rows.example(session, "trained")
    untrained = await rows.example(session, "untrained")
    quarantined = await rows.example(session, "quarantined", status=ItemStatus.QUARANTINED)
    replayed = await rows.example(session, "replayed")
    await rows.item(session, run, trained, adapter_id=adapter.id)
    await rows.item(session, run, untrained)
    await rows.item(session, run, quarantined)
    await rows.item(session, earlier, replayed)
    await rows.item(session, run, replayed, ItemRole.REPLAY)

    every = await repository.accepted_new_examples(session, run.id, untrained_only=False)
    not_learned = await repository.accepted_new_examples(session, run.id, untrained_only=True)

    assert {e.id for e in every} == {trained.id, untrained.id}
    assert [e.id for e in not_learned] == [untrained.id]
