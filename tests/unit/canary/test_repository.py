"""Per-arm counts come from answers, failed-request events and feedback; previews never count."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.canary import repository
from twinloop.canary.assignment import Arm
from twinloop.db.base import new_id
from twinloop.db.models import Answer, Canary, CanaryArmEvent, Feedback, Snapshot, TrainingRun
from twinloop.states import CycleState


async def _canary(session: AsyncSession) -> Canary:
    snapshots = [Snapshot(base_model="base", created_by="test", reason=name) for name in ("a", "b")]
    session.add_all(snapshots)
    await session.flush()
    canary = Canary(
        snapshot_id=snapshots[1].id,
        baseline_snapshot_id=snapshots[0].id,
        percent=10.0,
        mirror_percent=0.0,
        min_requests=200,
        max_duration_s=3600.0,
        salt="salt",
        status="running",
        started_by="admin",
    )
    await repository.add(session, canary)
    return canary


def _answer(canary: Canary | None, role: str, latency_ms: float, **extra: object) -> Answer:
    return Answer(
        route="answer",
        question="Q?",
        answer="A.",
        domain="general",
        slot="blue",
        model="base",
        latency_ms=latency_ms,
        role=role,
        canary_id=canary.id if canary else None,
        **extra,
    )


def _feedback(answer: Answer, rating: str, correction: str | None = None) -> Feedback:
    return Feedback(
        external_id=new_id(),
        answer_id=answer.id,
        rating=rating,
        correction=correction,
        content_sha256="0" * 64,
    )


async def test_counts_per_arm_from_answers_events_and_feedback(session: AsyncSession) -> None:
    canary = await _canary(session)
    active = [_answer(canary, "active", 100.0 + i, user_id=f"u{i}") for i in range(4)]
    served = [_answer(canary, "canary", 200.0, user_id="c1"), _answer(canary, "canary", 300.0)]
    preview = _answer(canary, "canary", 999.0, is_preview=True)
    before = _answer(None, "active", 50.0)  # served before the canary: not counted
    # A stream the client dropped is stored for the miner; no request to count.
    dropped = _answer(canary, "canary", 5.0, user_id="c2", finish_reason="abandoned")
    session.add_all([*active, *served, preview, before, dropped])
    await session.flush()
    session.add_all([
        _feedback(active[0], "up"), _feedback(active[1], "down", correction="B."),
        _feedback(served[0], "down", correction="C."), _feedback(preview, "up"),
        CanaryArmEvent(canary_id=canary.id, arm="canary", kind="timeout", sticky=True),
        CanaryArmEvent(canary_id=canary.id, arm="canary", kind="engine_error", sticky=False),
        CanaryArmEvent(canary_id=canary.id, arm="canary", kind="engine_error", sticky=True),
    ])  # fmt: skip
    await session.flush()

    counts = await repository.counts(session, canary.id)

    assert counts.active.requests == 4
    assert counts.active.latencies_ms == (100.0, 101.0, 102.0, 103.0)
    assert (counts.active.thumbs_up, counts.active.thumbs_down) == (1, 1)
    assert counts.active.corrections == 1
    assert counts.active.failures == 0
    # Two answers and three failures; the preview and its thumbs up never count.
    assert counts.canary.requests == 5
    assert (counts.canary.engine_errors, counts.canary.timeouts) == (2, 1)
    assert sorted(counts.canary.latencies_ms) == [200.0, 300.0]
    assert (counts.canary.thumbs_up, counts.canary.thumbs_down, counts.canary.corrections) == (
        0, 1, 1,
    )  # fmt: skip
    # The canary answer with neither id and the failure with neither id.
    assert counts.unsticky == {Arm.ACTIVE: 0, Arm.CANARY: 2}


async def test_the_running_canary_is_found_and_an_ended_one_is_not(session: AsyncSession) -> None:
    canary = await _canary(session)
    assert (await repository.running(session)) is canary
    canary.status = "aborted"
    await session.flush()
    assert await repository.running(session) is None
    assert await repository.latest(session) is canary


async def test_marking_a_cycle_says_where_it_was(session: AsyncSession) -> None:
    """What tells the service that a cycle moves into rolled_back (and hands back) once."""
    cycle = TrainingRun(state=CycleState.CANARY, trigger="cli")
    session.add(cycle)
    await session.flush()

    before = await repository.mark_cycle(session, cycle.id, CycleState.ROLLED_BACK, reason="r")
    again = await repository.mark_cycle(session, cycle.id, CycleState.ROLLED_BACK, reason="r")

    assert (before, again) == (CycleState.CANARY, CycleState.ROLLED_BACK)
    assert (cycle.state, cycle.error, cycle.finished_at is not None) == ("rolled_back", "r", True)
    assert await repository.mark_cycle(session, "nope", CycleState.ROLLED_BACK) is None


async def _cycle_with_canaries(
    session: AsyncSession, state: CycleState, *statuses: str
) -> tuple[TrainingRun, list[Canary]]:
    """A cycle in `state` with canaries of its snapshot that ended in `statuses`, in order."""
    first = await _canary(session)
    cycle = TrainingRun(state=state, trigger="cli", snapshot_id=first.snapshot_id)
    session.add(cycle)
    await session.flush()
    canaries = [first]
    for _ in statuses[1:]:
        canaries.append(
            Canary(
                snapshot_id=first.snapshot_id,
                baseline_snapshot_id=first.baseline_snapshot_id,
                percent=10.0,
                min_requests=200,
                max_duration_s=3600.0,
                salt="salt",
                status="running",
                started_by="admin",
            )
        )
    for minute, (canary, status) in enumerate(zip(canaries, statuses, strict=True)):
        canary.cycle_id, canary.status = cycle.id, status
        canary.started_at = datetime(2025, 1, 1, 0, minute, tzinfo=UTC)
    await repository.add(session, *canaries)
    return cycle, canaries


async def test_a_new_canary_continues_a_cycle_awaiting_it_or_left_inconclusive(
    session: AsyncSession,
) -> None:
    awaiting, [first] = await _cycle_with_canaries(session, CycleState.AWAITING_CANARY, "aborted")
    snapshot = first.snapshot_id
    assert await repository.cycle_awaiting(session, snapshot) == awaiting.id

    awaiting.state = CycleState.INCONCLUSIVE
    first.status = "inconclusive"
    await session.flush()
    # The automatic start leaves an inconclusive cycle to an admin; an admin's canary takes it.
    assert await repository.cycle_awaiting(session, snapshot) is None
    assert await repository.cycle_awaiting(session, snapshot, inconclusive=True) == awaiting.id
    assert await repository.cycle_awaiting(session, "other", inconclusive=True) is None


async def test_only_a_cycle_whose_latest_canary_ended_inconclusive_is_continued(
    session: AsyncSession,
) -> None:
    _, canaries = await _cycle_with_canaries(
        session, CycleState.INCONCLUSIVE, "inconclusive", "aborted"
    )
    snapshot = canaries[0].snapshot_id

    assert await repository.cycle_awaiting(session, snapshot, inconclusive=True) is None
    assert await repository.unsettled(session) == []


async def test_unsettled_are_the_latest_inconclusive_canaries_of_inconclusive_cycles(
    session: AsyncSession,
) -> None:
    cycle, canaries = await _cycle_with_canaries(
        session, CycleState.INCONCLUSIVE, "inconclusive", "inconclusive"
    )

    assert await repository.unsettled(session) == [canaries[1]]

    assert await repository.settle_cycle(session, cycle.id, CycleState.PROMOTED, reason="swap")
    await session.refresh(cycle)
    assert (cycle.state, cycle.error, cycle.finished_at is not None) == ("promoted", "swap", True)
    # Once: a cycle no longer inconclusive is not settled again (by this gateway or another).
    again = await repository.settle_cycle(session, cycle.id, CycleState.ROLLED_BACK, reason="r")
    await session.refresh(cycle)
    assert (again, cycle.state, cycle.error) == (False, "promoted", "swap")
    assert await repository.unsettled(session) == []


async def test_a_cached_answer_is_a_served_request_without_a_latency(
    session: AsyncSession,
) -> None:
    """The arm's snapshot made the answer the cache gave, so it is served and its rating
    counts; no engine served it, so its latency would flatter the arm with the warmer cache."""
    canary = await _canary(session)
    generated = _answer(canary, "active", 120.0, user_id="u1")
    cached = _answer(canary, "active", 3.0, user_id="u2", cached=True)
    session.add_all([generated, cached])
    await session.flush()
    session.add(_feedback(cached, "up"))
    await session.flush()

    counts = await repository.counts(session, canary.id)

    assert counts.active.requests == 2
    assert counts.active.latencies_ms == (120.0,)
    assert counts.active.thumbs_up == 1
