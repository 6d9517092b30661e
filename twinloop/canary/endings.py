"""How a canary ends, whichever gateway ends it.

Several gateways evaluate the same canary, and an admin may abort it through any of them, so
every end is one conditional update of the canary's status (`repository.end`): of several
at once exactly one acts, records the end, ends the training cycle behind it and hands its
items back; the others find it ended and do nothing.

A promotion is claimed before it swaps: the canary turns `promoted` with no `ended_at`, the
release controller swaps, and only then is the promotion recorded (`ended_at`, the audit
entry, the cycle promoted). So an abort cannot land between a swap and its record (it is a
409 while the claim stands), a swap that fails puts the canary back to running (`resume`),
and a claim left by a gateway that stopped is healed by the others' loops
(`heal_promotions`): recorded if the swap was made, resumed if it was not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.canary import repository
from twinloop.canary.decision import Decision
from twinloop.canary.schemas import CanaryStatus
from twinloop.db.models import AuditEntry, Canary, CanaryDecision
from twinloop.db.session import SessionMaker
from twinloop.errors import TwinloopError
from twinloop.items import service as items
from twinloop.metrics import Metrics
from twinloop.releases import snapshots
from twinloop.releases.service import ReleaseController
from twinloop.settings import CanarySettings
from twinloop.states import CycleState
from twinloop.timestamps import as_utc

CANARY_ACTOR = "canary"
# A promotion's swap checks the engine and loads what it lacks, each within the engines' and
# the fetch step's timeouts: a claim older than this was left by a gateway that stopped.
CLAIM_TIMEOUT_S = 600.0
# The training cycle behind a canary ends as the canary does. Rolled back, it hands its items
# back (see `_end_cycle`). Inconclusive, it keeps them `accepted` and waits for an admin:
# `abort` refuses a canary that ended inconclusive (nothing runs; Active serves the
# baseline); the admin's next canary of the snapshot continues the cycle (the service's
# `_start`), and the admin's swap, rollback or restaging settles it (the service's `_settle`:
# promoted, or rolled back with its items handed back).
CYCLE_STATE_AFTER = {
    CanaryStatus.PROMOTED: CycleState.PROMOTED,
    CanaryStatus.ABORTED: CycleState.ROLLED_BACK,
    CanaryStatus.INCONCLUSIVE: CycleState.INCONCLUSIVE,
}
log = structlog.get_logger(__name__)


class CanaryEndings:
    """Ends canaries for one gateway's `CanaryService`, which it tells what runs now
    (`publish`: the canary that splits traffic, or None)."""

    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        releases: ReleaseController,
        metrics: Metrics,
        settings: CanarySettings,
        max_rejections: int,
        clock: Callable[[], datetime],
        publish: Callable[[Canary | None], object],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._releases = releases
        self._metrics = metrics
        self._settings = settings
        self._max_rejections = max_rejections
        self._clock = clock
        self._publish = publish

    async def promote(self, row: Canary, decision: Decision, *, generation: int) -> None:
        """Claim the promotion, swap, then record it.

        The claim marks the canary `promoted` before the swap, with no `ended_at` yet, in one
        conditional update: whichever gateway ends the canary first acts, and an abort or
        another gateway's decision finds it ended (an admin's abort is a 409 until the
        promotion is recorded; then it rolls the promotion back). A swap that fails puts
        the canary back to running (`_resume`); a claim its gateway left behind is healed
        by the others (`heal_promotions`).
        """
        async with self._sessionmaker.begin() as session:
            claimed = await repository.end(
                session, row.id, status=CanaryStatus.PROMOTED, reason=decision.reason,
                ended_at=None,
            )  # fmt: skip
            if claimed is not None:
                await repository.add(session, decision_row(claimed, decision))
        self._publish(None)
        if claimed is None:
            self._metrics.canary_races.labels("end").inc()
            log.info("canary ended meanwhile by another gateway", canary=row.id)
            return
        try:
            # At the generation evaluated: a snapshot staged meanwhile is never swapped in.
            await self._releases.swap(
                actor=CANARY_ACTOR,
                reason=f"canary {row.id}: promote",
                expected_generation=generation,
            )
        except TwinloopError as e:
            log.warning("canary promotion failed", canary=row.id, error=e.message)
            self._metrics.canary_promotions.labels("swap_failed").inc()
            await self._resume(row, e.message)
            return
        await self._record_promotion(row)
        self._metrics.canary_promotions.labels("swapped").inc()

    async def _record_promotion(self, row: Canary) -> bool:
        """The swap is done: the claimed promotion ends, with its audit entry and its cycle
        promoted; False if it is no longer a claim (recorded by another gateway)."""
        async with self._sessionmaker.begin() as session:
            recorded = await repository.record_promotion(session, row.id, ended_at=self._clock())
            if recorded is None:
                return False
            reason = recorded.reason or "promoted"
            outcomes = await self._record_end(
                session, recorded, CanaryStatus.PROMOTED, reason, actor=CANARY_ACTOR
            )
        self.count_items(outcomes)
        row.status, row.reason, row.ended_at = recorded.status, reason, recorded.ended_at
        log.info("canary ended", canary=row.id, status="promoted", reason=reason)
        return True

    async def heal_promotions(self) -> None:
        """Under the lock, no canary running: promotions claimed by a gateway that stopped
        before recording them. Active serving the snapshot: the swap was made, record it.
        Not, and claimed over `CLAIM_TIMEOUT_S` ago: it stopped before swapping, so the
        canary runs again (the next evaluation decides again)."""
        release = self._releases.state  # refreshed by `evaluate`
        active = release.serving(release.active_slot).snapshot_id
        async with self._sessionmaker.begin() as session:
            claims = [
                (
                    canary,
                    as_utc(at),
                    await snapshots.stands_for(session, active, canary.snapshot_id),
                )
                for canary, at in await repository.claimed_promotions(session)
            ]
        for canary, claimed_at, swapped in claims:
            if swapped:
                log.warning("promotion recorded for a gateway that stopped", canary=canary.id)
                if await self._record_promotion(canary):
                    self._metrics.canary_promotions.labels("recorded").inc()
            elif self._clock() - claimed_at > timedelta(seconds=CLAIM_TIMEOUT_S):
                log.warning("promotion claimed by a gateway that stopped", canary=canary.id)
                await self._resume(canary, "the gateway promoting it stopped before the swap")
                self._metrics.canary_promotions.labels("resumed").inc()

    async def _resume(self, row: Canary, why: str) -> None:
        """A canary whose promotion did not swap runs again, and the next evaluation decides
        (and tries) again; its split starts over `split_delay_s` later on every gateway, as a
        new canary's does. If another canary was started meanwhile, this one ends aborted."""
        applies_at = self._clock() + timedelta(seconds=self._settings.split_delay_s)
        try:
            async with self._sessionmaker.begin() as session:
                resumed = await repository.resume(session, row.id, percent_from=applies_at)
                if resumed is not None:
                    reason = f"not promoted: {why}"
                    await repository.add(
                        session, audit_entry(CANARY_ACTOR, "canary.resume", resumed, reason)
                    )
        except IntegrityError:
            resumed = None
        if resumed is not None:
            self._publish(resumed)
            return
        await self.end(
            row,
            CanaryStatus.ABORTED,
            f"its promotion failed ({why}) and another canary was started meanwhile",
            expected=CanaryStatus.PROMOTED,
        )

    async def restore_baseline(self, row: Canary, reason: str) -> None:
        release = self._releases.state
        if release.serving(release.active_slot).snapshot_id == row.baseline_snapshot_id:
            return
        await self._releases.rollback(
            actor=CANARY_ACTOR,
            reason=f"canary {row.id}: {reason}",
            snapshot_id=row.baseline_snapshot_id,
            expected_generation=release.generation,  # the release this decision was made on
        )

    async def end(
        self,
        row: Canary,
        status: CanaryStatus,
        reason: str,
        *,
        decision: Decision | None = None,
        actor: str = CANARY_ACTOR,
        expected: CanaryStatus = CanaryStatus.RUNNING,
    ) -> bool:
        """Record the canary's end, and its cycle's, in one transaction; False (nothing
        written) when it was no longer `expected`: another gateway ended it first."""
        async with self._sessionmaker.begin() as session:
            current = await repository.end(
                session, row.id, status=status, reason=reason, ended_at=self._clock(),
                expected=expected,
            )  # fmt: skip
            if current is None:
                self._metrics.canary_races.labels("end").inc()
                log.info("canary ended meanwhile by another gateway", canary=row.id)
                return False
            if decision is not None:
                await repository.add(session, decision_row(current, decision))
            outcomes = await self._record_end(session, current, status, reason, actor=actor)
        self.count_items(outcomes)
        row.status, row.reason, row.ended_at = current.status, reason, current.ended_at
        log.info("canary ended", canary=row.id, status=status.value, reason=reason)
        return True

    async def _record_end(
        self, session: AsyncSession, canary: Canary, status: CanaryStatus, reason: str, *,
        actor: str,
    ) -> Counter[str]:  # fmt: skip
        """The audit entry of the canary's end, and its cycle's end; what became of the items."""
        await repository.add(session, audit_entry(actor, f"canary.{status}", canary, reason))
        return await self._end_cycle(session, canary, status, reason)

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
        return await self.hand_back(
            session,
            canary,
            reason=f"cycle {canary.cycle_id} rolled back by canary {canary.id}: {reason}",
        )

    async def hand_back(
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

    def count_items(self, outcomes: Counter[str]) -> None:
        """Called once committed: a transaction rolled back handed nothing back."""
        for outcome, count in outcomes.items():
            self._metrics.canary_items.labels(outcome).inc(count)


def decision_row(row: Canary, decision: Decision) -> CanaryDecision:
    return CanaryDecision(
        canary_id=row.id,
        snapshot_id=row.snapshot_id,
        baseline_snapshot_id=row.baseline_snapshot_id,
        share=row.percent,
        decision=decision.verdict.value,
        reason=decision.reason,
        stats=decision.stats,
    )


def audit_entry(actor: str, action: str, row: Canary, reason: str) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        action=action,
        target=row.snapshot_id,
        reason=reason,
        details={"canary_id": row.id, "baseline_snapshot_id": row.baseline_snapshot_id},
    )
