"""Mined signals: the miner's proposals with their evidence, and an admin's review. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminDep, MiningDep
from api.responses import ADMIN, BODY, errors
from twinloop.mining.schemas import AcceptRequest, MinedList, MinedView, RejectRequest
from twinloop.states import MinedRule, MinedState

router = APIRouter(prefix="/mined", tags=["mining"], responses=errors(*ADMIN))


@router.get("", responses=errors(422))
async def list_mined(
    _: AdminDep,
    mining: MiningDep,
    state: MinedState | None = None,
    rule: MinedRule | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MinedList:
    """Proposals newest first (filtered by state and rule), counts by state and rule, and the
    miner's last pass."""
    return await mining.listing(state=state, rule=rule, limit=limit)


@router.get("/{signal_id}", responses=errors(404, 422))
async def get_mined(signal_id: str, _: AdminDep, mining: MiningDep) -> MinedView:
    return await mining.get(signal_id)


@router.post("/{signal_id}/accept", responses=errors(*BODY, 404, 409))
async def accept_mined(
    signal_id: str, actor: AdminDep, mining: MiningDep, body: AcceptRequest
) -> MinedView:
    """Make a proposed item trainable: a pending training example, cleaned by the next cycle.
    409 unless it is `proposed`, or when it has no chosen answer and none is sent."""
    return await mining.accept(signal_id, actor=actor, answer=body.answer, reason=body.reason)


@router.post("/{signal_id}/reject", responses=errors(*BODY, 404, 409))
async def reject_mined(
    signal_id: str, actor: AdminDep, mining: MiningDep, body: RejectRequest
) -> MinedView:
    """Never train on it; an agreed or accepted item's example is deleted and the adapters
    that learned it are tainted."""
    return await mining.reject(signal_id, actor=actor, reason=body.reason)
