"""POST /ingest: documents, feedback and examples, stored before 202."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, status

from api.deps import IngestDep
from api.responses import BODY, ENGINE, errors
from twinloop.ingest.schemas import IngestRequest, IngestResponse

router = APIRouter(tags=["ingest"])


@router.post("/ingest", status_code=status.HTTP_202_ACCEPTED, responses=errors(*BODY, *ENGINE, 409))
async def ingest(
    body: IngestRequest,
    request: Request,
    ingest: IngestDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> IngestResponse:
    return await ingest.ingest(
        body, body=await request.body(), idempotency_key=idempotency_key, actor="ingest"
    )
