"""Queries of canaries: the canary rows, per-arm counts, failed requests, decisions, and
the training cycles behind them (found by snapshot lineage: a child staged by an ingest
stands for the cycle's snapshot while it serves the same adapters).

Flushes, never commits. Per-arm counts are read from what the request path already
writes: the answers each arm served (`answers.canary_id`, `answers.role`), the failed
requests that wrote no answer (`canary_arm_events`), and the feedback users sent on those
answers. Previews never count (`is_preview`); QA writes no answers at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, ScalarSelect, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from twinloop.canary.assignment import Arm
from twinloop.canary.pairs import JudgeChoice, Judged, Pair, Reply
from twinloop.canary.schemas import CanaryStatus
from twinloop.canary.statistics import ArmCounts
from twinloop.db.base import utcnow
from twinloop.db.models import (
    Answer,
    AuditEntry,
    Canary,
    CanaryArmEvent,
    CanaryDecision,
    CanaryPair,
    Feedback,
    TrainingRun,
)
from twinloop.releases import snapshots
from twinloop.states import ABANDONED_FINISH_REASON, CycleState

RUNNING = "running"
TIMEOUT = "timeout"
ENGINE_ERROR = "engine_error"


@dataclass(frozen=True)
class CanaryCounts:
    """Both arms' counts, and the requests that came with neither user nor session id."""

    active: ArmCounts
    canary: ArmCounts
    unsticky: dict[Arm, int]


async def add(
    session: AsyncSession,
    *records: Canary | CanaryArmEvent | CanaryDecision | CanaryPair | AuditEntry,
) -> None:
    session.add_all(records)
    await session.flush()


async def get(session: AsyncSession, canary_id: str) -> Canary | None:
    return await session.get(Canary, canary_id)


async def running(session: AsyncSession) -> Canary | None:
    """The running canary: one at a time (`uq_canaries_running`), whichever gateway started it."""
    result = await session.execute(
        select(Canary).where(Canary.status == RUNNING).order_by(Canary.started_at.desc()).limit(1)
    )
    return result.scalars().first()


# A promotion claimed and not yet recorded: its swap is under way (or its gateway stopped).
_CLAIMED = (Canary.status == CanaryStatus.PROMOTED, Canary.ended_at.is_(None))


