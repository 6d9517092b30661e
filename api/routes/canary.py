"""The canary of the staged Shadow: start or adjust, abort, look. Admin token required."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminDep, CanaryDep
from api.responses import ADMIN, BODY, errors
from twinloop.canary.schemas import AbortCanaryRequest, CanaryReport, CanaryView, StartCanaryRequest

router = APIRouter(prefix="/canary", tags=["canary"], responses=errors(*ADMIN))


@router.post("", responses=errors(*BODY, 409))
async def start_canary(actor: AdminDep, canary: CanaryDep, body: StartCanaryRequest) -> CanaryView:
    return await canary.start(body, actor=actor)


@router.post("/abort", responses=errors(*BODY, 409))
async def abort_canary(actor: AdminDep, canary: CanaryDep, body: AbortCanaryRequest) -> CanaryView:
    return await canary.abort(body.reason, actor=actor)


@router.get("")
async def canary_status(_: AdminDep, canary: CanaryDep) -> CanaryReport:
    return CanaryReport(canary=await canary.status())
