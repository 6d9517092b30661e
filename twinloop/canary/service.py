"""The canary of the staged Shadow: start, adjust, abort, evaluate, and act on the decision.

One canary runs at a time, persisted in `canaries`, so a restarted gateway continues it
(`load`). The request path asks `arm_for` which arm serves a request: a lookup in one
immutable `CanaryState` in memory, refreshed on start, abort and every evaluation (the
evaluation loop also takes a canary another gateway started). For a share of Active's
requests (`mirrors`) the request path also asks Shadow in the background and hands the
canary's reply to `record_pair`, which judges the pair (with an LLM judge, when one is
configured) and stores it. `evaluate` runs `decide` on the counts and pairs in the
database, stores the evaluation in `canary_decisions` and acts:

* promote: the release controller's atomic swap; the canary ends `promoted`;
* abort: the split stops at once, the canary ends `aborted`, and if Active no longer
  serves the baseline snapshot it is rolled back to it (desired state, not only traffic);
* inconclusive: the split stops, the canary ends `inconclusive`, an admin decides;
* continue: nothing.

The training cycle behind the canary is the one whose snapshot Shadow's stands for: that
snapshot, or a child of it serving the same adapter in every domain (an ingest staged newer
RAG versions after the cycle passed QA; `snapshots.stands_for`, the chain the QA verdict
follows too). A running canary follows Shadow to such a child (`_follow`) instead of ending;
a child serving other adapters ends it. The cycle ends as its canary does
(`CYCLE_STATE_AFTER`). A cycle rolled back hands its learning items back in the same
transaction, by the rules a QA-rejected cycle follows (`twinloop.items.service`): what it
taught is not in Active, so the users' feedback goes back to pending with the canary's
reason. That holds however the canary came to be aborted: its decision, an admin, Shadow
restaged under it, or an admin's abort of a promotion still active.

A cycle whose canary ended inconclusive keeps its items `accepted` until an admin decides,
and the cycle follows what the admin does: a new canary of the snapshot, still staged,
continues it (back to `canary`); with no canary running, each evaluation settles it by what
the release serves (`_settle`): its snapshot (or a child standing for it) made active (a
swap) promotes it; one served by neither slot (a rollback, other adapters staged) rolls it
back and hands its items back; an ingest's child on Shadow leaves it waiting. Settled once,
with an audit entry (`canary.settle`).

Lock order: the canary's lock, then (inside the release controller) the release lock.
No database session is held across a call into the release controller or the QA verdict
source: on SQLite the gateway has one connection. (Settling and following read only the
release in memory; they call nothing in the controller.)
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from random import Random
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.canary import repository
from twinloop.canary.assignment import Arm, assign
from twinloop.canary.decision import Decision, Verdict, decide
from twinloop.canary.pairs import (
    Judged,
    Pair,
    PairTally,
    PairwiseJudge,
    Reply,
    judge_both_orders,
    tally,
)
from twinloop.canary.repository import ENGINE_ERROR, TIMEOUT, CanaryCounts
from twinloop.canary.schemas import (
    CanaryStatus,
    CanaryView,
    CurrentDecision,
    DecisionView,
    StartCanaryRequest,
)
from twinloop.canary.state import ArmChoice, CanaryState
from twinloop.db.base import utcnow
from twinloop.db.models import AuditEntry, Canary, CanaryArmEvent, CanaryDecision, CanaryPair
from twinloop.db.session import SessionMaker
from twinloop.errors import EngineTimeoutError, InvalidRequestError, NotFoundError, TwinloopError
from twinloop.items import service as items
from twinloop.metrics import Metrics
from twinloop.releases import snapshots
from twinloop.releases.errors import ReleaseConflictError
from twinloop.releases.service import ReleaseController
from twinloop.settings import CanarySettings
from twinloop.states import CycleState
from twinloop.timestamps import as_utc

CANARY_ACTOR = "canary"
CALLER_ERRORS = (InvalidRequestError, NotFoundError)
# The training cycle behind a canary ends as the canary does. Rolled back, it hands its items
# back (see `_end_cycle`). Inconclusive, it keeps them `accepted` and waits for an admin:
# `abort` refuses a canary that ended inconclusive (nothing runs; Active serves the
# baseline); the admin's next canary of the snapshot continues the cycle (`_start`), and the
# admin's swap, rollback or restaging settles it (`_settle`: promoted, or rolled back with
# its items handed back).
CYCLE_STATE_AFTER = {
    CanaryStatus.PROMOTED: CycleState.PROMOTED,
    CanaryStatus.ABORTED: CycleState.ROLLED_BACK,
    CanaryStatus.INCONCLUSIVE: CycleState.INCONCLUSIVE,
}
log = structlog.get_logger(__name__)


class QaVerdict(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def passed(self) -> bool | None: ...
    @property
    def reasons(self) -> Sequence[str]: ...


class SnapshotVerdicts(Protocol):
    """The QA gate's verdict on a snapshot (twinloop.qa.service.QaService)."""

    async def snapshot_verdict(self, snapshot_id: str) -> QaVerdict | None: ...


