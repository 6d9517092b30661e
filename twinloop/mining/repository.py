"""Queries of the miner: the answer log it reads, its proposals and passes. Flushes only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer, MinedSignal, MiningRun, TrainingExample
from twinloop.mining.signals import LoggedAnswer
from twinloop.states import LIVE_MINED_STATES
from twinloop.timestamps import as_utc

_CHUNK = 500


def answer_source(user_id: str | None, api_key_id: str | None, session_id: str | None) -> str:
    """Who asked: the (key-scoped) user id, else the key's (or no key's) session."""
    if user_id:
        return user_id
    return f"{api_key_id or '-'}/session:{session_id}"


async def answers_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[LoggedAnswer]:
    """Users' answers stored in (since, until]: not previews, and only answers that say who
    asked (a user or a session id); an anonymous answer cannot be told from another's."""
    rows = await session.execute(
        select(
            Answer.id,
            Answer.user_id,
            Answer.api_key_id,
            Answer.session_id,
            Answer.domain,
            Answer.question,
            Answer.answer,
            Answer.created_at,
            Answer.finish_reason,
        )
        .where(
            Answer.created_at > since,
            Answer.created_at <= until,
            Answer.is_preview.is_(False),
            (Answer.user_id.is_not(None)) | (Answer.session_id.is_not(None)),
        )
        .order_by(Answer.created_at, Answer.id)
    )
    return [
        LoggedAnswer(
            id=id_,
            source=answer_source(user_id, key_id, session_id),
            domain=domain,
            question=question,
            answer=answer,
            created_at=as_utc(created_at),
            finish_reason=finish,
        )
        for id_, user_id, key_id, session_id, domain, question, answer, created_at, finish in rows
    ]


async def existing_keys(
    session: AsyncSession, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (answer id, rule) already have a proposal."""
    wanted = set(keys)
    answer_ids = sorted({answer_id for answer_id, _ in wanted})
    found: set[tuple[str, str]] = set()
    for start in range(0, len(answer_ids), _CHUNK):  # bound the statement's parameters
        rows = await session.execute(
            select(MinedSignal.answer_id, MinedSignal.rule).where(
                MinedSignal.answer_id.in_(answer_ids[start : start + _CHUNK])
            )
        )
        found.update((answer_id, rule) for answer_id, rule in rows)
    return found & wanted


async def live_proposals(session: AsyncSession, since: datetime) -> list[MinedSignal]:
    """Proposals that count as evidence (proposed, agreed, accepted) mined after `since`."""
    rows = await session.execute(
        select(MinedSignal)
        .where(MinedSignal.state.in_(LIVE_MINED_STATES), MinedSignal.created_at > since)
        .order_by(MinedSignal.created_at, MinedSignal.id)
    )
    return list(rows.scalars())


async def proposals_to_update(session: AsyncSession, ids: Sequence[str]) -> list[MinedSignal]:
    """These proposals, locked until the transaction ends (PostgreSQL: `FOR UPDATE`), so two
    passes deciding agreement at once cannot both act on one."""
    if not ids:
        return []
    rows = await session.execute(
        select(MinedSignal)
        .where(MinedSignal.id.in_(list(ids)))
        .order_by(MinedSignal.id)
        .with_for_update()
    )
    return list(rows.scalars())


async def get(
    session: AsyncSession, signal_id: str, *, for_update: bool = False
) -> MinedSignal | None:
    """The proposal; `for_update` locks it until the transaction ends (a review)."""
    return await session.get(MinedSignal, signal_id, with_for_update=for_update)


async def listing(
    session: AsyncSession, *, state: str | None, rule: str | None, limit: int
) -> list[tuple[MinedSignal, str | None]]:
    """Proposals newest first, with their training example's status (None: no example)."""
    query = (
        select(MinedSignal, TrainingExample.status)
        .outerjoin(TrainingExample, TrainingExample.id == MinedSignal.example_id)
        .order_by(MinedSignal.created_at.desc(), MinedSignal.id)
        .limit(limit)
    )
    if state is not None:
        query = query.where(MinedSignal.state == state)
    if rule is not None:
        query = query.where(MinedSignal.rule == rule)
    rows = await session.execute(query)
    return [(signal, status) for signal, status in rows.all()]


async def example_status(session: AsyncSession, example_id: str | None) -> str | None:
    if example_id is None:
        return None
    example = await session.get(TrainingExample, example_id)
    return example.status if example is not None else None


async def counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """state -> rule -> proposals."""
    rows = await session.execute(
        select(MinedSignal.state, MinedSignal.rule, func.count()).group_by(
            MinedSignal.state, MinedSignal.rule
        )
    )
    result: dict[str, dict[str, int]] = {}
    for state, rule, number in rows:
        result.setdefault(state, {})[rule] = int(number)
    return result


async def last_run(session: AsyncSession) -> MiningRun | None:
    rows = await session.execute(
        select(MiningRun).order_by(MiningRun.scanned_until.desc(), MiningRun.id).limit(1)
    )
    return rows.scalars().first()


async def add(session: AsyncSession, *records: MinedSignal | MiningRun | TrainingExample) -> None:
    session.add_all(records)
    await session.flush()
