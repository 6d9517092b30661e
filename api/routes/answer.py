"""POST /answer: a question in, an answer (and where it came from) out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import AnswersDep, ClientCallerDep, MetricsDep
from api.disconnect import cancel_on_disconnect
from api.lean_route import LeanRoute
from api.responses import BODY, CLIENT, ENGINE, SCREENED, errors
from twinloop.inference.schemas import AnswerRequest, AnswerResponse

router = APIRouter(tags=["answer"], route_class=LeanRoute)


@router.post("/answer", responses=errors(*BODY, *CLIENT, 403, *ENGINE, descriptions=SCREENED))
async def answer(
    body: AnswerRequest,
    request: Request,
    answers: AnswersDep,
    metrics: MetricsDep,
    caller: ClientCallerDep,
) -> AnswerResponse:
    return await cancel_on_disconnect(
        request, answers.answer(body, caller=caller), route="answer", metrics=metrics
    )
