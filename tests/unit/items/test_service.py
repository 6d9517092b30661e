"""The hand-back rules on their own: what a cycle that did not keep its adapters returns."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tests.unit.items import rows
from twinloop.items import service
from twinloop.qa.corrections import CORRECTION, REINFORCEMENT
from twinloop.states import ItemRole, ItemStatus


def test_qa_made_examples_carry_the_prefix_the_rules_retire() -> None:
    assert CORRECTION.startswith(service.QA_MADE_PREFIX)
    assert REINFORCEMENT.startswith(service.QA_MADE_PREFIX)


async def test_an_unfinished_cycle_gives_back_only_what_no_adapter_learned(
    session: AsyncSession,
) -> None:
    run = await rows.cycle(session)
    adapter = await rows.adapter(session, "law-1")
    trained, untrained = await rows.example(session, "trained"), await rows.example(session, "new")
    await rows.item(session, run, trained, adapter_id=adapter.id)
    await rows.item(session, run, untrained)

    assert await service.hand_back_untrained(session, run.id) == 1

    assert (untrained.status, untrained.rejections, untrained.reject_reason) == (
        ItemStatus.PENDING, 0, None,
    )  # fmt: skip
    assert trained.status == ItemStatus.ACCEPTED


async def test_a_refused_cycle_hands_back_quarantines_and_retires(session: AsyncSession) -> None:
    run, later = await rows.cycle(session), await rows.cycle(session)
    adapter = await rows.adapter(session, "law-1")
    first = await rows.example(session, "first refusal")
    third = await rows.example(session, "third refusal", rejections=2)
    qa_made = await rows.example(session, "qa made", source="qa-correction")
    replayed = await rows.example(session, "replayed by the cycle")
    for row in (first, third, qa_made):
        await rows.item(session, run, row, adapter_id=adapter.id)
    await rows.item(session, run, replayed, ItemRole.REPLAY, adapter_id=adapter.id)
    await rows.item(session, later, replayed)
    reason = f"cycle {run.id} rolled back by canary c1: error SLO"

    outcomes = await service.hand_back_refused(session, run.id, reason=reason, max_rejections=3)

    assert outcomes == {service.HANDED_BACK: 1, service.QUARANTINED: 1, service.RETIRED: 1}
    assert (first.status, first.rejections, first.reject_reason) == (
        ItemStatus.PENDING, 1, reason,
    )  # fmt: skip
    assert (third.status, third.rejections) == (ItemStatus.QUARANTINED, 3)
    assert third.reject_reason == (
        f"refused in 3 cycles (rejected by the QA gate or rolled back by a canary); last: {reason}"
    )
    assert (qa_made.status, qa_made.rejections) == (ItemStatus.RETIRED, 0)
    # Another cycle's new item, replayed here, is that cycle's to hand back.
    assert (replayed.status, replayed.rejections) == (ItemStatus.ACCEPTED, 0)
    # Handed back once: what is no longer accepted is not counted again.
    assert await service.hand_back_refused(session, run.id, reason="again", max_rejections=3) == {}
