"""The miner: a pass over the answer log, and an admin's review of what it proposed.

A pass (`mine`) reads the answers stored since the last pass (and `window_s` before it, so a
retry of an answer the last pass read is seen), finds the signals (`signals`), screens each
one (`IngestScreen.texts`, as /ingest screens feedback: stored redacted, quarantined when a
rule stops it), keeps at most `max_per_source` new ones per user, stores them `proposed`,
then decides agreement over every live proposal (`agreement`): an agreed one becomes a
pending training example (source `mined`) that the next cycle cleans like any other.
Each step's database work is a short transaction of its own; the similarity work runs
between them, off the event loop. A pass is idempotent: a proposal is keyed by its answer
and rule, and agreement is decided again from what is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.base import utcnow
from twinloop.db.models import AuditEntry, MinedSignal, MiningRun, TrainingExample
from twinloop.db.session import SessionMaker
from twinloop.errors import InvalidRequestError, NotFoundError, TwinloopError
from twinloop.ingest.learning import example_sha256
from twinloop.ingest.screening import IngestScreen
from twinloop.mining import repository
from twinloop.mining.agreement import Proposal, agreements
from twinloop.mining.metrics import MiningMetrics
from twinloop.mining.schemas import MinedList, MinedView, MiningRunView
from twinloop.mining.signals import REVIEW, Signal, find_signals
from twinloop.mining.similarity import (
    EMBEDDING,
    Embed,
    EmbeddingSimilarity,
    LexicalSimilarity,
    QuestionSimilarity,
)
from twinloop.registry import repository as registry
from twinloop.settings import MiningSettings
from twinloop.states import ItemStatus, MinedState
from twinloop.timestamps import as_utc

log = structlog.get_logger(__name__)

MINED_SOURCE = "mined"
"""`TrainingExample.source` of what a mined proposal teaches."""


class MinedStateError(TwinloopError):
    """The proposal is not in a state that allows what was asked."""

    status_code = 409


def question_similarity(settings: MiningSettings, embed: Embed | None) -> QuestionSimilarity:
    """The similarity `settings.similarity` names (`auto`: the embedding model when loaded)."""
    if settings.similarity == EMBEDDING and embed is None:
        raise TwinloopError(
            "mining.similarity is 'embedding' but this process has no embedding model loaded; "
            "use 'auto' or 'lexical'"
        )
    if embed is not None and settings.similarity != "lexical":
        return EmbeddingSimilarity(embed=embed, threshold=settings.embedding_threshold)
    return LexicalSimilarity(threshold=settings.lexical_threshold)


class MiningService:
    def __init__(
        self,
        *,
        sessionmaker: SessionMaker,
        settings: MiningSettings,
        cleaning: CleaningConfig,
        metrics: MiningMetrics,
        similarity: QuestionSimilarity | None = None,
    ) -> None:
        """`similarity` (`question_similarity`) is what a mining process compares questions
        with; without it the service only lists and reviews (the gateway)."""
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._cleaning = cleaning
        self._metrics = metrics
        self._similarity_or_none = similarity

    @property
    def _similarity(self) -> QuestionSimilarity:
        if self._similarity_or_none is None:
            raise TwinloopError("this process does not mine (no question similarity given)")
        return self._similarity_or_none

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    # -- a pass -------------------------------------------------------------------------

    async def mine(self, *, trigger: str, now: datetime | None = None) -> MiningRunView | None:
        """One pass over the answer log; None (nothing read or written) when mining is off."""
        if not self._settings.enabled:
            return None
        started = time.perf_counter()
        now = now or utcnow()
        window = timedelta(seconds=self._settings.window_s)
        async with self._sessionmaker.begin() as session:
            last = await repository.last_run(session)
            lookback = timedelta(seconds=self._settings.lookback_s)
            scanned_from = as_utc(last.scanned_until) if last is not None else now - lookback
            answers = await repository.answers_between(session, scanned_from - window, now)
        signals = await asyncio.to_thread(find_signals, answers, self._similarity, self._settings)
        counts: Counter[str] = Counter(answers=len(answers), signals=len(signals))
        outcomes: Counter[tuple[str, str]] = Counter()
        rows, capped = await self._store(signals)
        for signal in capped:
            outcomes[(signal.rule, "capped")] += 1
        for row in rows:
            outcomes[(row.rule, row.state)] += 1
        agreed = await self._agree(now)
        for row in agreed:
            outcomes[(row.rule, MinedState.AGREED)] += 1
        for (_, outcome), number in outcomes.items():
            counts[outcome] += number
        async with self._sessionmaker.begin() as session:
            run = MiningRun(
                trigger=trigger,
                scanned_from=scanned_from,
                scanned_until=now,
                similarity=self._similarity.kind,
                counts=dict(counts),
                seconds=round(time.perf_counter() - started, 3),
            )
            await repository.add(session, run)
            state_counts = await repository.counts(session)
        self._count(trigger, outcomes, state_counts)
        log.info("mining_pass", trigger=trigger, **counts)
        return MiningRunView.model_validate(run)

    async def _store(self, signals: Sequence[Signal]) -> tuple[list[MinedSignal], list[Signal]]:
        """The signals no proposal has yet, screened and stored (at most `max_per_source` per
        user), and those over the cap.

        Another pass storing the same proposals at the same moment (a `twinloop train` next to
        the trainer) makes this one's insert collide on (answer, rule): it reads again once.
        """
        try:
            return await self._insert(signals)
        except IntegrityError:
            log.info("mining_collision", detail="another pass stored them first; reading again")
            return await self._insert(signals)

    async def _insert(self, signals: Sequence[Signal]) -> tuple[list[MinedSignal], list[Signal]]:
        screen = IngestScreen(config=self._cleaning)
        async with self._sessionmaker.begin() as session:
            known = await repository.existing_keys(
                session, [(s.answer.id, s.rule) for s in signals]
            )
            fresh = [s for s in signals if (s.answer.id, s.rule) not in known]
            kept, capped = _cap_per_source(fresh, self._settings.max_per_source)
            rows = [await _proposal(s, screen) for s in kept]
            await repository.add(session, *rows)
        return rows, capped

    async def _agree(self, now: datetime) -> list[MinedSignal]:
        """Agreement over every live proposal; the agreed ones' training examples, pending."""
        since = now - timedelta(seconds=self._settings.lookback_s)
        async with self._sessionmaker.begin() as session:
            live = await repository.live_proposals(session, since)
        proposals = [_as_proposal(row) for row in live]
        sims = await asyncio.to_thread(self._similarity.matrix, [p.question for p in proposals])
        found = agreements(
            proposals,
            sims,
            threshold=self._similarity.threshold,
            users=self._settings.agreement_users,
        )
        if not found:
            return []
        async with self._sessionmaker.begin() as session:
            agreed = []
            for row in await repository.proposals_to_update(session, sorted(found)):
                if row.state != MinedState.PROPOSED:
                    continue  # an admin reviewed it meanwhile
                row.state = MinedState.AGREED
                row.evidence = {**row.evidence, "agreement": found[row.id]}
                await _teach(session, row)
                agreed.append(row)
        return agreed

    def _count(
        self,
        trigger: str,
        outcomes: Counter[tuple[str, str]],
        state_counts: dict[str, dict[str, int]],
    ) -> None:
        self._metrics.runs.labels(trigger).inc()
        for (rule, outcome), number in outcomes.items():
            self._metrics.items.labels(rule, outcome).inc(number)
        for state in MinedState:
            self._metrics.proposals.labels(state).set(sum(state_counts.get(state, {}).values()))

    # -- the admin's view and review --------------------------------------------------------

    async def listing(
        self, *, state: str | None = None, rule: str | None = None, limit: int = 100
    ) -> MinedList:
        async with self._sessionmaker.begin() as session:
            rows = await repository.listing(session, state=state, rule=rule, limit=limit)
            last = await repository.last_run(session)
            return MinedList(
                enabled=self._settings.enabled,
                counts=await repository.counts(session),
                last_run=MiningRunView.model_validate(last) if last is not None else None,
                items=[_view(row, status) for row, status in rows],
            )

    async def get(self, signal_id: str) -> MinedView:
        async with self._sessionmaker.begin() as session:
            row = await _existing(session, signal_id)
            return _view(row, await repository.example_status(session, row.example_id))

    async def accept(
        self, signal_id: str, *, actor: str, answer: str | None = None, reason: str = ""
    ) -> MinedView:
        """An admin accepts a proposal: it becomes a pending training example (cleaned by the
        next cycle like any other). `answer` replaces the chosen answer, and is needed when the
        proposal has none; it passes the screen first."""
        async with self._sessionmaker.begin() as session:
            row = await _existing(session, signal_id, for_update=True)
            if row.state != MinedState.PROPOSED:
                raise MinedStateError(
                    f"mined item {signal_id} is {row.state}; only a proposed one can be accepted"
                )
            if answer is not None:
                screen = IngestScreen(config=self._cleaning)
                screened = await screen.texts(row.question, answer)
                if screened.rule is not None:
                    raise InvalidRequestError(
                        f"the answer is refused by the screen ({screened.rule}): {screened.reason}"
                    )
                row.chosen_answer, row.chosen_from = screened.example.answer, REVIEW
            elif row.chosen_answer is None:
                raise MinedStateError(
                    f"mined item {signal_id} ({row.rule}) has no chosen answer; send `answer` "
                    "with the right one"
                )
            row.state, row.reason = MinedState.ACCEPTED, reason or None
            row.reviewed_by, row.reviewed_at = actor, utcnow()
            await _teach(session, row)
            session.add(_audit("mined_accept", row, actor, reason))
            view = _view(row, ItemStatus.PENDING)
        self._metrics.items.labels(row.rule, MinedState.ACCEPTED).inc()
        return view

    async def reject(self, signal_id: str, *, actor: str, reason: str = "") -> MinedView:
        """An admin rejects a proposal; if it was trainable, its example is deleted and every
        adapter that learned from it is tainted (as when feedback is deleted)."""
        async with self._sessionmaker.begin() as session:
            row = await _existing(session, signal_id, for_update=True)
            if row.state not in (MinedState.PROPOSED, MinedState.AGREED, MinedState.ACCEPTED):
                raise MinedStateError(
                    f"mined item {signal_id} is {row.state}; it teaches nothing to reject"
                )
            details: dict[str, Any] = {}
            if row.example_id is not None:
                example = await session.get(TrainingExample, row.example_id)
                if example is not None and example.deleted_at is None:
                    example.deleted_at = utcnow()
                details["tainted_adapters"] = await registry.taint_adapters_of(
                    session, [row.example_id], f"trained on mined item {signal_id}, since rejected"
                )
            row.state, row.reason = MinedState.REJECTED, reason or None
            row.reviewed_by, row.reviewed_at = actor, utcnow()
            session.add(_audit("mined_reject", row, actor, reason, details))
            view = _view(row, await repository.example_status(session, row.example_id))
        self._metrics.items.labels(row.rule, MinedState.REJECTED).inc()
        return view


