"""Training triggers and reports: `POST /train`, `GET /train/{id}`, adapter lineage. Admin only."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AdminDep, TrainingDep
from api.responses import ADMIN, BODY, errors
from twinloop.training.schemas import CycleRequest, CycleRequested, CycleView, LineageView

router = APIRouter(tags=["training"], responses=errors(*ADMIN))


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, responses=errors(*BODY, 409))
async def request_cycle(
    actor: AdminDep, training: TrainingDep, body: CycleRequest | None = None
) -> CycleRequested:
    """Queue a training cycle for the trainer process; 409 while another is queued or running.

    The optional body's `overrides` (learning_rate, kl_weight, epochs, step_budget,
    max_rounds) train this cycle only; out-of-bounds or unknown fields are a 422."""
    body = body or CycleRequest()
    cycle = await training.request(
        trigger="api", actor=actor, overrides=body.overrides, reason=body.reason
    )
    return CycleRequested(cycle_id=cycle.id, state=cycle.state, overrides=cycle.overrides)


@router.get("/train")
async def recent_cycles(_: AdminDep, training: TrainingDep) -> list[CycleView]:
    return await training.recent()


@router.get("/train/{cycle_id}", responses=errors(404, 422))
async def get_cycle(_: AdminDep, training: TrainingDep, cycle_id: str) -> CycleView:
    return await training.get(cycle_id)


@router.get("/adapters/{adapter_id}/lineage", responses=errors(404, 422))
async def adapter_lineage(_: AdminDep, training: TrainingDep, adapter_id: str) -> LineageView:
    """Which feedback and examples trained this adapter, and what its cycle quarantined."""
    return await training.lineage(adapter_id)
