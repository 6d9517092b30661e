"""POST /ingest: documents, feedback and examples, stored before 202; a credential needed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, status

from api.deps import CallerDep, IngestDep
from api.responses import BODY, ENGINE, errors
from twinloop.ingest.schemas import IngestRequest, IngestResponse

router = APIRouter(tags=["ingest"])


@router.post(
    "/ingest",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(*BODY, 401, 403, 409, 429, *ENGINE),
)
async def ingest(
    body: IngestRequest,
    request: Request,
    ingest: IngestDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> IngestResponse:
    return await ingest.ingest(
        body, caller=caller, body=await request.body(), idempotency_key=idempotency_key
    )