def _cap_per_source(signals: Sequence[Signal], limit: int) -> tuple[list[Signal], list[Signal]]:
    """At most `limit` new signals per source, in the order found; and those over it."""
    seen: Counter[str] = Counter()
    kept: list[Signal] = []
    capped: list[Signal] = []
    for signal in signals:
        seen[signal.answer.source] += 1
        (kept if seen[signal.answer.source] <= limit else capped).append(signal)
    return kept, capped


async def _proposal(signal: Signal, screen: IngestScreen) -> MinedSignal:
    """The signal as a proposal, screened like feedback: its texts redacted (always: they are
    copies, the answer log keeps what was served), quarantined when a rule stops it."""
    rejected = signal.answer.answer
    if signal.chosen is not None:
        screened = await screen.texts(signal.answer.question, signal.chosen, (rejected,))
        chosen: str | None = screened.example.answer
        rejected = screened.example.extra[0]
    else:
        screened = await screen.texts(signal.answer.question, rejected)
        chosen, rejected = None, screened.example.answer
    quarantined = screened.rule is not None
    return MinedSignal(
        rule=signal.rule,
        state=MinedState.QUARANTINED if quarantined else MinedState.PROPOSED,
        answer_id=signal.answer.id,
        later_answer_id=signal.later.id if signal.later is not None else None,
        source=signal.answer.source,
        domain=signal.answer.domain,
        question=screened.example.question,
        rejected_answer=rejected,
        chosen_answer=chosen,
        chosen_from=signal.chosen_from,
        similarity=signal.similarity,
        gap_s=signal.gap_s,
        evidence=signal.evidence,
        screen_rule=screened.rule,
        reason=f"screened when mined: {screened.reason}" if quarantined else None,
    )