class CanaryService:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        releases: ReleaseController,
        metrics: Metrics,
        settings: CanarySettings,
        max_rejections: int,
        verdicts: SnapshotVerdicts | None = None,
        judge: PairwiseJudge | None = None,
        rng: Random | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._releases = releases
        self._metrics = metrics
        self._settings = settings
        # `trainer.max_rejections`: a rolled-back cycle refuses its items as a rejected one does.
        self._max_rejections = max_rejections
        self._verdicts = verdicts
        self._judge = judge if settings.judge_pairs else None
        self._rng = rng or Random()
        self._clock = clock
        self._lock = asyncio.Lock()
        self._state: CanaryState | None = None
        # Set by a canary request's engine failure: the evaluation loop decides at once.
        self.woken = asyncio.Event()

    @property
    def state(self) -> CanaryState | None:
        return self._state

    # -- the request path ---------------------------------------------------------------

    def arm_for(self, *, user_id: str | None, session_id: str | None) -> ArmChoice | None:
        """The arm for one request, or None when no canary splits traffic.

        Cheap and synchronous: a hash and two comparisons. A release that moved under the
        canary (Shadow restaged, a manual swap) splits nothing; the next evaluation ends it.
        """
        state = self._state
        if state is None:
            return None
        release = self._releases.state
        shadow = release.serving(release.shadow_slot).snapshot_id
        active = release.serving(release.active_slot).snapshot_id
        if shadow != state.snapshot_id or active != state.baseline_snapshot_id:
            return None
        assigned = assign(
            percent=state.percent,
            user_id=user_id,
            session_id=session_id,
            rng=self._rng,
            salt=state.salt,
        )
        slot = release.shadow_slot if assigned.arm is Arm.CANARY else release.active_slot
        self._metrics.canary_requests.labels(assigned.arm.value, str(assigned.sticky).lower()).inc()
        return ArmChoice(state.id, assigned.arm, assigned.sticky, slot)

    async def record_failure(self, choice: ArmChoice, error: TwinloopError) -> None:
        """Count an engine error or timeout to its arm: a failed request writes no answer.

        Every failure to serve counts (an unreachable or failing engine, an adapter that
        cannot be loaded again); only errors that are the caller's (a prompt the engine
        refuses as invalid) count to no arm.
        """
        if isinstance(error, CALLER_ERRORS):
            return
        kind = TIMEOUT if isinstance(error, EngineTimeoutError) else ENGINE_ERROR
        self._metrics.canary_errors.labels(choice.arm.value, kind).inc()
        event = CanaryArmEvent(
            canary_id=choice.canary_id,
            arm=choice.arm.value,
            kind=kind,
            sticky=choice.sticky,
            error=f"{type(error).__name__}: {error.message}"[:2000],
        )
        try:
            async with self._sessionmaker.begin() as session:
                await repository.add(session, event)
        except Exception as e:  # the user's error is the engine's; never mask it with ours
            log.warning("canary failure not recorded", error=f"{type(e).__name__}: {e}")
        if choice.arm is Arm.CANARY:
            self.woken.set()  # judged now, not a period later

    def mirrors(self, choice: ArmChoice | None) -> bool:
        """Whether to ask the canary, too, the question Active is answering (a draw)."""
        state = self._state
        if choice is None or state is None or choice.arm is not Arm.ACTIVE:
            return False
        if choice.canary_id != state.id or state.mirror_percent <= 0:
            return False
        return self._rng.random() * 100 < state.mirror_percent

    async def record_pair(
        self,
        choice: ArmChoice,
        *,
        answer_id: str,
        question: str,
        domain: str,
        active_answer: str,
        canary: Reply,
    ) -> None:
        """Judge and store a mirrored pair; the user's request has long been answered.

        A pair whose answers differ goes to the LLM judge (when configured), in both orders;
        a judge that fails leaves the pair to the cheap signals and later corrections.
        """
        judged: Judged | None = None
        differ = canary.text.strip() != active_answer.strip()
        if self._judge is not None and differ and not canary.failed:
            try:
                judged = await judge_both_orders(self._judge, question, active_answer, canary.text)
            except TwinloopError as e:
                log.warning("pairwise judge failed; pair kept unjudged", error=e.message)
        row = CanaryPair(
            canary_id=choice.canary_id,
            answer_id=answer_id,
            domain=domain,
            canary_answer=canary.text,
            canary_latency_ms=canary.latency_ms,
            canary_finish_reason=canary.finish_reason,
            canary_error=canary.error[:2000] if canary.error else None,
            judge_active_first=judged.active_first if judged else None,
            judge_canary_first=judged.canary_first if judged else None,
        )
        try:
            async with self._sessionmaker.begin() as session:
                await repository.add(session, row)
        except Exception as e:  # a lost pair costs evidence, never a user's request
            self._metrics.canary_mirrors.labels("unrecorded").inc()
            log.warning("mirrored pair not recorded", error=f"{type(e).__name__}: {e}")
            return
        self._metrics.canary_mirrors.labels("failed" if canary.error else "paired").inc()
        if canary.error is not None:
            self.woken.set()  # a canary that fails on mirrors is judged now

    # -- reading ------------------------------------------------------------------------

    async def load(self) -> CanaryState | None:
        """Take the running canary from the database (at start, and from other gateways).

        Under the lock: a load must not put back a canary that an abort here is ending.
        """
        async with self._lock:
            async with self._sessionmaker.begin() as session:
                row = await repository.running(session)
            if row is not None:
                await self._follow(row)
            return self._set(row)

    async def status(self) -> CanaryView | None:
        """The running canary, else the latest one: arms, counts, statistics, decisions."""
        async with self._sessionmaker.begin() as session:
            row = await repository.running(session) or await repository.latest(session)
            if row is None:
                return None
            counts = await repository.counts(session, row.id)
            pairs = await repository.pairs(session, row.id)
            stored = await repository.decisions(session, row.id)
        current = None
        if row.status == CanaryStatus.RUNNING:
            decision, _ = await self._decide(row, counts, pairs)
            current = CurrentDecision(
                verdict=decision.verdict.value, reason=decision.reason, stats=decision.stats
            )
        return self._view(row, counts, current, stored)

    # -- changing -----------------------------------------------------------------------

    async def start(self, request: StartCanaryRequest, *, actor: str) -> CanaryView:
        """Start a canary of the staged Shadow, or adjust the running one's settings."""
        async with self._lock:
            return await self._start(request, actor=actor)

    async def _start(self, request: StartCanaryRequest, *, actor: str) -> CanaryView:
        """Under the lock."""
        release = self._releases.state
        shadow = release.serving(release.shadow_slot).snapshot_id
        active = release.serving(release.active_slot).snapshot_id
        async with self._sessionmaker.begin() as session:
            running = await repository.running(session)
        if running is not None:
            await self._follow(running)
        if running is not None and running.snapshot_id != shadow:
            raise ReleaseConflictError(
                f"canary {running.id} of snapshot {running.snapshot_id} is running, and "
                f"Shadow now serves {shadow}; abort it first"
            )
        if running is None:
            await self._refuse_unstaged(shadow=shadow, active=active)
        async with self._sessionmaker.begin() as session:
            if running is not None:
                row = await repository.get(session, running.id)
                assert row is not None
                action = "canary.adjust"
            else:
                row = Canary(
                    snapshot_id=shadow,
                    baseline_snapshot_id=active,
                    # Also a cycle its last canary left inconclusive: this one continues it.
                    cycle_id=await repository.cycle_awaiting(session, shadow, inconclusive=True),
                    mirror_percent=self._settings.mirror_percent,
                    min_requests=self._settings.min_requests,
                    max_duration_s=self._settings.max_duration_s,
                    salt=self._settings.salt,
                    status=CanaryStatus.RUNNING,
                    started_at=self._clock(),
                    started_by=actor,
                )
                action = "canary.start"
                if row.cycle_id is not None:
                    await repository.mark_cycle(session, row.cycle_id, CycleState.CANARY)
            row.percent = request.percent
            for field in ("min_requests", "max_duration_s", "mirror_percent"):
                value = getattr(request, field)
                if value is not None:
                    setattr(row, field, value)
            await repository.add(session, row)
            audit = _audit(actor, action, row, request.reason or action.split(".")[1])
            audit.details |= {"percent": row.percent, "min_requests": row.min_requests,
                              "max_duration_s": row.max_duration_s}  # fmt: skip
            await repository.add(session, audit)
            counts = await repository.counts(session, row.id)
        self._set(row)
        log.info(action, canary=row.id, snapshot=row.snapshot_id, percent=row.percent)
        return self._view(row, counts, None, [])

    async def abort(self, reason: str, *, actor: str) -> CanaryView:
        """End the canary now: all traffic to Active, and Active back on the baseline.

        Also undoes a promotion whose snapshot is still active (a rollback after the canary
        restores the desired state: the baseline snapshot, not only the traffic).
        """
        async with self._lock:
            async with self._sessionmaker.begin() as session:
                row = await repository.running(session) or await repository.latest(session)
                counts = await repository.counts(session, row.id) if row else None
            if row is None or counts is None:
                raise ReleaseConflictError("no canary is running")
            release = self._releases.state
            active = release.serving(release.active_slot).snapshot_id
            promoted_active = row.status == CanaryStatus.PROMOTED and active == row.snapshot_id
            if row.status != CanaryStatus.RUNNING and not promoted_active:
                raise ReleaseConflictError(
                    f"no canary is running (canary {row.id} ended {row.status})"
                )
            self._set(None)  # traffic first: no request is split from here on
            why = f"aborted by {actor}: {reason}"
            decision = Decision(Verdict.ABORT, why, {"arms": _arms(counts), "by": actor})
            await self._end(row, CanaryStatus.ABORTED, why, decision=decision, actor=actor)
            await self._restore_baseline(row, why)
            async with self._sessionmaker.begin() as session:
                stored = await repository.decisions(session, row.id)
        return self._view(row, counts, None, stored)

    async def evaluate(self) -> Decision | None:
        """Decide on the running canary, store the evaluation, and act on it.

        With none running: settle the cycles whose canary ended inconclusive by what the
        release serves now, then (with `canary.auto`) start a waiting cycle's canary.
        """
        async with self._lock:
            async with self._sessionmaker.begin() as session:
                row = await repository.running(session)
                counts = await repository.counts(session, row.id) if row else None
                pairs = await repository.pairs(session, row.id) if row else []
            self._set(row)
            if row is None or counts is None:
                await self._settle()
                if self._settings.auto:
                    await self._start_for_cycle()
                return None
            # The release the counts were taken on: a promotion swaps only if it still holds.
            generation = self._releases.state.generation
            await self._follow(row)
            if await self._release_moved(row):
                return None
            decision, judged = await self._decide(row, counts, pairs)
            self._publish(counts, judged)
            self._metrics.canary_decisions.labels(decision.verdict.value).inc()
            log.info("canary evaluated", canary=row.id, verdict=decision.verdict.value)
            if decision.verdict is Verdict.CONTINUE:
                async with self._sessionmaker.begin() as session:
                    await repository.add(session, _decision_row(row, decision))
            elif decision.verdict is Verdict.PROMOTE:
                await self._promote(row, decision, generation=generation)
            elif decision.verdict is Verdict.ABORT:
                self._set(None)
                await self._end(row, CanaryStatus.ABORTED, decision.reason, decision=decision)
                await self._restore_baseline(row, decision.reason)
            else:
                self._set(None)
                await self._end(row, CanaryStatus.INCONCLUSIVE, decision.reason, decision=decision)
            return decision

    # -- internals ----------------------------------------------------------------------

    async def _settle(self) -> None:
        """Under the lock, no canary running: move each cycle whose latest canary ended
        inconclusive on by what the release serves now, as an admin left it.

        Its snapshot active: promoted (a swap made it so). Served by neither slot: rolled
        back (a rollback, or another snapshot staged over it), its items handed back as an
        aborted canary's are. Still staged on Shadow: it waits. Each cycle moves once, out
        of `inconclusive` only; a cycle a new canary continues is in `canary` and not here.
        """
        release = self._releases.state  # in memory: nothing is asked of the controller
        active = release.serving(release.active_slot).snapshot_id
        shadow = release.serving(release.shadow_slot).snapshot_id
        async with self._sessionmaker.begin() as session:
            ended = await repository.unsettled(session)
            # Each slot's snapshot stands for the canary's when it is a child serving the same
            # adapters (an ingest staged since): the cycle's adapters are still served there.
            served = [
                (
                    canary,
                    await snapshots.stands_for(session, active, canary.snapshot_id),
                    await snapshots.stands_for(session, shadow, canary.snapshot_id),
                )
                for canary in ended
            ]
        for canary, in_active, in_shadow in served:
            if in_active:
                state = CycleState.PROMOTED
                why = f"snapshot {active} was made active by a swap outside the canary"
                if active != canary.snapshot_id:
                    why += f" (a child of {canary.snapshot_id} serving the same adapters)"
            elif not in_shadow:
                state = CycleState.ROLLED_BACK
                why = (
                    f"Shadow no longer serves snapshot {canary.snapshot_id} (now {shadow}) and "
                    f"Active does not (it serves {active})"
                )
            else:
                continue
            await self._settle_cycle(canary, state, why, active=active, shadow=shadow)

    async def _settle_cycle(
        self, canary: Canary, state: CycleState, why: str, *, active: str, shadow: str
    ) -> None:
        """Move the inconclusive canary's cycle into `state`, in one transaction with its
        audit entry and (rolled back) its items' hand-back."""
        assert canary.cycle_id is not None
        reason = f"canary {canary.id} ended inconclusive; then {why}"
        async with self._sessionmaker.begin() as session:
            if not await repository.settle_cycle(session, canary.cycle_id, state, reason=reason):
                return  # settled meanwhile (another gateway)
            audit = _audit(CANARY_ACTOR, "canary.settle", canary, reason)
            audit.details |= {
                "cycle_id": canary.cycle_id,
                "cycle_state": state.value,
                "active_snapshot_id": active,
                "shadow_snapshot_id": shadow,
            }
            await repository.add(session, audit)
            outcomes: Counter[str] = Counter()
            if state is CycleState.ROLLED_BACK:
                outcomes = await self._hand_back(
                    session,
                    canary,
                    reason=f"cycle {canary.cycle_id} rolled back after canary {canary.id} "
                    f"ended inconclusive: {why}",
                )
        self._count_items(outcomes)
        log.info(
            "inconclusive cycle settled", cycle=canary.cycle_id, canary=canary.id, state=state.value
        )

    async def _start_for_cycle(self) -> None:
        """With `canary.auto`: a cycle that passed QA and staged Shadow gets its canary.

        Not a cycle its canary left inconclusive: the next canary of it is an admin's call.
        """
        release = self._releases.state
        shadow = release.serving(release.shadow_slot).snapshot_id
        async with self._sessionmaker.begin() as session:
            cycle = await repository.cycle_awaiting(session, shadow)
        if cycle is None:
            return
        request = StartCanaryRequest(
            percent=self._settings.percent, reason=f"cycle {cycle} passed the QA gate"
        )
        try:
            await self._start(request, actor=CANARY_ACTOR)
        except TwinloopError as e:
            log.warning("automatic canary not started", cycle=cycle, error=e.message)

    async def _refuse_unstaged(self, *, shadow: str, active: str) -> None:
        if shadow == active:
            raise ReleaseConflictError(
                f"nothing is staged: Shadow serves Active's snapshot {active}; stage a snapshot "
                "(POST /snapshots) before starting a canary"
            )
        if self._verdicts is None:
            return
        verdict = await self._verdicts.snapshot_verdict(shadow)
        if verdict is not None and verdict.passed is False:
            raise ReleaseConflictError(
                f"Shadow's snapshot {shadow} was rejected by QA run {verdict.id}: "
                + "; ".join(verdict.reasons)
                + ". A rejected snapshot gets no canary."
            )

    async def _release_moved(self, row: Canary) -> bool:
        """End a canary whose release changed under it; True when it did.

        Called after `_follow`: a Shadow that still serves the canary's adapters is followed,
        not a move. Active serving the canary's snapshot, or a child of it serving the same
        adapters (an admin swapped one in before the canary followed it), is a promotion.
        """
        release = self._releases.state
        active = release.serving(release.active_slot).snapshot_id
        shadow = release.serving(release.shadow_slot).snapshot_id
        if active != row.snapshot_id and shadow == row.snapshot_id:
            return False  # the usual case: nothing to read
        async with self._sessionmaker.begin() as session:
            promoted = await snapshots.stands_for(session, active, row.snapshot_id)
        if promoted:
            why = f"snapshot {active} was made active outside the canary (a swap)"
            if active != row.snapshot_id:
                why += f"; it serves the adapters of snapshot {row.snapshot_id}"
            status = CanaryStatus.PROMOTED
        elif shadow != row.snapshot_id:
            why = f"Shadow no longer serves snapshot {row.snapshot_id} (now {shadow})"
            status = CanaryStatus.ABORTED
        else:
            return False
        self._set(None)
        await self._end(row, status, why)
        return True

    async def _follow(self, row: Canary) -> None:
        """Under the lock: a running canary whose Shadow moved to a snapshot standing for its
        own (an ingest's child: the same adapters, newer RAG versions) follows it.

        The canary's snapshot becomes Shadow's, recorded with an audit entry
        (`canary.follow`), so the split goes on, a promotion swaps in what Shadow serves,
        and its cycle ends as the canary does. The arms then differ in RAG versions as well
        as adapters, as Shadow and Active do between swaps. Until then (at most the canary
        loop's refresh) the request path splits nothing; any other move ends the canary at
        the next evaluation (`_release_moved`).
        """
        release = self._releases.state
        shadow = release.serving(release.shadow_slot).snapshot_id
        if row.status != CanaryStatus.RUNNING or row.snapshot_id == shadow:
            return
        async with self._sessionmaker.begin() as session:
            current = await repository.get(session, row.id)
            if current is None or current.status != CanaryStatus.RUNNING:
                return
            followed = current.snapshot_id
            if followed != shadow:  # else another gateway followed first
                if not await snapshots.stands_for(session, shadow, followed):
                    return
                current.snapshot_id = shadow
                why = (
                    f"Shadow moved from snapshot {followed} to {shadow}, which serves the same "
                    "adapters (newer documents or router rules)"
                )
                audit = _audit(CANARY_ACTOR, "canary.follow", current, why)
                audit.details |= {"from_snapshot_id": followed, "cycle_id": current.cycle_id}
                await repository.add(session, current, audit)
        if followed != shadow:
            self._metrics.canary_follows.inc()
            log.info("canary followed shadow", canary=row.id, snapshot=shadow, was=followed)
        row.snapshot_id = shadow
        self._set(row)

    async def _promote(self, row: Canary, decision: Decision, *, generation: int) -> None:
        async with self._sessionmaker.begin() as session:
            await repository.add(session, _decision_row(row, decision))
        try:
            # At the generation evaluated: a snapshot staged meanwhile is never swapped in.
            await self._releases.swap(
                actor=CANARY_ACTOR,
                reason=f"canary {row.id}: promote",
                expected_generation=generation,
            )
        except TwinloopError as e:
            # The canary keeps running; the next evaluation decides (and tries) again.
            log.warning("canary promotion failed", canary=row.id, error=e.message)
            return
        self._set(None)
        await self._end(row, CanaryStatus.PROMOTED, decision.reason)

    async def _restore_baseline(self, row: Canary, reason: str) -> None:
        release = self._releases.state
        if release.serving(release.active_slot).snapshot_id == row.baseline_snapshot_id:
            return
        await self._releases.rollback(
            actor=CANARY_ACTOR,
            reason=f"canary {row.id}: {reason}",
            snapshot_id=row.baseline_snapshot_id,
            expected_generation=release.generation,  # the release this decision was made on
        )

    async def _end(
        self,
        row: Canary,
        status: CanaryStatus,
        reason: str,
        *,
        decision: Decision | None = None,
        actor: str = CANARY_ACTOR,
    ) -> None:
        """Record the canary's end, and its cycle's, in one transaction."""
        async with self._sessionmaker.begin() as session:
            current = await repository.get(session, row.id)
            assert current is not None
            current.status, current.reason, current.ended_at = status, reason, self._clock()
            records: list[Any] = [_audit(actor, f"canary.{status}", current, reason)]
            if decision is not None:
                records.append(_decision_row(current, decision))
            await repository.add(session, current, *records)
            outcomes = await self._end_cycle(session, current, status, reason)
        self._count_items(outcomes)
        row.status, row.reason, row.ended_at = current.status, reason, current.ended_at
        log.info("canary ended", canary=row.id, status=status.value, reason=reason)

    async def _end_cycle(
        self, session: AsyncSession, canary: Canary, status: CanaryStatus, reason: str
    ) -> Counter[str]:
        """The cycle behind the canary ends as it does; rolled back, it hands its items back.

        Only on the move into `rolled_back`: a cycle already rolled back handed them back
        then, and they may belong to a later cycle now. What was done with the items.
        """
        if canary.cycle_id is None:
            return Counter()
        state = CYCLE_STATE_AFTER[status]
        before = await repository.mark_cycle(
            session,
            canary.cycle_id,
            state,
            reason=None if state is CycleState.PROMOTED else f"canary {canary.id}: {reason}",
        )
        if state is not CycleState.ROLLED_BACK or before in (None, CycleState.ROLLED_BACK):
            return Counter()
        return await self._hand_back(
            session,
            canary,
            reason=f"cycle {canary.cycle_id} rolled back by canary {canary.id}: {reason}",
        )

    async def _hand_back(
        self, session: AsyncSession, canary: Canary, *, reason: str
    ) -> Counter[str]:
        """The rolled-back cycle's items, refused with `reason` (`twinloop.items`)."""
        assert canary.cycle_id is not None
        outcomes = await items.hand_back_refused(
            session, canary.cycle_id, reason=reason, max_rejections=self._max_rejections
        )
        log.info(
            "cycle items handed back",
            cycle=canary.cycle_id,
            canary=canary.id,
            outcomes=dict(outcomes),
        )
        return outcomes

    def _count_items(self, outcomes: Counter[str]) -> None:
        """Called once committed: a transaction rolled back handed nothing back."""
        for outcome, count in outcomes.items():
            self._metrics.canary_items.labels(outcome).inc(count)

    async def _decide(
        self, row: Canary, counts: CanaryCounts, pairs: Sequence[Pair]
    ) -> tuple[Decision, PairTally]:
        """The decision on the counts and the pairs (tallied, as the decision saw them)."""
        cfg = self._settings.model_copy(
            update={
                "percent": row.percent,
                "min_requests": row.min_requests,
                "max_duration_s": row.max_duration_s,
                "mirror_percent": row.mirror_percent,
            }
        )
        elapsed = self._elapsed_s(row)

        def decide_now() -> tuple[Decision, PairTally]:
            judged = tally(
                pairs, drift_domains=cfg.drift_domains, drift_similarity=cfg.drift_similarity
            )
            return decide(counts.active, counts.canary, judged, cfg, elapsed_s=elapsed), judged

        # scipy, numpy and difflib over every latency and pair: CPU work, off the event loop.
        return await asyncio.to_thread(decide_now)

    def _publish(self, counts: CanaryCounts, pairs: PairTally) -> None:
        """Each arm's figures as gauges, so that a dashboard shows the arms side by side."""
        for arm, arm_counts in ((Arm.ACTIVE, counts.active), (Arm.CANARY, counts.canary)):
            p95 = arm_counts.p95_ms
            figures = {
                "requests": arm_counts.requests,
                "failures": arm_counts.failures,
                "error_rate": arm_counts.error_rate,
                "p95_seconds": p95 / 1000 if p95 is not None else None,
                "thumbs_up": arm_counts.thumbs_up,
                "thumbs_down": arm_counts.thumbs_down,
                "corrections": arm_counts.corrections,
                "positive_rate": arm_counts.positive_rate,
            }
            for figure, value in figures.items():
                gauge = self._metrics.canary_arm.labels(arm.value, figure)
                gauge.set(math.nan if value is None else value)
        for outcome, number in pairs.summary().items():
            self._metrics.canary_pairs.labels(outcome).set(number)

    def _elapsed_s(self, row: Canary) -> float:
        end = as_utc(row.ended_at) if row.ended_at else self._clock()
        return max(0.0, (end - as_utc(row.started_at)).total_seconds())

    def _set(self, row: Canary | None) -> CanaryState | None:
        if row is None or row.status != CanaryStatus.RUNNING:
            self._state = None
        else:
            self._state = CanaryState(
                id=row.id,
                snapshot_id=row.snapshot_id,
                baseline_snapshot_id=row.baseline_snapshot_id,
                percent=row.percent,
                salt=row.salt,
                mirror_percent=row.mirror_percent,
            )
        self._metrics.canary_percent.set(self._state.percent if self._state else 0.0)
        return self._state

    def _view(
        self,
        row: Canary,
        counts: CanaryCounts,
        current: CurrentDecision | None,
        stored: Sequence[CanaryDecision],
    ) -> CanaryView:
        elapsed = self._elapsed_s(row)
        return CanaryView(
            id=row.id,
            status=CanaryStatus(row.status),
            snapshot_id=row.snapshot_id,
            baseline_snapshot_id=row.baseline_snapshot_id,
            cycle_id=row.cycle_id,
            percent=row.percent,
            mirror_percent=row.mirror_percent,
            min_requests=row.min_requests,
            max_duration_s=row.max_duration_s,
            started_at=as_utc(row.started_at),
            ended_at=as_utc(row.ended_at) if row.ended_at else None,
            started_by=row.started_by,
            reason=row.reason,
            elapsed_s=round(elapsed, 3),
            time_left_s=round(max(0.0, row.max_duration_s - elapsed), 3)
            if row.status == CanaryStatus.RUNNING
            else 0.0,
            arms=_arms(counts),
            unsticky_requests={arm.value: n for arm, n in counts.unsticky.items()},
            current=current,
            decisions=[DecisionView.model_validate(d) for d in stored],
        )


def _arms(counts: CanaryCounts) -> dict[str, dict[str, Any]]:
    return {"active": counts.active.summary(), "canary": counts.canary.summary()}


def _decision_row(row: Canary, decision: Decision) -> CanaryDecision:
    return CanaryDecision(
        canary_id=row.id,
        snapshot_id=row.snapshot_id,
        baseline_snapshot_id=row.baseline_snapshot_id,
        share=row.percent,
        decision=decision.verdict.value,
        reason=decision.reason,
        stats=decision.stats,
    )


def _audit(actor: str, action: str, row: Canary, reason: str) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        action=action,
        target=row.snapshot_id,
        reason=reason,
        details={"canary_id": row.id, "baseline_snapshot_id": row.baseline_snapshot_id},
    )