async def _change(
    session: AsyncSession, canary_id: str, conditions: Sequence[ColumnElement[bool]],
    **values: object,
) -> Canary | None:  # fmt: skip
    """One conditional update of one canary: the row as it now is, or None where the
    conditions no longer held. Of several gateways changing it at once, exactly one does; on
    PostgreSQL the others wait for its commit, then find the conditions gone."""
    result = await session.execute(
        update(Canary).where(Canary.id == canary_id, *conditions).values(**values)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return await session.get(Canary, canary_id, populate_existing=True)


async def end(
    session: AsyncSession,
    canary_id: str,
    *,
    status: str,
    reason: str | None,
    ended_at: datetime | None,
    expected: str = RUNNING,
) -> Canary | None:
    """Move the canary from `expected` to `status` (a promotion's claim: no `ended_at` yet);
    None if it was no longer `expected`."""
    conditions = [Canary.status == expected]
    return await _change(session, canary_id, conditions, status=status, reason=reason,
                         ended_at=ended_at)  # fmt: skip


async def claimed_promotions(session: AsyncSession) -> list[tuple[Canary, datetime]]:
    """Promotions claimed and not recorded, each with when it was claimed (its promote
    decision's time)."""
    claimed_at = (
        select(func.max(CanaryDecision.created_at))
        .where(CanaryDecision.canary_id == Canary.id, CanaryDecision.decision == "promote")
        .correlate(Canary)
        .scalar_subquery()
    )
    result = await session.execute(select(Canary, claimed_at).where(*_CLAIMED))
    return [(canary, when or canary.started_at) for canary, when in result.all()]


async def record_promotion(
    session: AsyncSession, canary_id: str, *, ended_at: datetime
) -> Canary | None:
    """End a claimed promotion once its swap is done; None if it was no longer a claim (an
    abort, or another gateway recorded it)."""
    return await _change(session, canary_id, _CLAIMED, ended_at=ended_at)


async def resume(session: AsyncSession, canary_id: str, *, percent_from: datetime) -> Canary | None:
    """Put a canary claimed for a promotion that did not swap back to running, its split
    starting again at `percent_from`; None if it is no longer claimed. Raises IntegrityError
    when another canary was started meanwhile (`uq_canaries_running`)."""
    changed = await _change(
        session, canary_id, _CLAIMED, status=RUNNING, reason=None, ended_at=None,
        percent_from=percent_from, previous_percent=None,
    )  # fmt: skip
    await session.flush()
    return changed


async def follow(
    session: AsyncSession, canary_id: str, *, from_snapshot: str, to_snapshot: str
) -> bool:
    """Move the running canary from `from_snapshot` to `to_snapshot`; False if it no longer
    ran on `from_snapshot` (another gateway followed first, or it ended)."""
    conditions = [Canary.status == RUNNING, Canary.snapshot_id == from_snapshot]
    return await _change(session, canary_id, conditions, snapshot_id=to_snapshot) is not None


async def latest(session: AsyncSession) -> Canary | None:
    result = await session.execute(select(Canary).order_by(Canary.started_at.desc()).limit(1))
    return result.scalars().first()


async def decisions(
    session: AsyncSession, canary_id: str, *, limit: int = 20
) -> Sequence[CanaryDecision]:
    """The canary's evaluations, newest first."""
    result = await session.execute(
        select(CanaryDecision)
        .where(CanaryDecision.canary_id == canary_id)
        .order_by(CanaryDecision.created_at.desc())
        .limit(limit)
    )
    return result.scalars().all()


async def cycle_awaiting(
    session: AsyncSession, snapshot_id: str, *, inconclusive: bool = False
) -> str | None:
    """The training cycle whose snapshot `snapshot_id` stands for and that waits for its
    canary, if any.

    `snapshot_id` stands for the cycle's snapshot when it is that snapshot or a descendant
    of it through snapshots that all serve its adapters (`snapshots.stands_for`): an ingest
    that staged newer RAG versions after the cycle passed QA leaves the cycle's adapters on
    Shadow, and its canary theirs. Of several, the nearest ancestor's newest cycle.

    With `inconclusive`, also a cycle left `inconclusive` by its latest canary: an admin's
    new canary of the snapshot, still staged, continues it. The automatic start does not
    ask for those; a deadline that passed without a decision leaves the next canary to an
    admin.
    """
    waiting = TrainingRun.state == CycleState.AWAITING_CANARY
    if inconclusive:
        waiting = or_(
            waiting,
            and_(
                TrainingRun.state == CycleState.INCONCLUSIVE,
                _latest_canary_of_cycle(Canary.status) == CanaryStatus.INCONCLUSIVE,
            ),
        )
    result = await session.execute(
        select(TrainingRun.id, TrainingRun.snapshot_id)
        .where(waiting)
        .order_by(TrainingRun.created_at.desc())
    )
    cycles: dict[str, str] = {}
    for cycle_id, cycle_snapshot in result:
        if cycle_snapshot is not None:
            cycles.setdefault(cycle_snapshot, cycle_id)  # the newest of each snapshot
    if not cycles:
        return None  # the usual case: no lineage to read
    async for snapshot in snapshots.same_adapter_lineage(session, snapshot_id):
        if snapshot.id in cycles:
            return cycles[snapshot.id]
    return None


async def unsettled(session: AsyncSession) -> list[Canary]:
    """Canaries that ended inconclusive, each the latest of its cycle, whose cycle is still
    `inconclusive`: what an admin's swap, rollback or restaging settles. Newest first."""
    result = await session.execute(
        select(Canary)
        .join(TrainingRun, TrainingRun.id == Canary.cycle_id)
        .where(
            TrainingRun.state == CycleState.INCONCLUSIVE,
            Canary.status == CanaryStatus.INCONCLUSIVE,
            Canary.id == _latest_canary_of_cycle(Canary.id),
        )
        .order_by(Canary.started_at.desc())
    )
    return list(result.scalars())


def _latest_canary_of_cycle(column: InstrumentedAttribute[str]) -> ScalarSelect[str]:
    """`column` of the newest canary of the enclosing query's `TrainingRun`."""
    latest = aliased(Canary)
    return (
        select(getattr(latest, column.key))
        .where(latest.cycle_id == TrainingRun.id)
        .order_by(latest.started_at.desc())
        .limit(1)
        .correlate(TrainingRun)
        .scalar_subquery()
    )


async def mark_cycle(
    session: AsyncSession, cycle_id: str, state: CycleState, *, reason: str | None = None
) -> CycleState | None:
    """Move a training cycle along its canary: canary, then promoted, rolled_back or
    inconclusive (`reason`, for the last two, says why in the cycle's `error`). Back in
    `canary` (a new canary continues an inconclusive cycle) the last one's reason goes.

    The state the cycle was in before, or None if there is no such cycle.
    """
    cycle = await session.get(TrainingRun, cycle_id)
    if cycle is None:
        return None
    before = CycleState(cycle.state)
    cycle.state = state
    cycle.updated_at = utcnow()
    if state is CycleState.CANARY:
        cycle.error = None
    else:
        cycle.finished_at = cycle.updated_at
    if reason is not None:
        cycle.error = reason
    await session.flush()
    return before


async def settle_cycle(
    session: AsyncSession, cycle_id: str, state: CycleState, *, reason: str
) -> bool:
    """Move a cycle out of `inconclusive` into `state`, with `reason` in its `error`; False
    if it was no longer inconclusive.

    One conditional update: of two gateways settling the same cycle, one does.
    """
    now = utcnow()
    result = await session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == cycle_id, TrainingRun.state == CycleState.INCONCLUSIVE)
        .values(state=state, error=reason, updated_at=now, finished_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def counts(session: AsyncSession, canary_id: str) -> CanaryCounts:
    """Each arm's requests, failures, latencies and feedback so far.

    A stream the client dropped (stored `abandoned`, for the miner) is no served request:
    its latency is the client's patience, not the engine's. An answer from the answer cache
    is a served request (its arm's snapshot made that answer, and a user's rating of it
    counts), but its latency is left out: no engine served it, and the arm whose snapshot
    is older has the warmer cache.
    """
    served = (
        Answer.canary_id == canary_id,
        Answer.is_preview.is_(False),
        or_(Answer.finish_reason.is_(None), Answer.finish_reason != ABANDONED_FINISH_REASON),
    )
    answered = dict.fromkeys(Arm, 0)
    latencies: dict[str, list[float]] = {arm: [] for arm in Arm}
    unsticky = dict.fromkeys(Arm, 0)
    rows = await session.execute(
        select(
            Answer.role,
            Answer.latency_ms,
            Answer.cached,
            and_(Answer.user_id.is_(None), Answer.session_id.is_(None)),
        ).where(*served)
    )
    for role, latency_ms, cached, anonymous in rows:
        if role in latencies:
            answered[Arm(role)] += 1
            if not cached:
                latencies[role].append(float(latency_ms))
            unsticky[Arm(role)] += int(bool(anonymous))

    failures: dict[tuple[str, str], int] = {}
    events = await session.execute(
        select(
            CanaryArmEvent.arm,
            CanaryArmEvent.kind,
            func.count(),
            func.sum(case((CanaryArmEvent.sticky.is_(False), 1), else_=0)),
        )
        .where(CanaryArmEvent.canary_id == canary_id)
        .group_by(CanaryArmEvent.arm, CanaryArmEvent.kind)
    )
    for arm, kind, number, anonymous in events:
        failures[(arm, kind)] = int(number)
        if arm in unsticky:
            unsticky[Arm(arm)] += int(anonymous or 0)

    ratings: dict[tuple[str, str], tuple[int, int]] = {}
    rated = await session.execute(
        select(Answer.role, Feedback.rating, func.count(), func.count(Feedback.correction))
        .join(Answer, Answer.id == Feedback.answer_id)
        .where(*served, Feedback.deleted_at.is_(None))
        .group_by(Answer.role, Feedback.rating)
    )
    for role, rating, number, corrections in rated:
        ratings[(str(role), rating)] = (int(number), int(corrections))

    def arm_counts(arm: Arm) -> ArmCounts:
        errors = failures.get((arm, ENGINE_ERROR), 0)
        timeouts = failures.get((arm, TIMEOUT), 0)
        up, up_corrections = ratings.get((arm, "up"), (0, 0))
        down, down_corrections = ratings.get((arm, "down"), (0, 0))
        return ArmCounts(
            requests=answered[arm] + errors + timeouts,
            engine_errors=errors,
            timeouts=timeouts,
            latencies_ms=tuple(latencies[arm]),
            thumbs_up=up,
            thumbs_down=down,
            corrections=up_corrections + down_corrections,
        )

    return CanaryCounts(
        active=arm_counts(Arm.ACTIVE), canary=arm_counts(Arm.CANARY), unsticky=unsticky
    )


async def pairs(session: AsyncSession, canary_id: str) -> list[Pair]:
    """The canary's mirrored pairs, each with the latest correction of Active's answer."""
    rows = (
        await session.execute(
            select(CanaryPair, Answer.answer, Answer.latency_ms, Answer.finish_reason)
            .join(Answer, Answer.id == CanaryPair.answer_id)
            .where(CanaryPair.canary_id == canary_id)
            .order_by(CanaryPair.created_at)
        )
    ).all()
    corrected = await session.execute(
        select(Feedback.answer_id, Feedback.correction)
        .join(CanaryPair, CanaryPair.answer_id == Feedback.answer_id)
        .where(
            CanaryPair.canary_id == canary_id,
            Feedback.correction.is_not(None),
            Feedback.deleted_at.is_(None),
        )
        .order_by(Feedback.created_at)
    )
    corrections = {answer_id: text for answer_id, text in corrected}  # the latest wins
    return [
        Pair(
            domain=pair.domain,
            active=Reply(text, float(latency_ms), finish_reason),
            canary=Reply(
                pair.canary_answer,
                pair.canary_latency_ms,
                pair.canary_finish_reason,
                pair.canary_error,
            ),
            judged=_judged(pair.judge_active_first, pair.judge_canary_first),
            correction=corrections.get(pair.answer_id),
        )
        for pair, text, latency_ms, finish_reason in rows
    ]


def _judged(active_first: str | None, canary_first: str | None) -> Judged | None:
    if active_first is None or canary_first is None:
        return None
    return Judged(_choice(active_first), _choice(canary_first))


def _choice(stored: str) -> JudgeChoice:
    return "a" if stored == "a" else "b" if stored == "b" else "tie"
