"""QA on Shadow: `POST /qa` runs the dry run now and returns the report. Admin only."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminDep, QaDep
from api.responses import ADMIN, ENGINE, errors
from twinloop.qa.schemas import QaReport

router = APIRouter(tags=["qa"], responses=errors(*ADMIN))


@router.post("/qa", responses=errors(409, *ENGINE))
async def run_qa(_: AdminDep, qa: QaDep) -> QaReport:
    """Ask Shadow the benchmark suite, judge it against Active, and gate; takes a minute or more."""
    return await qa.run()


@router.get("/qa")
async def recent_qa(_: AdminDep, qa: QaDep) -> list[QaReport]:
    return await qa.recent()


@router.get("/qa/{run_id}", responses=errors(404, 422))
async def get_qa(_: AdminDep, qa: QaDep, run_id: str) -> QaReport:
    return await qa.get(run_id)
