"""Operators' routes: status, snapshots, adapters, swap, rollback. Admin token required."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, status

from api.deps import AdminDep, RegistryDep, ReleaseAdminDep, SessionDep
from api.responses import ADMIN, BODY, ENGINE, errors
from twinloop.operations.schemas import ReleaseStatus
from twinloop.registry.schemas import AdapterView, RegisterAdapterRequest
from twinloop.releases.schemas import (
    ChangeRequest,
    CreateSnapshotRequest,
    ProposalView,
    ProposeRulesRequest,
    ReleaseView,
    RollbackRequest,
    SnapshotView,
    SwapRequest,
)

router = APIRouter(tags=["admin"], responses=errors(*ADMIN))


@router.get("/status")
async def release_status(_: AdminDep, admin: ReleaseAdminDep) -> ReleaseStatus:
    return await admin.status()


@router.post("/swap", responses=errors(*BODY, 409, *ENGINE))
async def swap(actor: AdminDep, admin: ReleaseAdminDep, body: SwapRequest) -> ReleaseView:
    return await admin.swap(body, actor=actor)


@router.post("/rollback", responses=errors(*BODY, 404, 409, *ENGINE))
async def rollback(actor: AdminDep, admin: ReleaseAdminDep, body: RollbackRequest) -> ReleaseView:
    return await admin.rollback(body, actor=actor)


@router.get("/snapshots")
async def list_snapshots(
    _: AdminDep, admin: ReleaseAdminDep, session: SessionDep
) -> list[SnapshotView]:
    return await admin.list_snapshots(session)


@router.post(
    "/snapshots",
    status_code=status.HTTP_201_CREATED,
    responses=errors(*BODY, 404, 409, *ENGINE),
)
async def create_snapshot(
    actor: AdminDep, admin: ReleaseAdminDep, body: CreateSnapshotRequest
) -> SnapshotView:
    return await admin.create_and_stage(body, actor=actor)


@router.post("/adapters", status_code=status.HTTP_201_CREATED, responses=errors(*BODY, 404, 409))
async def register_adapter(
    actor: AdminDep, registry: RegistryDep, session: SessionDep, body: RegisterAdapterRequest
) -> AdapterView:
    adapter = await registry.register(
        session,
        source=Path(body.path),
        domain=body.domain,
        parent_id=body.parent_id,
        training_run_id=body.training_run_id,
        metrics=body.metrics,
        actor=actor,
    )
    return AdapterView.model_validate(adapter)


@router.get("/adapters", responses=errors(422))
async def list_adapters(
    _: AdminDep, registry: RegistryDep, session: SessionDep, domain: str | None = None
) -> list[AdapterView]:
    return [AdapterView.model_validate(a) for a in await registry.list(session, domain)]


@router.post("/snapshots/{snapshot_id}/stage", responses=errors(*BODY, 404, 409, *ENGINE))
async def stage_snapshot(
    snapshot_id: str, actor: AdminDep, admin: ReleaseAdminDep, body: ChangeRequest | None = None
) -> ReleaseView:
    reason = (body.reason if body else "") or "stage"
    generation = body.generation if body else None
    return await admin.stage(
        snapshot_id, actor=actor, reason=reason, expected_generation=generation
    )


@router.post("/pr", status_code=status.HTTP_201_CREATED, responses=errors(*BODY, 404, 409, *ENGINE))
async def propose_router_rules(
    actor: AdminDep, admin: ReleaseAdminDep, body: ProposeRulesRequest
) -> ProposalView:
    return await admin.propose_router_rules(body, actor=actor)