async def _teach(session: AsyncSession, row: MinedSignal) -> None:
    """The pending training example a trainable proposal becomes (chosen over rejected)."""
    assert row.chosen_answer is not None
    example = TrainingExample(
        source=MINED_SOURCE,
        domain=row.domain,
        question=row.question,
        answer=row.chosen_answer,
        rejected_answer=row.rejected_answer,
        status=ItemStatus.PENDING,
        content_sha256=example_sha256(
            row.domain, row.question, row.chosen_answer, rejected_answer=row.rejected_answer
        ),
    )
    await repository.add(session, example)
    row.example_id = example.id


def _as_proposal(row: MinedSignal) -> Proposal:
    return Proposal(
        id=row.id,
        rule=row.rule,
        state=row.state,
        answer_id=row.answer_id,
        later_answer_id=row.later_answer_id,
        source=row.source,
        domain=row.domain,
        question=row.question,
        chosen_from=row.chosen_from if row.chosen_answer is not None else None,
    )


async def _existing(
    session: AsyncSession, signal_id: str, *, for_update: bool = False
) -> MinedSignal:
    row = await repository.get(session, signal_id, for_update=for_update)
    if row is None:
        raise NotFoundError(f"mined item {signal_id} does not exist")
    return row


def _view(row: MinedSignal, example_status: str | None) -> MinedView:
    view = MinedView.model_validate(row)
    return view.model_copy(update={"example_status": example_status})


def _audit(
    action: str, row: MinedSignal, actor: str, reason: str, details: dict[str, Any] | None = None
) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        action=action,
        target=row.id,
        reason=reason or None,
        details={"rule": row.rule, "answer_id": row.answer_id, **(details or {})},
    )
